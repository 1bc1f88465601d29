// edgecmg_engine_info M.engine: check an edgecmg engine file and print what it holds, with no Python
// and no TensorRT (the same checks the C++ deployment runs before deserializing the plan).
#include <iostream>

#include "edgecmg_engine.hpp"

int main(int argc, char** argv) {
    if (argc != 2) {
        std::cerr << "usage: edgecmg_engine_info M.engine\n";
        return 2;
    }
    try {
        const edgecmg::EngineFile file = edgecmg::read_engine_file(argv[1]);
        std::cout << "format_version " << file.format_version << "\n"
                  << "plan_bytes " << file.plan.size() << "\n"
                  << "scorer_bytes " << file.scorer.size() << "\n"
                  << "precision " << edgecmg::detail::unquote(edgecmg::detail::top_level_value(file.header_json, "precision", argv[1])) << "\n"
                  << "tensorrt " << edgecmg::detail::unquote(edgecmg::detail::top_level_value(file.header_json, "tensorrt", argv[1])) << "\n"
                  << "header " << file.header_json << "\n";
    } catch (const std::exception& exc) {
        std::cerr << "error: " << exc.what() << "\n";
        return 1;
    }
    return 0;
}
