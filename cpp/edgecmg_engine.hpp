// Reader of edgecmg engine files (`edgecmg build ... -o M.engine`) for C++ deployments.
//
// File layout (little endian), as edgecmg/engine_file.py writes it:
//   magic "EDGECMGE" (8 bytes) | format version uint32 | header length uint64 | header JSON |
//   scorer payload (safetensors, may be empty) | TensorRT serialized engine
// The header's "scorer" and "engine" entries hold each payload's length and SHA-256; this reader
// checks both and the header's own checksum ("header_sha256"), and that the header's "format_version"
// is the prefix's (the prefix lies outside every checksum), so a damaged copy is refused before TensorRT
// deserializes the plan. The checksums tell damage, not a deliberate edit: whoever edits the header and
// computes its checksum again gets past them. Formats older than the header checksum (1 and 2, before
// any release) are refused: rebuild such an engine with this edgecmg.
//
// What it checks, and what it leaves to edgecmg/engine_file.py (which checks all of it): the file's
// layout as Python checks it (prefix, sizes, checksums, versions), the top level of the header's JSON
// (an object, no repeated key) and, of the "model" entry, that it is an object without a repeated key
// whose "threshold", where present, is a finite number within float32's range. The rest of the JSON
// (deeper objects: a repeated key there, a malformed value) and the other fields are not validated:
// a header that passes here may still be refused by Python.
//
//   edgecmg::EngineFile f = edgecmg::read_engine_file("part.engine");
//   nvinfer1::ICudaEngine* e = runtime->deserializeCudaEngine(f.plan.data(), f.plan.size());
//
// C++14 or later; POSIX stat() (Linux, macOS) to tell a regular file from a pipe or directory before
// opening it. No state is shared between calls: threads may read engine files at the same time.
#pragma once

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <istream>
#include <limits>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace edgecmg {

// The file's first 8 bytes. A namespace-scope constexpr object has internal linkage (a copy per
// translation unit): the inline functions below compare with a literal and never refer to it, which
// would make their definitions differ between translation units (an ODR violation).
constexpr char kEngineMagic[8] = {'E', 'D', 'G', 'E', 'C', 'M', 'G', 'E'};
constexpr std::uint32_t kEngineFormatVersion = 3;  // edgecmg.engine_file.ENGINE_FORMAT_VERSION
// The format that brought the header's own checksum, and the oldest one read (formats 1 and 2 predate
// any release): edgecmg.engine_file.HEADER_SHA_SINCE_FORMAT.
constexpr std::uint32_t kHeaderChecksumSinceFormat = 3;
// The largest header read (edgecmg.engine_file.MAX_HEADER_BYTES; a real one is a few KB): a damaged
// length field must not make the reader allocate, read and parse most of the file.
constexpr std::uint64_t kMaxHeaderBytes = std::uint64_t(16) << 20;

struct EngineFile {
    std::uint32_t format_version = 0;
    std::string header_json;         // the JSON header: TensorRT version, GPU, precision, inputs, model
    std::vector<char> scorer;        // host-side scorer (safetensors) of featurizer engines; empty otherwise
    std::vector<char> plan;          // what IRuntime::deserializeCudaEngine takes
    // The header's "model.threshold", checked finite: a frame whose score is >= it, or not finite
    // (NaN, an overflow), is flagged (the stored threshold; `edgecmg threshold` prints one for another
    // camera). NaN where the header has none (every engine edgecmg builds has one).
    double threshold = std::numeric_limits<double>::quiet_NaN();
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

// File content quoted in an error message: at most about `limit` characters of it, with control and
// non-ASCII bytes written \xNN, so a damaged or forged header can neither flood a log nor send
// escape sequences to a terminal.
inline std::string quoted(const std::string& text, std::size_t limit = 80) {
    static const char hex[] = "0123456789abcdef";
    std::string out = "'";
    std::size_t used = 0;
    for (; used < text.size(); ++used) {
        const unsigned char c = static_cast<unsigned char>(text[used]);
        const std::size_t width = c < 0x20 || c >= 0x7f ? 4 : 1;
        if (out.size() - 1 + width > limit) break;
        if (width == 1) {
            out.push_back(static_cast<char>(c));
        } else {
            out += "\\x";
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 0xf]);
        }
    }
    out.push_back('\'');
    if (used < text.size()) out += "... (" + std::to_string(text.size()) + " bytes in all)";
    return out;
}

