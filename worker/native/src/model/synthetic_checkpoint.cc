#include "model/synthetic_checkpoint.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "common/error.h"
#include "cpu/bf16.h"

namespace ms {

namespace {

uint64_t splitmix64(uint64_t &state) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string &s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
    return h;
}

// Uniform in [-1, 1) with 24 random bits: exact in fp32 on every machine.
float uniform(uint64_t &state) { return float(int64_t(splitmix64(state) >> 40) - (1 << 23)) / float(1 << 23); }

struct Tensor {
    std::string name;
    bool u8 = false;  // else BF16
    std::vector<int64_t> shape;
    std::function<void(uint64_t &, std::vector<uint8_t> &)> fill;  // appends the data
    uint64_t nbytes() const {
        uint64_t n = u8 ? 1 : 2;
        for (int64_t d : shape) n *= uint64_t(d);
        return n;
    }
};

// bf16 values: center + amplitude * uniform.
Tensor bf16_tensor(const std::string &name, std::vector<int64_t> shape, float center, float amplitude) {
    Tensor t{name, false, std::move(shape), nullptr};
    t.fill = [center, amplitude, n = t.nbytes() / 2](uint64_t &st, std::vector<uint8_t> &out) {
        for (uint64_t i = 0; i < n; ++i) {
            uint16_t b = f32_to_bf16(center + amplitude * uniform(st));
            out.push_back(uint8_t(b & 0xff));
            out.push_back(uint8_t(b >> 8));
        }
    };
    return t;
}

// Amplitude of a uniform variable with variance 1/fan_in, times gain: gain * sqrt(3 / fan_in).
float fan_in_amplitude(int fan_in, float gain) {
    double a = 3.0 / fan_in;
    return float(gain * std::sqrt(a));
}

// The E8M0 exponent e such that 2^(e-127) * rms(E2M1) * sqrt(fan_in) is about 1 (rms(E2M1) ~ 2.93).
int expert_scale_exponent(int fan_in) {
    double target = 1.0 / (2.93 * std::sqrt(double(fan_in)));
    int e = 127;
    double v = 1.0;
    while (v > target) {
        v *= 0.5;
        --e;
    }
    return e + 1;  // round up to the power of two just above the target
}

void write_file(const std::string &path, const std::string &text) {
    FILE *f = std::fopen(path.c_str(), "wb");
    if (!f) throw Error(MS_ERR_IO, path + ": cannot create: " + std::strerror(errno));
    bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    ok = (std::fclose(f) == 0) && ok;
    if (!ok) throw Error(MS_ERR_IO, path + ": write failed");
}

std::string num(double v) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.17g", v);
    return buf;
}

std::string config_json(const SyntheticSpec &s) {
    const int eos = s.vocab > 200002 ? 200002 : s.vocab - 2;
    const int pad = s.vocab > 199999 ? 199999 : s.vocab - 1;
    std::string types;
    for (int i = 0; i < s.layers; ++i) types += std::string(i ? ", " : "") + (i % 2 == 0 ? "\"sliding_attention\"" : "\"full_attention\"");
    std::string j = "{\n";
    j += "  \"architectures\": [\"GptOssForCausalLM\"],\n";
    j += "  \"model_type\": \"gpt_oss\",\n";
    j += "  \"attention_bias\": true,\n  \"attention_dropout\": 0.0,\n";
    j += "  \"eos_token_id\": " + std::to_string(eos) + ",\n  \"pad_token_id\": " + std::to_string(pad) + ",\n";
    j += "  \"head_dim\": " + std::to_string(s.head_dim) + ",\n";
    j += "  \"hidden_act\": \"silu\",\n";
    j += "  \"hidden_size\": " + std::to_string(s.hidden) + ",\n";
    j += "  \"initial_context_length\": 4096,\n  \"initializer_range\": 0.02,\n";
    j += "  \"intermediate_size\": " + std::to_string(s.intermediate) + ",\n";
    j += "  \"layer_types\": [" + types + "],\n";
    j += "  \"max_position_embeddings\": " + std::to_string(s.max_position_embeddings) + ",\n";
    j += "  \"num_attention_heads\": " + std::to_string(s.heads) + ",\n";
    j += "  \"num_experts_per_tok\": " + std::to_string(s.experts_per_tok) + ",\n";
    j += "  \"num_hidden_layers\": " + std::to_string(s.layers) + ",\n";
    j += "  \"num_key_value_heads\": " + std::to_string(s.kv_heads) + ",\n";
    j += "  \"num_local_experts\": " + std::to_string(s.experts) + ",\n";
    j += "  \"output_router_logits\": false,\n";
    j += "  \"quantization_config\": {\"modules_to_not_convert\": [\"model.layers.*.self_attn\", \"model.layers.*.mlp.router\", "
         "\"model.embed_tokens\", \"lm_head\"], \"quant_method\": \"mxfp4\"},\n";
    j += "  \"rms_norm_eps\": 1e-05,\n";
    j += "  \"rope_scaling\": {\"beta_fast\": 32.0, \"beta_slow\": 1.0, \"factor\": " + num(s.rope_factor) +
         ", \"original_max_position_embeddings\": 4096, \"rope_type\": \"yarn\", \"truncate\": false},\n";
    j += "  \"rope_theta\": " + num(s.rope_theta) + ",\n";
    j += "  \"router_aux_loss_coef\": 0.9,\n";
    j += "  \"sliding_window\": " + std::to_string(s.sliding_window) + ",\n";
    j += "  \"swiglu_limit\": 7.0,\n  \"tie_word_embeddings\": false,\n  \"torch_dtype\": \"bfloat16\",\n";
    j += "  \"use_cache\": true,\n";
    j += "  \"vocab_size\": " + std::to_string(s.vocab) + "\n}\n";
    return j;
}

