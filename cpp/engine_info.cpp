// edgecmg_engine_info M.engine: check an edgecmg engine file and print what it holds, with no Python
// and no TensorRT (the same checks the C++ deployment runs before deserializing the plan).
#include <exception>
#include <iomanip>
#include <iostream>
#include <new>
#include <string>

#include "edgecmg_engine.hpp"

namespace {

// Header text as printed: control bytes as JSON \u00XX escapes (Python's writer never leaves one raw),
// so a forged header cannot send escape sequences to the terminal and valid JSON stays valid.
std::string printable(const std::string& text) {
    static const char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(text.size());
    for (const char c : text) {
        const unsigned char byte = static_cast<unsigned char>(c);
        if (byte >= 0x20 && byte != 0x7f) {
            out.push_back(c);
        } else {
            out += "\\u00";
            out.push_back(hex[byte >> 4]);
            out.push_back(hex[byte & 0xf]);
        }
    }
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: edgecmg_engine_info M.engine\n";
        return 2;
    }
    const std::string path = argv[1];
    try {
        const edgecmg::EngineFile file = edgecmg::read_engine_file(path);
        const std::string what = path + ": the engine header";
        const std::vector<edgecmg::detail::Entry> entries = edgecmg::detail::top_level_entries(file.header_json, what);
        auto value = [&](const char* key) {
            const edgecmg::detail::Entry* entry = edgecmg::detail::find_entry(entries, key);
            return entry == nullptr ? std::string()
                                    : printable(edgecmg::detail::unquote(edgecmg::detail::value_text(file.header_json, *entry)));
        };
        std::cout << "format_version " << file.format_version << "\n"
                  << "plan_bytes " << file.plan.size() << "\n"
                  << "scorer_bytes " << file.scorer.size() << "\n"
                  << "precision " << value("precision") << "\n"
                  << "tensorrt " << value("tensorrt") << "\n"
                  << "threshold " << std::setprecision(17) << file.threshold << "\n"
                  << "header " << printable(file.header_json) << "\n";
    } catch (const std::bad_alloc&) {
        std::cerr << "error: " << path << ": out of memory while reading the engine file (std::bad_alloc)\n";
        return 1;
    } catch (const std::exception& exc) {
        // The reader's messages start with the path; anything else thrown on the way is named here.
        const std::string message = exc.what();
        std::cerr << "error: " << (message.compare(0, path.size(), path) == 0 ? message : path + ": " + message) << "\n";
        return 1;
    }
    return 0;
}