inline std::string os_error(int err) { return std::generic_category().message(err); }

// What to do about a damaged file, after the message that says what is wrong with it.
inline std::string corrupted() {
    return ": the file is corrupted; copy the engine again or rebuild it with `edgecmg build`";
}

inline bool is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

inline std::size_t skip_space(const std::string& json, std::size_t i) {
    while (i < json.size() && is_json_space(json[i])) ++i;
    return i;
}

// Where one JSON value starting at json[i] ends (string, object, array or scalar); npos when the
// text ends first. Enough structure to find the top-level keys; not a validating parser. Linear in
// the value's length, with no recursion into nested containers.
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
        std::size_t depth = 0;
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
    while (i < json.size() && json[i] != ',' && json[i] != '}' && json[i] != ']' && !is_json_space(json[i])) ++i;
    return i == start ? std::string::npos : i;
}

inline bool hex4(const std::string& json, std::size_t i, std::size_t end, std::uint32_t& value) {
    if (i + 4 > end) return false;
    value = 0;
    for (std::size_t n = i; n < i + 4; ++n) {
        const char c = json[n];
        const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (digit < 0) return false;
        value = value * 16 + static_cast<std::uint32_t>(digit);
    }
    return true;
}

inline void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else {
        out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    }
}

// The text of the JSON string json[begin, end) (between its quotes) with its escapes decoded, as
// Python's json reads a key: "\u0065ngine" is the key "engine". False on a bad escape.
inline bool decode_string(const std::string& json, std::size_t begin, std::size_t end, std::string& out) {
    out.clear();
    for (std::size_t i = begin; i < end; ++i) {
        if (json[i] != '\\') { out.push_back(json[i]); continue; }
        if (++i >= end) return false;
        switch (json[i]) {
            case '"': out.push_back('"'); break;
            case '\\': out.push_back('\\'); break;
            case '/': out.push_back('/'); break;
            case 'b': out.push_back('\b'); break;
            case 'f': out.push_back('\f'); break;
            case 'n': out.push_back('\n'); break;
            case 'r': out.push_back('\r'); break;
            case 't': out.push_back('\t'); break;
            case 'u': {
                std::uint32_t unit = 0, low = 0;
                if (!hex4(json, i + 1, end, unit)) return false;
                i += 4;
                if (unit >= 0xd800 && unit < 0xdc00 && i + 6 < end && json[i + 1] == '\\' && json[i + 2] == 'u' &&
                    hex4(json, i + 3, end, low) && low >= 0xdc00 && low < 0xe000) {
                    unit = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
                    i += 6;
                }
                append_utf8(out, unit);  // a lone surrogate as its own 3 bytes: a key of its own, as in Python
                break;
            }
            default: return false;
        }
    }
    return true;
}

struct Entry {
    std::string key;  // escapes decoded
    std::size_t entry_start, value_start, value_end;  // [entry_start: the key's quote, value_end)
};

// The top-level entries of a JSON object, in file order; throws on a text that is not one object or
// that repeats a key (Python's json keeps the last of duplicates: a reader must not see another value).
// O(n log n) in the number of keys.
inline std::vector<Entry> top_level_entries(const std::string& json, const std::string& what) {
    std::vector<Entry> entries;
    std::set<std::string> seen;
    auto fail = [&](const std::string& why) {
        throw std::runtime_error(what + " is not a JSON object (" + why + ")" + corrupted());
    };
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
        Entry entry{std::string(), i, 0, 0};
        if (!decode_string(json, i + 1, key_end - 1, entry.key))
            fail("the key " + detail::quoted(json.substr(i, key_end - i)) + " has a bad escape");
        i = skip_space(json, key_end);
        if (i >= json.size() || json[i] != ':') fail("no ':' after key " + detail::quoted(entry.key));
        entry.value_start = skip_space(json, i + 1);
        entry.value_end = skip_value(json, entry.value_start);
        if (entry.value_end == std::string::npos) fail("the value of " + detail::quoted(entry.key) + " is cut off");
        if (!seen.insert(entry.key).second)
            throw std::runtime_error(what + " has a duplicate key: the key " + detail::quoted(entry.key) + " appears twice "
                                     "(JSON readers differ in which value they take); the file was damaged or "
                                     "edited: copy the engine again or rebuild it with `edgecmg build`");
        i = skip_space(json, entry.value_end);
        entries.push_back(std::move(entry));
        if (i < json.size() && json[i] == ',') { i = skip_space(json, i + 1); continue; }
        if (i < json.size() && json[i] == '}' && skip_space(json, i + 1) == json.size()) return entries;
        fail("expected ',' or the closing brace after " + detail::quoted(entries.back().key));
    }
}

