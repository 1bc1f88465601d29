// Reader of edgecmg engine files (`edgecmg build ... -o M.engine`) for C++ deployments.
//
// File layout (little endian), as edgecmg/engine_file.py writes it:
//   magic "EDGECMGE" (8 bytes) | format version uint32 | header length uint64 | header JSON |
//   scorer payload (safetensors, may be empty) | TensorRT serialized engine
// The header's "scorer" and "engine" entries hold each payload's length and SHA-256; this reader
// checks both and the header's own checksum ("header_sha256"), so a damaged copy or an edited
// threshold is refused before TensorRT deserializes the plan.
//
//   edgecmg::EngineFile f = edgecmg::read_engine_file("part.engine");
//   nvinfer1::ICudaEngine* e = runtime->deserializeCudaEngine(f.plan.data(), f.plan.size());
#pragma once

#include <array>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace edgecmg {

constexpr char kEngineMagic[8] = {'E', 'D', 'G', 'E', 'C', 'M', 'G', 'E'};
constexpr std::uint32_t kEngineFormatVersion = 3;  // edgecmg.engine_file.ENGINE_FORMAT_VERSION
constexpr std::uint32_t kHeaderChecksumSinceFormat = 3;  // edgecmg.engine_file.HEADER_SHA_SINCE_FORMAT

struct EngineFile {
    std::uint32_t format_version = 0;
    std::string header_json;         // the JSON header: TensorRT version, GPU, precision, inputs, model
    std::vector<char> scorer;        // host-side scorer (safetensors) of featurizer engines; empty otherwise
    std::vector<char> plan;          // what IRuntime::deserializeCudaEngine takes
};

