// Greedy generation with a GGUF llama-family model, for a quick look at what it writes:
//   slm_generate MODEL.gguf [--chat] [--tokens N] [--threads N] PROMPT
// --chat wraps the prompt as one ChatML user turn (the model's template) and stops at <|im_end|>.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/error.h"
#include "llama/llama_session.h"

int main(int argc, char **argv) {
    std::string path, prompt;
    int n_new = 64, threads = 2;
    bool chat = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--chat") chat = true;
        else if (a == "--tokens" && i + 1 < argc) n_new = std::atoi(argv[++i]);
        else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
        else if (path.empty()) path = a;
        else prompt = a;
    }
    if (path.empty()) {
        std::fprintf(stderr, "usage: slm_generate MODEL.gguf [--chat] [--tokens N] [--threads N] PROMPT\n");
        return 2;
    }
    try {
        ms_model_params p;
        ms_model_params_default(&p);
        p.n_threads = threads;
        auto model = ms::LlamaModel::load(p, path);
        if (chat) prompt = "<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n";
        std::vector<int32_t> ids = model->tokenizer().encode(prompt, true);
        ms::LlamaSession s(*model, int(ids.size()) + n_new + 1);
        std::vector<int32_t> out = s.greedy(ids, n_new, true);
        std::printf("%s", model->tokenizer().decode(out.data(), int(out.size()), false).c_str());
        std::printf("\n[%zu prompt tokens, %zu generated]\n", ids.size(), out.size());
    } catch (const ms::Error &e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