inline const Entry* find_entry(const std::vector<Entry>& entries, const std::string& key) {
    for (const Entry& entry : entries)
        if (entry.key == key) return &entry;
    return nullptr;
}

inline std::string value_text(const std::string& json, const Entry& entry) {
    return json.substr(entry.value_start, entry.value_end - entry.value_start);
}

// The raw text of top-level key `key`'s value; empty when absent. Parses `json` on each call.
inline std::string top_level_value(const std::string& json, const std::string& key, const std::string& what) {
    const std::vector<Entry> entries = top_level_entries(json, what);
    const Entry* entry = find_entry(entries, key);
    return entry == nullptr ? std::string() : value_text(json, *entry);
}

inline std::string unquote(const std::string& value) {
    return value.size() >= 2 && value.front() == '"' ? value.substr(1, value.size() - 2) : value;
}

// A JSON non-negative integer (digits only: no sign, fraction, exponent or leading zero) that fits in
// 64 bits.
inline bool parse_uint64(const std::string& text, std::uint64_t& value) {
    if (text.empty() || text.size() > 20 || (text.size() > 1 && text[0] == '0')) return false;
    value = 0;
    for (const char c : text) {
        if (c < '0' || c > '9') return false;
        const std::uint64_t digit = static_cast<std::uint64_t>(c - '0');
        if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return false;
        value = value * 10 + digit;
    }
    return true;
}

inline std::uint64_t parse_size(const std::string& text, const std::string& what) {
    std::uint64_t value = 0;
    if (!parse_uint64(text, value))
        throw std::runtime_error(what + " is not a byte count: " + detail::quoted(text) + corrupted());
    return value;
}

// A size from the file as this platform's std::size_t, at most `max_size` (the buffer's max_size()):
// on a 32-bit build a 64-bit size cast to std::size_t would wrap, and the read that follows would
// overrun the buffer resized by it.
inline std::size_t buffer_size(std::uint64_t size, std::size_t max_size, const std::string& path,
                               const std::string& what) {
    if (size > max_size)
        throw std::runtime_error(path + ": " + what + " is " + std::to_string(size) + " bytes, more than a " +
                                 std::to_string(sizeof(void*) * 8) + "-bit program can hold in memory (" +
                                 std::to_string(max_size) + "): the file is damaged, or too large for this "
                                 "platform; copy the engine again, or read it on a 64-bit machine");
    return static_cast<std::size_t>(size);
}

// The value of the JSON number `text` as Python's json reads it (one past double's range is infinite
// there); false when `text` is no JSON number (NaN, Infinity and -Infinity, which Python's json reads
// too, included). Converted without the locale's decimal point: the digits without the point, and the
// exponent moved to match.
inline bool json_number(const std::string& text, double& value) {
    const std::size_t n = text.size();
    auto digit = [&](std::size_t at) { return at < n && text[at] >= '0' && text[at] <= '9'; };
    std::size_t i = 0;
    const bool negative = n > 0 && text[0] == '-';
    if (negative) ++i;
    if (!digit(i)) return false;
    std::string digits;
    long long shift = 0;  // the value is digits * 10^shift
    if (text[i] == '0')
        ++i;  // no leading zeros in JSON: "0" alone
    else
        while (digit(i)) digits.push_back(text[i++]);
    if (i < n && text[i] == '.') {
        if (!digit(++i)) return false;
        while (digit(i)) {
            digits.push_back(text[i++]);
            --shift;
        }
    }
    if (i < n && (text[i] == 'e' || text[i] == 'E')) {
        const bool down = i + 1 < n && text[i + 1] == '-';
        if (i + 1 < n && (text[i + 1] == '-' || text[i + 1] == '+')) ++i;
        if (!digit(++i)) return false;
        long long exponent = 0;
        for (; digit(i); ++i)
            if (exponent < 100000000) exponent = exponent * 10 + (text[i] - '0');  // past it: 0 or infinite
        shift += down ? -exponent : exponent;
    }
    if (i != n) return false;
    const std::size_t first = digits.find_first_not_of('0');
    if (first == std::string::npos) {
        value = 0.0;
    } else {
        digits.erase(0, first);
        const long long magnitude = static_cast<long long>(digits.size()) + shift;  // value < 10^magnitude
        if (magnitude > 400)
            value = std::numeric_limits<double>::infinity();
        else if (magnitude < -400)
            value = 0.0;
        else
            value = std::strtod((digits + "e" + std::to_string(shift)).c_str(), nullptr);
    }
    if (negative) value = -value;
    return true;
}

