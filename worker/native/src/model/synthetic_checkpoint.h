// Deterministic synthetic gpt-oss checkpoints in the Hugging Face layout (config.json with MXFP4
// quantization_config, safetensors shards, an index when sharded), for tests, benchmarks and reference vectors.
// Every value derives from (seed, tensor name) through splitmix64 and exact float arithmetic, so a checkpoint is
// bit-identical on every machine and independent of how it is sharded. Magnitudes keep activations O(1): logits
// differ between tokens and nothing overflows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ms {

struct SyntheticSpec {
    int layers = 4;
    int hidden = 64;        // multiple of 32
    int intermediate = 64;  // multiple of 32
    int heads = 4;
    int kv_heads = 2;
    int head_dim = 16;
    int experts = 8;
    int experts_per_tok = 4;
    int vocab = 1024;
    int sliding_window = 128;
    int max_position_embeddings = 131072;
    double rope_theta = 150000;
    double rope_factor = 32;
    int shards = 1;
    uint64_t seed = 1;
};

// "tiny", "tiny-harmony" (vocabulary 201088) or "mid" (benchmark size); throws ms::Error(MS_ERR_INVALID_ARGUMENT).
SyntheticSpec synthetic_preset(const std::string &name);
// Applies make_checkpoint's options ("--preset", "--seed", "--layers", ...; "--out" is skipped, its value returned
// in *out_dir when given). Throws ms::Error(MS_ERR_INVALID_ARGUMENT) naming the bad option.
SyntheticSpec synthetic_spec_from_args(const std::vector<std::string> &args, std::string *out_dir = nullptr);
// Writes the checkpoint into `dir` (created if needed). Throws ms::Error(MS_ERR_IO / MS_ERR_INVALID_ARGUMENT).
void write_synthetic_checkpoint(const SyntheticSpec &spec, const std::string &dir);

}  // namespace ms
