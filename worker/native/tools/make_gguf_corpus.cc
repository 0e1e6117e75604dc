// Writes the seed corpus of the GGUF fuzz target (fuzz/corpus/gguf/): small valid files with every metadata value type,
// arrays, quantized and float tensors, and a custom alignment. The corpus is committed; rerun this to regenerate it.
//   make_gguf_corpus OUT_DIR
#include <cstdio>
#include <fstream>
#include <string>

#include "../tests/gguf_writer.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: make_gguf_corpus OUT_DIR\n");
        return 2;
    }
    const std::string dir = argv[1];
    auto write = [&](const std::string &name, const std::string &img) {
        std::ofstream(dir + "/" + name, std::ios::binary) << img;
    };
    ms_test::GgufWriter a;
    a.kv_str("general.architecture", "llama");
    a.kv_u32("llama.block_count", 1);
    a.kv_f32("llama.rope.freq_base", 10000.0f);
    a.kv_bool("b", true);
    a.kv_str_array("tokenizer.ggml.tokens", {"a", "b", "ab"});
    a.kv_i32_array("tokenizer.ggml.token_type", {1, 1, 1});
    a.kv_u64("u64", 1);
    a.kv_f64("f64", 0.5);
    a.tensor("q41", {32, 2}, 3, 40);
    a.tensor("q80", {32}, 8, 34);
    a.tensor("f32", {4}, 0, 16);
    write("llama_like", a.image());
    ms_test::GgufWriter b;
    b.kv_u32("general.alignment", 64);
    b.alignment = 64;
    b.tensor("f16", {8}, 1, 16);
    b.tensor("q40", {64}, 2, 36);
    b.tensor("bf16", {2}, 30, 4);
    write("aligned64", b.image());
    write("empty_v3", ms_test::GgufWriter().image());
    write("empty_v2", ms_test::GgufWriter(2).image());
    return 0;
}