// The header's own checksum: Python hashes its canonical JSON without the entry, which is the text on
// disk with that one top-level entry (and the ", " that joins it) cut out. False when it has none.
inline bool check_header_checksum(const std::string& json, const std::vector<Entry>& entries, const std::string& path) {
    for (std::size_t n = 0; n < entries.size(); ++n) {
        if (entries[n].key != "header_sha256") continue;
        std::string rest;
        if (n > 0)
            rest = json.substr(0, entries[n - 1].value_end) + json.substr(entries[n].value_end);
        else if (entries.size() > 1)
            rest = json.substr(0, entries[0].entry_start) + json.substr(entries[1].entry_start);
        else
            rest = "{}";
        if (sha256_hex(rest.data(), rest.size()) != unquote(value_text(json, entries[n])))
            throw std::runtime_error(path + ": header checksum mismatch: the header (threshold, input size, model) "
                                     "was damaged or edited after the build; copy the engine again or rebuild it");
        return true;
    }
    return false;  // refused by the caller: formats from before the checksum are no longer read
}

// The header's "format_version" must be the prefix's: the prefix is outside every checksum, the
// header's copy inside the header's (edgecmg.engine_file._check_fields).
inline void check_format_version(const std::string& json, const std::vector<Entry>& entries, std::uint32_t version,
                                 const std::string& path) {
    const Entry* entry = find_entry(entries, "format_version");
    if (entry == nullptr)
        throw std::runtime_error(path + ": the header has no 'format_version' (the prefix says " +
                                 std::to_string(version) + ")" + corrupted());
    const std::string text = value_text(json, *entry);
    std::uint64_t header_version = 0;
    if (!parse_uint64(text, header_version))
        throw std::runtime_error(path + ": the header's 'format_version' is " + detail::quoted(text) +
                                 ", not an integer" + corrupted());
    if (header_version != version)
        throw std::runtime_error(path + ": the header's 'format_version' is " + text + " but the file's prefix says " +
                                 std::to_string(version) + ": the prefix, which no checksum covers, was damaged or "
                                 "edited; copy the engine again or rebuild it");
}

// Size and SHA-256 of payload `key` ("scorer" or "engine"), from the header's entry of that name.
inline void payload_entry(const std::string& json, const std::vector<Entry>& entries, const std::string& key,
                          const std::string& path, std::uint64_t& size, std::string& sha256) {
    const Entry* entry = find_entry(entries, key);
    if (entry == nullptr) throw std::runtime_error(path + ": header has no '" + key + "' entry" + corrupted());
    const std::string what = path + ": the header's '" + key + "' entry";
    const std::string text = value_text(json, *entry);
    const std::vector<Entry> fields = top_level_entries(text, what);
    const Entry* bytes = find_entry(fields, "bytes");
    if (bytes == nullptr) throw std::runtime_error(what + " has no 'bytes' (the payload's size)" + corrupted());
    size = parse_size(value_text(text, *bytes), what + ": 'bytes'");
    const Entry* sha = find_entry(fields, "sha256");
    if (sha == nullptr)
        throw std::runtime_error(what + " has no 'sha256' (the payload's checksum)" + corrupted());
    const std::string sha_text = value_text(text, *sha);
    if (sha_text.size() < 2 || sha_text[0] != '"')
        throw std::runtime_error(what + ": 'sha256' is " + detail::quoted(sha_text) + ", not a string" + corrupted());
    sha256 = unquote(sha_text);
}

