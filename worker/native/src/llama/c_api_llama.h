// The llama half of the ms_model_* C API: model info, eval, and the tokenizer functions (engine.h).
#pragma once

#include "engine.h"
#include "llama/llama_model.h"

namespace ms {

void llama_model_info(const LlamaModel &m, ms_model_info *out);
// Runs tokens[0..n) from position 0 with a private contiguous fp32 KV cache; logits of every position.
void llama_model_eval(LlamaModel &m, const int32_t *tokens, int n_tokens, float *logits);

}  // namespace ms