std::vector<Tensor> tensors_for(const SyntheticSpec &s) {
    const int64_t H = s.hidden, I = s.intermediate, E = s.experts, V = s.vocab;
    const int64_t QD = int64_t(s.heads) * s.head_dim, KVD = int64_t(s.kv_heads) * s.head_dim;
    std::vector<Tensor> ts;
    ts.push_back(bf16_tensor("model.embed_tokens.weight", {V, H}, 0, 1.0f));
    ts.push_back(bf16_tensor("model.norm.weight", {H}, 1, 0.1f));
    ts.push_back(bf16_tensor("lm_head.weight", {V, H}, 0, fan_in_amplitude(int(H), 2.0f)));
    for (int l = 0; l < s.layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        ts.push_back(bf16_tensor(p + "input_layernorm.weight", {H}, 1, 0.1f));
        ts.push_back(bf16_tensor(p + "post_attention_layernorm.weight", {H}, 1, 0.1f));
        ts.push_back(bf16_tensor(p + "self_attn.q_proj.weight", {QD, H}, 0, fan_in_amplitude(int(H), 1.0f)));
        ts.push_back(bf16_tensor(p + "self_attn.q_proj.bias", {QD}, 0, 0.1f));
        ts.push_back(bf16_tensor(p + "self_attn.k_proj.weight", {KVD, H}, 0, fan_in_amplitude(int(H), 1.0f)));
        ts.push_back(bf16_tensor(p + "self_attn.k_proj.bias", {KVD}, 0, 0.1f));
        ts.push_back(bf16_tensor(p + "self_attn.v_proj.weight", {KVD, H}, 0, fan_in_amplitude(int(H), 1.0f)));
        ts.push_back(bf16_tensor(p + "self_attn.v_proj.bias", {KVD}, 0, 0.1f));
        ts.push_back(bf16_tensor(p + "self_attn.o_proj.weight", {H, QD}, 0, fan_in_amplitude(int(QD), 0.5f)));
        ts.push_back(bf16_tensor(p + "self_attn.o_proj.bias", {H}, 0, 0.1f));
        ts.push_back(bf16_tensor(p + "self_attn.sinks", {s.heads}, 0, 2.0f));
        ts.push_back(bf16_tensor(p + "mlp.router.weight", {E, H}, 0, fan_in_amplitude(int(H), 2.0f)));
        ts.push_back(bf16_tensor(p + "mlp.router.bias", {E}, 0, 0.2f));
        struct Proj {
            const char *name;
            int64_t rows, cols;
        } projs[2] = {{"gate_up_proj", 2 * I, H}, {"down_proj", H, I}};
        for (const Proj &pr : projs) {
            const std::string base = p + "mlp.experts." + pr.name;
            Tensor blocks{base + "_blocks", true, {E, pr.rows, pr.cols / 32, 16}, nullptr};
            blocks.fill = [n = blocks.nbytes()](uint64_t &st, std::vector<uint8_t> &out) {
                for (uint64_t i = 0; i < n; i += 8) {
                    uint64_t r = splitmix64(st);
                    for (uint64_t b = 0; b < 8 && i + b < n; ++b) out.push_back(uint8_t(r >> (8 * b)));
                }
            };
            Tensor scales{base + "_scales", true, {E, pr.rows, pr.cols / 32}, nullptr};
            const int e0 = expert_scale_exponent(int(pr.cols));
            scales.fill = [n = scales.nbytes(), e0](uint64_t &st, std::vector<uint8_t> &out) {
                for (uint64_t i = 0; i < n; ++i) out.push_back(uint8_t(e0 - int(splitmix64(st) & 1)));
            };
            ts.push_back(std::move(blocks));
            ts.push_back(std::move(scales));
            ts.push_back(bf16_tensor(base + "_bias", {E, pr.rows}, 0, 0.1f));
        }
    }
    return ts;
}