// The "model" entry, where it is an object: no repeated key, and its "threshold", where present, a
// finite number within float32's range (as edgecmg.artifact checks it), which every verdict is
// compared with: NaN passes no part and flags none. The rest of the model header is Python's to check.
// Returns the threshold, NaN where there is none.
inline double check_threshold(const std::string& json, const std::vector<Entry>& entries, const std::string& path) {
    const double none = std::numeric_limits<double>::quiet_NaN();
    const Entry* model = find_entry(entries, "model");
    if (model == nullptr || json[model->value_start] != '{') return none;
    const std::string text = value_text(json, *model);
    const std::vector<Entry> fields = top_level_entries(text, path + ": the header's 'model' entry");
    const Entry* threshold = find_entry(fields, "threshold");
    if (threshold == nullptr) return none;
    const std::string number = value_text(text, *threshold);
    double value = 0.0;
    if (!json_number(number, value) || !(std::fabs(value) <= std::numeric_limits<float>::max()))
        throw std::runtime_error(path + ": the header's 'model.threshold' is " + detail::quoted(number) + ", not a finite "
                                 "number within float32's range: the engine was built from a damaged model, or its "
                                 "header was edited; rebuild it with `edgecmg build` from a model that loads");
    return value;
}

// Read `size` bytes or throw: a read error (EIO: a failing disk or card) and a file that got shorter
// since its size was taken are told apart from a damaged file.
inline void read_exactly(std::istream& in, char* target, std::uint64_t size, const std::string& path,
                         const std::string& what) {
    std::uint64_t got = 0;
    while (got < size) {
        const std::uint64_t chunk = size - got < (std::uint64_t(1) << 30) ? size - got : (std::uint64_t(1) << 30);
        errno = 0;
        in.read(target + got, static_cast<std::streamsize>(chunk));
        got += static_cast<std::uint64_t>(in.gcount());
        if (in) continue;
        const int err = errno;
        if (in.bad())
            throw std::runtime_error(path + ": read error in " + what + (err != 0 ? ": " + os_error(err) : std::string()) +
                                     "; check the storage, or copy the engine again");
        throw std::runtime_error(path + ": the file was cut while being read (" + std::to_string(got) + " of the " +
                                 std::to_string(size) + " bytes of " + what + "); copy the engine again");
    }
}

}  // namespace detail

