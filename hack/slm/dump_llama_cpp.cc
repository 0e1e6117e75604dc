// Debugging aid for the llama.cpp-compatible numerics (docs/slm.md): runs llama.cpp on a prompt (one ubatch), then
// optionally one decode step, with the settings of make-reference.py (n_ctx 512, fp32 K/V, no flash attention), and
// writes every contiguous F32 tensor of the graph as raw floats: OUT/<eval>/<tensor name>.f32, plus OUT/<eval>/index
// (name and shape per line). Compare them with the engine's own dump (MS_LLAMA_DUMP, see llama_model.cc).
//
// Build against llama.cpp's headers and libraries (the vendored tree of llama-cpp-python's sdist, or any build):
//   g++ -O1 -std=c++17 hack/slm/dump_llama_cpp.cc -I$LCP/include -I$LCP/ggml/include -L$LIBDIR -lllama -lggml \
//       -lggml-base -Wl,-rpath,$LIBDIR -o /tmp/dump_llama_cpp
// Run: /tmp/dump_llama_cpp MODEL.gguf OUT THREADS PROMPT_IDS(comma separated) [DECODE_ID]
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "ggml.h"
#include "llama.h"

namespace {

struct Dump {
    std::string dir;
    FILE *index = nullptr;
    std::map<std::string, int> seen;  // a name given to several tensors (Qcur-0: matmul, reshape, rope): .1, .2, ...
};

bool on_tensor(ggml_tensor *t, bool ask, void *user) {
    if (ask) return t->type == GGML_TYPE_F32;
    auto *d = static_cast<Dump *>(user);
    if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t) || !t->data) return true;
    std::string name = t->name;
    for (char &c : name)
        if (c == '/' || c == ' ') c = '_';
    const int n = d->seen[name]++;
    if (n > 0) name += "." + std::to_string(n);
    const std::string path = d->dir + "/" + name + ".f32";
    if (FILE *f = std::fopen(path.c_str(), "wb")) {
        std::fwrite(t->data, 1, ggml_nbytes(t), f);
        std::fclose(f);
    }
    std::fprintf(d->index, "%s %lld %lld %lld %lld\n", name.c_str(), (long long)t->ne[0], (long long)t->ne[1],
                 (long long)t->ne[2], (long long)t->ne[3]);
    return true;
}

std::vector<llama_token> parse_ids(const char *s) {
    std::vector<llama_token> ids;
    for (const char *p = s; *p;) {
        char *end = nullptr;
        ids.push_back(llama_token(std::strtol(p, &end, 10)));
        p = *end == ',' ? end + 1 : end;
    }
    return ids;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 5) {
        std::fprintf(stderr, "usage: %s MODEL.gguf OUT THREADS PROMPT_IDS [DECODE_ID]\n", argv[0]);
        return 2;
    }
    const std::string out = argv[2];
    mkdir(out.c_str(), 0755);
    std::vector<llama_token> prompt = parse_ids(argv[4]);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) return 1;
    Dump dump;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_threads = cp.n_threads_batch = std::atoi(argv[3]);
    cp.type_k = GGML_TYPE_F32;
    cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.cb_eval = on_tensor;
    cp.cb_eval_user_data = &dump;
    llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) return 1;
    std::vector<std::vector<llama_token>> evals = {prompt};
    if (argc > 5) evals.push_back({llama_token(std::atoi(argv[5]))});
    for (size_t e = 0; e < evals.size(); ++e) {
        dump.dir = out + "/" + std::to_string(e);
        mkdir(dump.dir.c_str(), 0755);
        dump.seen.clear();
        dump.index = std::fopen((dump.dir + "/index").c_str(), "w");
        if (llama_decode(ctx, llama_batch_get_one(evals[e].data(), int32_t(evals[e].size()))) != 0) return 1;
        std::fclose(dump.index);
    }
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