namespace detail {

// SHA-256 (FIPS 180-4), for the payload checksums.
inline std::string sha256_hex(const char* data, std::size_t size) {
    static const std::uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    std::uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                          0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    auto rotr = [](std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
    // Full 64-byte blocks straight from the data; the tail, the 0x80 byte, zero padding and the bit
    // length (big endian) in one or two last blocks.
    const std::size_t full = size / 64 * 64;
    std::vector<unsigned char> tail(reinterpret_cast<const unsigned char*>(data) + full,
                                    reinterpret_cast<const unsigned char*>(data) + size);
    tail.push_back(0x80);
    while (tail.size() % 64 != 56) tail.push_back(0);
    const std::uint64_t bits = static_cast<std::uint64_t>(size) * 8;
    for (int i = 7; i >= 0; --i) tail.push_back(static_cast<unsigned char>(bits >> (8 * i)));
    for (std::size_t block = 0; block < full + tail.size(); block += 64) {
        const unsigned char* bytes = block < full ? reinterpret_cast<const unsigned char*>(data) + block
                                                  : tail.data() + (block - full);
        std::uint32_t w[64];
        for (int i = 0; i < 16; ++i) {
            const unsigned char* p = bytes + 4 * i;
            w[i] = (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | p[3];
        }
        for (int i = 16; i < 64; ++i) {
            const std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
            const std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
        for (int i = 0; i < 64; ++i) {
            const std::uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
            const std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
    }
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (std::uint32_t word : h)
        for (int shift = 28; shift >= 0; shift -= 4) out.push_back(hex[(word >> shift) & 0xf]);
    return out;
}

// Where one JSON value starting at json[i] ends (string, object, array or scalar); npos when the
// text ends first. Enough structure to find the top-level keys; not a validating parser.
inline std::size_t skip_value(const std::string& json, std::size_t i) {
    if (i >= json.size()) return std::string::npos;
    if (json[i] == '"') {
        for (++i; i < json.size(); ++i) {
            if (json[i] == '\\') { ++i; continue; }
            if (json[i] == '"') return i + 1;
        }
        return std::string::npos;
    }
    if (json[i] == '{' || json[i] == '[') {
        int depth = 0;
        while (i < json.size()) {
            if (json[i] == '"') {
                i = skip_value(json, i);
                if (i == std::string::npos) return i;
                continue;
            }
            if (json[i] == '{' || json[i] == '[') ++depth;
            if ((json[i] == '}' || json[i] == ']') && --depth == 0) return i + 1;
            ++i;
        }
        return std::string::npos;
    }
    const std::size_t start = i;
    while (i < json.size() && json[i] != ',' && json[i] != '}' && json[i] != ']' &&
           !std::isspace(static_cast<unsigned char>(json[i]))) ++i;
    return i == start ? std::string::npos : i;
}

inline std::size_t skip_space(const std::string& json, std::size_t i) {
    while (i < json.size() && std::isspace(static_cast<unsigned char>(json[i]))) ++i;
    return i;
}

struct Entry {
    std::string key;
    std::size_t entry_start, value_start, value_end;  // [entry_start: the key's quote, value_end)
};

// The top-level entries of a JSON object, in file order; throws on a text that is not one object or
// that repeats a key (Python's json keeps the last of duplicates: a reader must not see another value).
inline std::vector<Entry> top_level_entries(const std::string& json, const std::string& what) {
    std::vector<Entry> entries;
    auto fail = [&](const std::string& why) { throw std::runtime_error(what + " is not a JSON object (" + why + ")"); };
    std::size_t i = skip_space(json, 0);
    if (i >= json.size() || json[i] != '{') fail("no opening brace");
    i = skip_space(json, i + 1);
    if (i < json.size() && json[i] == '}') {
        if (skip_space(json, i + 1) != json.size()) fail("text after the object");
        return entries;
    }
    while (true) {
        if (i >= json.size() || json[i] != '"') fail("a key is not a string");
        const std::size_t key_end = skip_value(json, i);
        if (key_end == std::string::npos) fail("unterminated key");
        Entry entry{json.substr(i + 1, key_end - i - 2), i, 0, 0};
        i = skip_space(json, key_end);
        if (i >= json.size() || json[i] != ':') fail("no ':' after key '" + entry.key + "'");
        entry.value_start = skip_space(json, i + 1);
        entry.value_end = skip_value(json, entry.value_start);
        if (entry.value_end == std::string::npos) fail("the value of '" + entry.key + "' is cut off");
        for (const Entry& seen : entries)
            if (seen.key == entry.key) fail("key '" + entry.key + "' appears twice");
        entries.push_back(entry);
        i = skip_space(json, entry.value_end);
        if (i < json.size() && json[i] == ',') { i = skip_space(json, i + 1); continue; }
        if (i < json.size() && json[i] == '}' && skip_space(json, i + 1) == json.size()) return entries;
        fail("expected ',' or the closing brace after '" + entry.key + "'");
    }
}

// The raw text of top-level key `key`'s value; empty when absent.
inline std::string top_level_value(const std::string& json, const std::string& key, const std::string& what) {
    for (const Entry& entry : top_level_entries(json, what))
        if (entry.key == key) return json.substr(entry.value_start, entry.value_end - entry.value_start);
    return "";
}

inline std::string unquote(const std::string& value) {
    return value.size() >= 2 && value.front() == '"' ? value.substr(1, value.size() - 2) : value;
}

// A JSON non-negative integer (digits only, no sign, fraction or exponent) that fits in 63 bits.
inline std::uint64_t parse_size(const std::string& text, const std::string& what) {
    if (text.empty() || text.size() > 18 || text.find_first_not_of("0123456789") != std::string::npos ||
        (text.size() > 1 && text[0] == '0'))
        throw std::runtime_error(what + " is not a byte count: '" + text + "'");
    return std::stoull(text);
}

// The header's own checksum: Python hashes its canonical JSON without the entry, which is the text on
// disk with that one top-level entry (and the ", " that joins it) cut out. False when it has none.
inline bool check_header_checksum(const std::string& json, const std::string& path) {
    const std::vector<Entry> entries = top_level_entries(json, path + ": the engine header");
    for (std::size_t n = 0; n < entries.size(); ++n) {
        if (entries[n].key != "header_sha256") continue;
        std::string rest;
        if (n > 0)
            rest = json.substr(0, entries[n - 1].value_end) + json.substr(entries[n].value_end);
        else if (entries.size() > 1)
            rest = json.substr(0, entries[0].entry_start) + json.substr(entries[1].entry_start);
        else
            rest = "{}";
        const std::string want = unquote(json.substr(entries[n].value_start, entries[n].value_end - entries[n].value_start));
        if (sha256_hex(rest.data(), rest.size()) != want)
            throw std::runtime_error(path + ": header checksum mismatch: the header (threshold, input size, model) "
                                     "was damaged or edited after the build; copy the engine again or rebuild it");
        return true;
    }
    return false;  // files from before the header had a checksum have none to check
}

inline void read_exactly(std::ifstream& in, char* target, std::uint64_t size) {
    in.read(target, static_cast<std::streamsize>(size));
}

}  // namespace detail

// Read and check an edgecmg engine file; throws std::runtime_error naming the file and the problem.
// Each part is read straight into its own buffer: peak memory is the file's size.
inline EngineFile read_engine_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) throw std::runtime_error(path + ": no such engine file");
    const std::uint64_t file_size = static_cast<std::uint64_t>(in.tellg());
    in.seekg(0);
    const std::uint64_t prefix = 8 + 4 + 8;
    unsigned char head[prefix];
    if (file_size < prefix || !in.read(reinterpret_cast<char*>(head), prefix))
        throw std::runtime_error(path + ": truncated: not an edgecmg engine file");
    if (std::memcmp(head, kEngineMagic, 8) != 0)
        throw std::runtime_error(path + ": not an edgecmg engine file (bad magic); a bare TensorRT plan lacks "
                                 "the model header: build it with `edgecmg build M.onnx -o M.engine`");
    EngineFile file;
    std::uint64_t header_len = 0;
    for (int i = 0; i < 4; ++i) file.format_version |= std::uint32_t(head[8 + i]) << (8 * i);
    for (int i = 0; i < 8; ++i) header_len |= std::uint64_t(head[12 + i]) << (8 * i);
    if (file.format_version > kEngineFormatVersion)
        throw std::runtime_error(path + ": engine file format " + std::to_string(file.format_version) +
                                 " is newer than this reader understands; update it");
    if (header_len > file_size - prefix)
        throw std::runtime_error(path + ": truncated inside the header; copy the engine again");
    file.header_json.resize(header_len);
    detail::read_exactly(in, &file.header_json[0], header_len);
    const bool sealed = detail::check_header_checksum(file.header_json, path);
    std::uint64_t left = file_size - prefix - header_len;
    for (const char* key : {"scorer", "engine"}) {
        const std::string what = path + ": the header's '" + key + "' entry";
        const std::string entry = detail::top_level_value(file.header_json, key, path + ": the engine header");
        if (entry.empty()) throw std::runtime_error(path + ": header has no '" + key + "' entry: the file is corrupted");
        const std::uint64_t size = detail::parse_size(detail::top_level_value(entry, "bytes", what), what + " bytes");
        const std::string sha = detail::unquote(detail::top_level_value(entry, "sha256", what));
        if (size > left)
            throw std::runtime_error(path + ": truncated " + key + " payload (" + std::to_string(left) + " of " +
                                     std::to_string(size) + " bytes); copy the engine again");
        std::vector<char>& target = std::string(key) == "scorer" ? file.scorer : file.plan;
        target.resize(size);
        detail::read_exactly(in, target.data(), size);
        if (detail::sha256_hex(target.data(), size) != sha)
            throw std::runtime_error(path + ": " + key + " payload checksum mismatch: the file is corrupted");
        left -= size;
    }
    if (left != 0) throw std::runtime_error(path + ": trailing bytes after the engine: the file is corrupted");
    // Every engine of the format that brought the checksum has one (as the Python reader requires).
    if (!sealed && file.format_version >= kHeaderChecksumSinceFormat)
        throw std::runtime_error(path + ": the header has no 'header_sha256', which every format-" +
                                 std::to_string(file.format_version) + " engine carries: it was removed after "
                                 "the build; rebuild the engine");
    return file;
}

}  // namespace edgecmg