void check_spec(const SyntheticSpec &s) {
    auto bad = [](const std::string &m) { throw Error(MS_ERR_INVALID_ARGUMENT, "synthetic checkpoint: " + m); };
    if (s.layers < 1 || s.hidden < 32 || s.intermediate < 32 || s.heads < 1 || s.kv_heads < 1 || s.head_dim < 2 ||
        s.experts < 1 || s.vocab < 4 || s.shards < 1)
        bad("sizes must be positive (hidden, intermediate >= 32, vocab >= 4)");
    if (s.hidden % 32 || s.intermediate % 32) bad("hidden and intermediate must be multiples of 32 (MXFP4 blocks)");
    if (s.heads % s.kv_heads) bad("heads must be a multiple of kv_heads");
    if (s.head_dim % 2) bad("head_dim must be even");
    if (s.experts_per_tok < 1 || s.experts_per_tok > s.experts) bad("experts_per_tok must be in [1, experts]");
}

}  // namespace

SyntheticSpec synthetic_preset(const std::string &name) {
    SyntheticSpec s;
    if (name == "tiny") return s;
    if (name == "tiny-harmony") {
        s.vocab = 201088;
        return s;
    }
    if (name == "mid") {
        s.layers = 8;
        s.hidden = 1024;
        s.intermediate = 1024;
        s.heads = 16;
        s.kv_heads = 4;
        s.head_dim = 64;
        s.experts = 16;
        s.vocab = 32768;
        return s;
    }
    throw Error(MS_ERR_INVALID_ARGUMENT, "unknown preset \"" + name + "\" (tiny, tiny-harmony, mid)");
}

SyntheticSpec synthetic_spec_from_args(const std::vector<std::string> &args, std::string *out_dir) {
    std::string preset = "tiny";
    for (size_t i = 0; i + 1 < args.size(); ++i)
        if (args[i] == "--preset") preset = args[i + 1];
    SyntheticSpec s = synthetic_preset(preset);
    for (size_t i = 0; i < args.size(); i += 2) {
        const std::string &a = args[i];
        if (i + 1 >= args.size()) throw Error(MS_ERR_INVALID_ARGUMENT, a + " needs a value");
        const std::string &v = args[i + 1];
        char *end = nullptr;
        unsigned long long n = std::strtoull(v.c_str(), &end, 10);
        const bool is_num = !v.empty() && v[0] != '-' && end && *end == 0;
        auto num = [&]() -> int {
            if (!is_num || n > (1ull << 30)) throw Error(MS_ERR_INVALID_ARGUMENT, a + " needs a number, got \"" + v + "\"");
            return int(n);
        };
        if (a == "--preset") continue;
        if (a == "--out") {
            if (out_dir) *out_dir = v;
        } else if (a == "--seed") {
            if (!is_num) throw Error(MS_ERR_INVALID_ARGUMENT, "--seed needs a number, got \"" + v + "\"");
            s.seed = n;
        } else if (a == "--layers") s.layers = num();
        else if (a == "--hidden") s.hidden = num();
        else if (a == "--intermediate") s.intermediate = num();
        else if (a == "--heads") s.heads = num();
        else if (a == "--kv-heads") s.kv_heads = num();
        else if (a == "--head-dim") s.head_dim = num();
        else if (a == "--experts") s.experts = num();
        else if (a == "--experts-per-tok") s.experts_per_tok = num();
        else if (a == "--vocab") s.vocab = num();
        else if (a == "--window") s.sliding_window = num();
        else if (a == "--shards") s.shards = num();
        else throw Error(MS_ERR_INVALID_ARGUMENT, "unknown option " + a);
    }
    check_spec(s);
    return s;
}