// Read and check an edgecmg engine file; throws std::runtime_error naming the file and the problem.
// Each part is read straight into its own buffer: peak memory is the file's size (the header at most
// kMaxHeaderBytes), and every size is checked against the file's before anything is allocated.
inline EngineFile read_engine_file(const std::string& path) {
    // What the path names, before it is opened: opening a named pipe blocks until a writer comes, and a
    // directory or device is no engine file (Python's reader asks Path.is_file()).
    struct stat info;
    if (::stat(path.c_str(), &info) != 0) {
        const int err = errno;
        if (err == ENOENT) throw std::runtime_error(path + ": no such engine file");
        // A 32-bit build without large-file support cannot stat a file over 2 GiB.
        const std::string hint = err == EOVERFLOW ? " (build the reader with -D_FILE_OFFSET_BITS=64)" : "";
        throw std::runtime_error(path + ": cannot read the engine file: " + detail::os_error(err) + hint);
    }
    if ((info.st_mode & S_IFMT) == S_IFDIR) throw std::runtime_error(path + ": is a directory, not an engine file");
    if ((info.st_mode & S_IFMT) != S_IFREG)
        throw std::runtime_error(path + ": is not a regular file (a pipe, socket or device), not an engine file");
    const std::uint64_t file_size = static_cast<std::uint64_t>(info.st_size);
    if (file_size == 0) throw std::runtime_error(path + ": is empty (0 bytes): not an edgecmg engine file");
    errno = 0;
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        const int err = errno;
        throw std::runtime_error(path + ": cannot open the engine file" +
                                 (err != 0 ? ": " + detail::os_error(err) : std::string()));
    }
    const std::uint64_t prefix = 8 + 4 + 8;
    if (file_size < prefix)
        throw std::runtime_error(path + ": truncated (" + std::to_string(file_size) + " bytes): not an edgecmg engine file");
    char head_chars[prefix];
    detail::read_exactly(in, head_chars, prefix, path, "the prefix");
    const unsigned char* head = reinterpret_cast<const unsigned char*>(head_chars);
    if (std::memcmp(head, "EDGECMG\0", 8) == 0)  // the model file's magic (edgecmg/magic.py: ARTIFACT)
        throw std::runtime_error(path + ": an edgecmg model file (.edgecmg), not an engine file: export it "
                                 "(`edgecmg export M.edgecmg --with-scoring -o M.onnx`) and build the engine on "
                                 "the device (`edgecmg build M.onnx -o M.engine`)");
    if (std::memcmp(head, "EDGECMGE", 8) != 0)  // kEngineMagic (see there)
        throw std::runtime_error(path + ": not an edgecmg engine file (bad magic): neither an .onnx export nor "
                                 "a bare TensorRT plan holds the model header; build the engine with "
                                 "`edgecmg build M.onnx -o M.engine`");
    EngineFile file;
    std::uint64_t header_len = 0;
    for (int i = 0; i < 4; ++i) file.format_version |= std::uint32_t(head[8 + i]) << (8 * i);
    for (int i = 0; i < 8; ++i) header_len |= std::uint64_t(head[12 + i]) << (8 * i);
    if (file.format_version > kEngineFormatVersion)
        throw std::runtime_error(path + ": engine file format " + std::to_string(file.format_version) +
                                 " is newer than this reader understands (" + std::to_string(kEngineFormatVersion) +
                                 "); update it");
    std::uint64_t left = file_size - prefix;
    if (header_len > left)
        throw std::runtime_error(path + ": truncated inside the header (it claims " + std::to_string(header_len) +
                                 " bytes, the file holds " + std::to_string(left) +
                                 " after its 20-byte prefix); copy the engine again");
    if (header_len > kMaxHeaderBytes)
        throw std::runtime_error(path + ": the prefix gives a " + std::to_string(header_len) + "-byte header, more than "
                                 "the " + std::to_string(kMaxHeaderBytes) + " an engine header can be: the file is "
                                 "damaged; copy the engine again");
    file.header_json.resize(static_cast<std::size_t>(header_len));
    detail::read_exactly(in, &file.header_json[0], header_len, path, "the header");
    left -= header_len;

    // The header is parsed once; its checksum, then every size against the file's (as Python checks
    // them, in its order), before any payload is allocated or read.
    const std::vector<detail::Entry> entries = detail::top_level_entries(file.header_json, path + ": the engine header");
    const bool sealed = detail::check_header_checksum(file.header_json, entries, path);
    struct Payload {
        const char* key;
        std::vector<char>* target;
        std::uint64_t size;
        std::string sha256;
        std::size_t length;  // size, as this platform's
    };
    Payload payloads[2] = {{"scorer", &file.scorer, 0, std::string(), 0},
                           {"engine", &file.plan, 0, std::string(), 0}};
    for (Payload& payload : payloads) {
        detail::payload_entry(file.header_json, entries, payload.key, path, payload.size, payload.sha256);
        if (payload.size > left)
            throw std::runtime_error(path + ": truncated " + payload.key + " payload (" + std::to_string(left) + " of " +
                                     std::to_string(payload.size) + " bytes); copy the engine again");
        left -= payload.size;
        // A 32-bit program cannot hold every size a file can give: none may wrap when cast.
        payload.length = detail::buffer_size(payload.size, payload.target->max_size(), path,
                                             std::string("the ") + payload.key + " payload");
    }
    if (left != 0) throw std::runtime_error(path + ": trailing bytes after the engine" + detail::corrupted());
    // Every engine of the format that brought the checksum has one (as the Python reader requires).
    if (!sealed && file.format_version >= kHeaderChecksumSinceFormat)
        throw std::runtime_error(path + ": the header has no 'header_sha256', which every format-" +
                                 std::to_string(file.format_version) + " engine carries: it was removed after "
                                 "the build; rebuild the engine with `edgecmg build`");
    detail::check_format_version(file.header_json, entries, file.format_version, path);
    // After the version check, which tells a format-3 file whose prefix was damaged to say 2.
    if (file.format_version < kHeaderChecksumSinceFormat)
        throw std::runtime_error(path + ": engine file format " + std::to_string(file.format_version) + " is older "
                                 "than the oldest this reader accepts (" + std::to_string(kHeaderChecksumSinceFormat) +
                                 ", the first whose header carries a checksum); rebuild the engine with this edgecmg "
                                 "(`edgecmg build M.onnx -o M.engine`)");
    file.threshold = detail::check_threshold(file.header_json, entries, path);

    for (Payload& payload : payloads) {
        payload.target->resize(payload.length);
        detail::read_exactly(in, payload.target->data(), payload.size, path, std::string("the ") + payload.key + " payload");
        if (detail::sha256_hex(payload.target->data(), payload.target->size()) != payload.sha256)
            throw std::runtime_error(path + ": " + payload.key + " payload checksum mismatch" + detail::corrupted());
    }
    return file;
}

}  // namespace edgecmg