void write_synthetic_checkpoint(const SyntheticSpec &spec, const std::string &dir) {
    check_spec(spec);
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) throw Error(MS_ERR_IO, dir + ": cannot create: " + std::strerror(errno));
    write_file(dir + "/config.json", config_json(spec));
    std::vector<Tensor> ts = tensors_for(spec);
    uint64_t total = 0;
    for (const auto &t : ts) total += t.nbytes();
    // Consecutive tensors fill shards of about total/shards bytes each.
    const int n_shards = spec.shards;
    std::vector<std::vector<const Tensor *>> shards(n_shards);
    uint64_t acc = 0;
    for (const auto &t : ts) {
        int s = int(std::min<uint64_t>(uint64_t(n_shards - 1), acc * n_shards / std::max<uint64_t>(total, 1)));
        shards[s].push_back(&t);
        acc += t.nbytes();
    }
    std::string weight_map;
    for (int s = 0; s < n_shards; ++s) {
        const std::string fname = n_shards == 1 ? "model.safetensors"
                                                : "model-" + std::string(5 - std::to_string(s + 1).size(), '0') + std::to_string(s + 1) +
                                                      "-of-" + std::string(5 - std::to_string(n_shards).size(), '0') +
                                                      std::to_string(n_shards) + ".safetensors";
        // bf16 tensors first so every one starts at an even offset; the data is contiguous with no gaps.
        std::vector<const Tensor *> order;
        for (auto *t : shards[s])
            if (!t->u8) order.push_back(t);
        for (auto *t : shards[s])
            if (t->u8) order.push_back(t);
        std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
        uint64_t off = 0;
        for (auto *t : order) {
            std::string shape;
            for (size_t i = 0; i < t->shape.size(); ++i) shape += (i ? "," : "") + std::to_string(t->shape[i]);
            header += ",\"" + t->name + "\":{\"dtype\":\"" + (t->u8 ? "U8" : "BF16") + "\",\"shape\":[" + shape +
                      "],\"data_offsets\":[" + std::to_string(off) + "," + std::to_string(off + t->nbytes()) + "]}";
            off += t->nbytes();
            weight_map += std::string(weight_map.empty() ? "" : ",\n") + "    \"" + t->name + "\": \"" + fname + "\"";
        }
        header += "}";
        while ((8 + header.size()) % 8) header += ' ';
        const std::string path = dir + "/" + fname;
        FILE *f = std::fopen(path.c_str(), "wb");
        if (!f) throw Error(MS_ERR_IO, path + ": cannot create: " + std::strerror(errno));
        std::unique_ptr<FILE, int (*)(FILE *)> guard(f, &std::fclose);
        uint8_t len[8];
        for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(header.size()) >> (8 * i));
        bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(header.data(), 1, header.size(), f) == header.size();
        std::vector<uint8_t> buf;
        for (auto *t : order) {
            buf.clear();
            buf.reserve(t->nbytes());
            uint64_t state = spec.seed * 0x2545F4914F6CDD1Dull ^ fnv1a(t->name);
            t->fill(state, buf);
            ok = ok && std::fwrite(buf.data(), 1, buf.size(), f) == buf.size();
        }
        if (!ok) throw Error(MS_ERR_IO, path + ": write failed");
        if (std::fclose(guard.release()) != 0) throw Error(MS_ERR_IO, path + ": write failed");
    }
    if (n_shards > 1)
        write_file(dir + "/model.safetensors.index.json",
                   "{\n  \"metadata\": {\"total_size\": " + std::to_string(total) + "},\n  \"weight_map\": {\n" + weight_map + "\n  }\n}\n");
}

}  // namespace ms
