#include "llama/llama_model.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "cpu/attention.h"
#include "cpu/bf16.h"
#include "llama/llama_ggml_ops.h"

namespace ms {

namespace {

template <class T> T *grow(std::vector<T> &v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
}

bool ends_with(const std::string &s, const std::string &suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

WeightType weight_type_of(gguf::TensorType t) {
    switch (t) {
        case gguf::TensorType::F32: return WeightType::F32;
        case gguf::TensorType::F16: return WeightType::F16;
        case gguf::TensorType::BF16: return WeightType::BF16;
        case gguf::TensorType::Q4_0: return WeightType::Q4_0;
        case gguf::TensorType::Q4_1: return WeightType::Q4_1;
        case gguf::TensorType::Q8_0: return WeightType::Q8_0;
    }
    return WeightType::F32;
}

const std::vector<gguf::TensorType> kMatrixTypes = {gguf::TensorType::F32, gguf::TensorType::F16, gguf::TensorType::BF16,
                                                    gguf::TensorType::Q4_0, gguf::TensorType::Q4_1, gguf::TensorType::Q8_0};

// llama.cpp's RMSNorm: the mean of squares accumulated in double, 1/sqrt in float, then the gain.
void rmsnorm_llama(const float *x, const float *w, int n, float eps, float *out) {
    double ss = 0;
    for (int i = 0; i < n; ++i) ss += double(x[i] * x[i]);
    const float scale = 1.0f / std::sqrt(float(ss / n) + eps);
    for (int i = 0; i < n; ++i) out[i] = x[i] * scale * w[i];
}

// Rotates adjacent pairs (x[2i], x[2i+1]) of each head by pos * theta^(-2i/dims); cos_sin from rope_cache.
void rope_pairs(const float *cos_sin, float *x, int n_heads, int head_dim, int rope_dims) {
    for (int h = 0; h < n_heads; ++h) {
        float *v = x + int64_t(h) * head_dim;
        for (int i = 0; i < rope_dims; i += 2) {
            const float c = cos_sin[i], s = cos_sin[i + 1], a = v[i], b = v[i + 1];
            v[i] = a * c - b * s;
            v[i + 1] = a * s + b * c;
        }
    }
}

// The angle schedule as llama.cpp builds it: theta starts at pos and is multiplied by theta_base^(-2/dims) per pair
// in float (not pow per pair), which changes the last bits of high-frequency pairs at long positions.
void rope_cache(int pos, float theta_base, int rope_dims, float *cos_sin) {
    const float scale = std::pow(theta_base, -2.0f / float(rope_dims));
    float theta = float(pos);
    for (int i = 0; i < rope_dims; i += 2) {
        cos_sin[i] = std::cos(theta);
        cos_sin[i + 1] = std::sin(theta);
        theta *= scale;
    }
}

// MS_LLAMA_NUMERICS, read at load: unset, "" or "default" runs the engine's own kernels; "llamacpp-avx512" and
// "llamacpp-avx2" reproduce the arithmetic of llama.cpp's CPU backend built for an AVX-512 or an AVX2 CPU
// (llama_ggml_ops.h), "llamacpp" is llamacpp-avx512 (the build that made testdata/smollm2/greedy.json); anything
// else is an error that names the variable.
bool llamacpp_numerics_from_env(ggml_ops::GgmlBuild *build) {
    const char *v = std::getenv("MS_LLAMA_NUMERICS");
    const std::string s = v ? v : "";
    if (s.empty() || s == "default") return false;
    if (s == "llamacpp" || s == "llamacpp-avx512") *build = ggml_ops::GgmlBuild::Avx512;
    else if (s == "llamacpp-avx2") *build = ggml_ops::GgmlBuild::Avx2;
    else
        throw Error(MS_ERR_INVALID_ARGUMENT, "MS_LLAMA_NUMERICS=\"" + s +
                                                 "\" is not one of \"default\", \"llamacpp\", \"llamacpp-avx512\", \"llamacpp-avx2\"");
    return true;
}

int64_t row_grain(int rows, int threads) { return std::max<int64_t>(8, (rows / (threads * 8) + 7) / 8 * 8); }

}  // namespace

std::string resolve_gguf_path(const std::string &path) {
    if (ends_with(path, ".gguf")) return path;
    struct stat st;
    if (stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return "";
    DIR *d = opendir(path.c_str());
    if (!d) return "";
    std::vector<std::string> found;
    while (dirent *e = readdir(d)) {
        std::string name = e->d_name;
        if (ends_with(name, ".gguf")) found.push_back(name);
    }
    closedir(d);
    if (found.size() > 1) {
        std::sort(found.begin(), found.end());
        throw Error(MS_ERR_INVALID_ARGUMENT, path + ": holds " + std::to_string(found.size()) + " .gguf files (" + found[0] +
                                                 ", " + found[1] + ", ...); name one of them");
    }
    return found.empty() ? "" : path + "/" + found[0];
}

struct LlamaModel::Workspace {
    std::vector<float> x, h, q, k, v, attn, proj, gate, up, act, fin, cos_sin;
    std::vector<int> tok_seq, tok_pos, logit_rows;
    std::vector<int8_t> qs;
    std::vector<float> qd, qsum_f;
    std::vector<int32_t> qsum;
    Q8Rows q8;
};

LlamaModel::~LlamaModel() = default;

std::unique_ptr<LlamaModel> LlamaModel::load(const ms_model_params &params, const std::string &gguf_path) {
    std::string backend = params.backend ? params.backend : "auto";
    if (backend != "cpu" && backend != "auto") {
        if (backend == "cuda") throw Error(MS_ERR_UNSUPPORTED, gguf_path + ": GGUF models run on the CPU backend only");
        throw Error(MS_ERR_INVALID_ARGUMENT, "backend must be \"cpu\", \"cuda\" or \"auto\", got \"" + backend + "\"");
    }
    if (params.n_threads < 0) throw Error(MS_ERR_INVALID_ARGUMENT, "n_threads must be >= 0");
    auto m = std::unique_ptr<LlamaModel>(new LlamaModel());
    m->llamacpp_numerics_ = llamacpp_numerics_from_env(&m->ggml_build_);
    if (const char *d = std::getenv("MS_LLAMA_DUMP")) m->dump_dir_ = d;
    m->file_ = gguf::File::open(gguf_path);
    const gguf::File &f = *m->file_;
    LlamaConfig &c = m->cfg_;
    c.architecture = f.get_string("general.architecture");
    if (c.architecture != "llama")
        throw Error(MS_ERR_UNSUPPORTED, gguf_path + ": architecture \"" + c.architecture + "\" is not supported (llama)");
    const std::string a = c.architecture + ".";
    c.name = f.get_string("general.name", "");
    auto dim = [&](const std::string &key, uint64_t max) {
        const uint64_t v = f.get_uint(key);
        if (v == 0 || v > max) throw Error(MS_ERR_FORMAT, gguf_path + ": metadata \"" + key + "\" = " + std::to_string(v) + " is out of range");
        return int(v);
    };
    c.n_layers = dim(a + "block_count", 1024);
    c.hidden = dim(a + "embedding_length", 65536);
    c.ffn = dim(a + "feed_forward_length", 1 << 20);
    c.n_heads = dim(a + "attention.head_count", 1024);
    c.n_kv_heads = f.find(a + "attention.head_count_kv") ? dim(a + "attention.head_count_kv", 1024) : c.n_heads;
    c.context = dim(a + "context_length", 1 << 24);
    c.rope_theta = float(f.get_float(a + "rope.freq_base", 10000.0));
    c.rms_eps = float(f.get_float(a + "attention.layer_norm_rms_epsilon"));
    if (c.hidden % c.n_heads != 0 || c.n_heads % c.n_kv_heads != 0)
        throw Error(MS_ERR_FORMAT, gguf_path + ": head counts " + std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv_heads) +
                                       " do not divide the embedding length " + std::to_string(c.hidden));
    c.head_dim = c.hidden / c.n_heads;
    c.rope_dims = int(f.get_uint(a + "rope.dimension_count", uint64_t(c.head_dim)));
    if (c.rope_dims > c.head_dim || c.rope_dims % 2 != 0 || c.head_dim > 256 || c.n_heads / c.n_kv_heads > 64)
        throw Error(MS_ERR_UNSUPPORTED, gguf_path + ": head_dim " + std::to_string(c.head_dim) + " / rope dims " +
                                            std::to_string(c.rope_dims) + " / heads per KV head are not supported");
    if (m->llamacpp_numerics_ && c.head_dim % ggml_ops::head_dim_multiple(m->ggml_build_) != 0)
        throw Error(MS_ERR_UNSUPPORTED, gguf_path + ": MS_LLAMA_NUMERICS=llamacpp needs a head_dim that is a multiple of " +
                                            std::to_string(ggml_ops::head_dim_multiple(m->ggml_build_)) + ", got " +
                                            std::to_string(c.head_dim));
    c.chat_template = f.get_string("tokenizer.chat_template", "");

    m->tok_ = BpeTokenizer::from_gguf(f);
    c.vocab = m->tok_->vocab_size();
    if (f.find(a + "vocab_size") && int(f.get_uint(a + "vocab_size")) != c.vocab)
        throw Error(MS_ERR_FORMAT, gguf_path + ": metadata \"" + a + "vocab_size\" differs from the tokenizer's token count");
    c.bos_token_id = m->tok_->bos_id();
    c.add_bos = m->tok_->add_bos();
    c.eos_token_id = m->tok_->eos_id();

    const int64_t H = c.hidden, F = c.ffn, V = c.vocab, QD = int64_t(c.n_heads) * c.head_dim,
                  KVD = int64_t(c.n_kv_heads) * c.head_dim;
    auto matrix = [&](const std::string &name, int64_t rows, int64_t cols) {
        const gguf::TensorInfo &t = f.require(name, kMatrixTypes, {cols, rows});
        LlamaMatrix mx;
        mx.type = weight_type_of(t.type);
        mx.data = t.data;
        mx.rows = int(rows);
        mx.cols = int(cols);
        if (weight_type_quantized(mx.type) && cols % 32 != 0)
            throw Error(MS_ERR_FORMAT, gguf_path + ": tensor \"" + name + "\" has rows that are not whole 32-blocks");
        if (m->llamacpp_numerics_ && mx.type != WeightType::Q4_1 && mx.type != WeightType::Q8_0)
            throw Error(MS_ERR_UNSUPPORTED, gguf_path + ": tensor \"" + name + "\" is " + weight_type_name(mx.type) +
                                                ", but MS_LLAMA_NUMERICS=llamacpp emulates only Q4_1 and Q8_0 matrices");
        return mx;
    };
    auto vec = [&](const std::string &name, int64_t n) {
        const gguf::TensorInfo &t = f.require(name, {gguf::TensorType::F32}, {n});
        std::vector<float> out(static_cast<size_t>(n), 0.0f);
        std::memcpy(out.data(), t.data, size_t(n) * 4);
        return out;
    };
    m->embed_ = matrix("token_embd.weight", V, H);
    m->output_norm_ = vec("output_norm.weight", H);
    c.tied_embeddings = f.find_tensor("output.weight") == nullptr;
    m->output_ = c.tied_embeddings ? m->embed_ : matrix("output.weight", V, H);
    for (int l = 0; l < c.n_layers; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        LlamaLayer L;
        L.attn_norm = vec(p + "attn_norm.weight", H);
        L.ffn_norm = vec(p + "ffn_norm.weight", H);
        L.q = matrix(p + "attn_q.weight", QD, H);
        L.k = matrix(p + "attn_k.weight", KVD, H);
        L.v = matrix(p + "attn_v.weight", KVD, H);
        L.o = matrix(p + "attn_output.weight", H, QD);
        L.gate = matrix(p + "ffn_gate.weight", F, H);
        L.up = matrix(p + "ffn_up.weight", F, H);
        L.down = matrix(p + "ffn_down.weight", H, F);
        m->layers_.push_back(std::move(L));
    }

    m->simd_ = active_simd();
    quant_kernel_vnni();  // a bad MS_QUANT_VNNI fails the load here, naming the variable
    m->pool_ = std::make_unique<ThreadPool>(params.n_threads);
    for (float &s : m->no_sinks_) s = -INFINITY;
    KvSpec &s = m->spec_;
    s.kv_dim = int(KVD);
    for (int l = 0; l < c.n_layers; ++l) {
        s.layer_group.push_back(kFullGroup);
        s.layer_index_in_group.push_back(s.layers_in_group[kFullGroup]++);
    }
    m->ws_ = std::make_unique<Workspace>();
    f.prefault(params.progress, params.progress_user);
    return m;
}

void LlamaModel::dump(const char *name, int layer, const float *x, int64_t n) const {
    if (dump_dir_.empty()) return;
    const std::string dir = dump_dir_ + "/" + std::to_string(dump_step_);
    mkdir(dir.c_str(), 0755);
    const std::string path = dir + "/" + name + (layer >= 0 ? "-" + std::to_string(layer) : std::string()) + ".f32";
    if (FILE *f = std::fopen(path.c_str(), "wb")) {
        std::fwrite(x, sizeof(float), size_t(n), f);
        std::fclose(f);
    }
}

size_t LlamaModel::kv_block_bytes(int group, int block_size, bool bf16) const {
    return spec_.block_bytes(group, block_size, bf16);
}

void LlamaModel::forward(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, float *logits) {
    run(seqs, n_seqs, kv, logits, false);
}

void LlamaModel::forward_all_logits(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, float *logits) {
    run(seqs, n_seqs, kv, logits, true);
}

void LlamaModel::validate_step(const ForwardSeq *seqs, int n_seqs, const KvStorage &kv) const {
    if (n_seqs < 0 || (n_seqs > 0 && !seqs)) throw Error(MS_ERR_INVALID_ARGUMENT, "forward: bad seqs");
    if (kv.kv_dim != spec_.kv_dim) throw Error(MS_ERR_INVALID_ARGUMENT, "forward: KvStorage.kv_dim does not match the model");
    if (kv.block_size <= 0 || kv.block_size > 256) throw Error(MS_ERR_INVALID_ARGUMENT, "forward: KvStorage.block_size must be in 1..256");
    if (kv.layers_in_group[kFullGroup] != spec_.layers_in_group[kFullGroup] || !kv.k[kFullGroup] || !kv.v[kFullGroup])
        throw Error(MS_ERR_INVALID_ARGUMENT, "forward: KvStorage group 0 does not match the KvSpec");
    for (int i = 0; i < n_seqs; ++i) {
        const ForwardSeq &s = seqs[i];
        if (s.n_tokens <= 0 || s.start_pos < 0 || !s.tokens)
            throw Error(MS_ERR_INVALID_ARGUMENT, "forward: seq " + std::to_string(i) + " has no tokens or a negative start");
        for (int j = 0; j < s.n_tokens; ++j)
            if (s.tokens[j] < 0 || s.tokens[j] >= cfg_.vocab)
                throw Error(MS_ERR_INVALID_ARGUMENT, "forward: seq " + std::to_string(i) + " token " + std::to_string(s.tokens[j]) +
                                                         " is outside the vocabulary [0, " + std::to_string(cfg_.vocab) + ")");
        const int64_t need = (int64_t(s.start_pos) + s.n_tokens + kv.block_size - 1) / kv.block_size;
        if (s.n_blocks[kFullGroup] < need || !s.block_table[kFullGroup])
            throw Error(MS_ERR_INVALID_ARGUMENT, "forward: seq " + std::to_string(i) + " block table covers fewer positions than start_pos + n_tokens");
        for (int64_t b = 0; b < need; ++b)
            if (s.block_table[kFullGroup][b] < 0 || s.block_table[kFullGroup][b] >= kv.num_blocks[kFullGroup])
                throw Error(MS_ERR_INVALID_ARGUMENT, "forward: seq " + std::to_string(i) + " block " + std::to_string(b) + " is not a valid block id");
    }
}

void LlamaModel::matmul(const LlamaMatrix *const *mats, float *const *outs, int n_mats, const float *x, int T) {
    Workspace &w = *ws_;
    const int K = mats[0]->cols;
    const bool quant = weight_type_quantized(mats[0]->type);
    if (quant) {
        const int nb = K / 32;
        w.q8.qs = grow(w.qs, size_t(T) * K);
        w.q8.d = grow(w.qd, size_t(T) * nb);
        w.q8.s = grow(w.qsum_f, size_t(T) * nb);
        w.q8.sum = grow(w.qsum, size_t(T) * nb);
        w.q8.K = K;
        if (T >= 4) pool_->parallel_for(T, 2, [&](int64_t b, int64_t e) { quantize_rows_q8(simd_, x, K, int(b), int(e), w.q8); });
        else quantize_rows_q8(simd_, x, K, 0, T, w.q8);
    }
    // One parallel loop over the rows of all the matrices (q, k and v; gate and up share their input).
    int total = 0;
    for (int i = 0; i < n_mats; ++i) total += mats[i]->rows;
    const int64_t grain = row_grain(total, pool_->size());
    pool_->parallel_for(total, grain, [&](int64_t b, int64_t e) {
        int base = 0;
        for (int i = 0; i < n_mats && b < e; ++i) {
            const LlamaMatrix &M = *mats[i];
            const int lo = int(std::max<int64_t>(b, base)), hi = int(std::min<int64_t>(e, base + M.rows));
            if (lo < hi && llamacpp_numerics_)
                ggml_ops::matmul_rows(simd_, M.type, M.data, K, w.q8, T, lo - base, hi - base, outs[i], M.rows);
            else if (lo < hi)
                matmul_rows(simd_, M.type, M.data, K, x, K, quant ? &w.q8 : nullptr, T, lo - base, hi - base, outs[i], M.rows);
            base += M.rows;
        }
    });
}

void LlamaModel::run(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, float *logits, bool all_positions) {
    std::lock_guard<std::mutex> lock(mu_);
    validate_step(seqs, n_seqs, kv);
    Workspace &w = *ws_;
    const int H = cfg_.hidden;
    int T = 0;
    for (int i = 0; i < n_seqs; ++i) T += seqs[i].n_tokens;
    if (T == 0) return;
    int *tok_seq = grow(w.tok_seq, T), *tok_pos = grow(w.tok_pos, T);
    float *x = grow(w.x, size_t(T) * H);
    float *cs = grow(w.cos_sin, size_t(T) * cfg_.rope_dims);
    for (int i = 0, t = 0; i < n_seqs; ++i)
        for (int j = 0; j < seqs[i].n_tokens; ++j, ++t) {
            tok_seq[t] = i;
            tok_pos[t] = seqs[i].start_pos + j;
        }
    const int64_t erb = weight_row_bytes(embed_.type, H);
    for (int t = 0; t < T; ++t) {
        const ForwardSeq &s = seqs[tok_seq[t]];
        const int tok = s.tokens[tok_pos[t] - s.start_pos];
        dequantize_row(embed_.type, embed_.data + int64_t(tok) * erb, H, x + int64_t(t) * H);
        if (llamacpp_numerics_) ggml_ops::rope_cache(tok_pos[t], cfg_.rope_theta, cfg_.rope_dims, cs + int64_t(t) * cfg_.rope_dims);
        else rope_cache(tok_pos[t], cfg_.rope_theta, cfg_.rope_dims, cs + int64_t(t) * cfg_.rope_dims);
    }
    if (!dump_dir_.empty()) mkdir(dump_dir_.c_str(), 0755);
    dump("embd", -1, x, int64_t(T) * H);
    for (int l = 0; l < cfg_.n_layers; ++l) {
        attention(l, seqs, n_seqs, kv, T);
        mlp(l, T);
        dump("l_out", l, x, int64_t(T) * H);
    }
    std::vector<int> &rows = w.logit_rows;
    rows.clear();
    for (int i = 0, t = 0; i < n_seqs; ++i)
        for (int j = 0; j < seqs[i].n_tokens; ++j, ++t)
            if (all_positions || (seqs[i].want_logits && j == seqs[i].n_tokens - 1)) rows.push_back(t);
    const int R = int(rows.size());
    if (R == 0) return;
    float *fin = grow(w.fin, size_t(R) * H);
    for (int i = 0; i < R; ++i) rmsnorm_llama(x + int64_t(rows[i]) * H, output_norm_.data(), H, cfg_.rms_eps, fin + int64_t(i) * H);
    const LlamaMatrix *mats[1] = {&output_};
    float *outs[1] = {logits};
    matmul(mats, outs, 1, fin, R);
    dump("result_norm", -1, fin, int64_t(R) * H);
    dump("result_output", -1, logits, int64_t(R) * cfg_.vocab);
    ++dump_step_;
}

void LlamaModel::attention(int l, const ForwardSeq *seqs, int n_seqs, KvStorage &kv, int T) {
    Workspace &w = *ws_;
    const LlamaLayer &L = layers_[l];
    const int H = cfg_.hidden, hd = cfg_.head_dim, nh = cfg_.n_heads, nkv = cfg_.n_kv_heads;
    const int QD = nh * hd, KVD = nkv * hd, G = nh / nkv, rd = cfg_.rope_dims;
    float *x = w.x.data(), *h = grow(w.h, size_t(T) * H), *q = grow(w.q, size_t(T) * QD);
    float *k = grow(w.k, size_t(T) * KVD), *v = grow(w.v, size_t(T) * KVD), *attn = grow(w.attn, size_t(T) * QD);
    float *proj = grow(w.proj, size_t(T) * H);
    pool_->parallel_for(T, 4, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) rmsnorm_llama(x + t * H, L.attn_norm.data(), H, cfg_.rms_eps, h + t * H);
    });
    {
        const LlamaMatrix *mats[3] = {&L.q, &L.k, &L.v};
        float *outs[3] = {q, k, v};
        matmul(mats, outs, 3, h, T);
    }
    dump("attn_norm", l, h, int64_t(T) * H);
    dump("Vcur", l, v, int64_t(T) * KVD);
    const int bs = kv.block_size;
    const int li = spec_.layer_index_in_group[l];
    const int64_t block_stride = int64_t(kv.layers_in_group[kFullGroup]) * bs * KVD;
    const int64_t layer_off = int64_t(li) * bs * KVD;
    const int *tok_seq = w.tok_seq.data(), *tok_pos = w.tok_pos.data();
    const float *cs = w.cos_sin.data();
    const auto rope = llamacpp_numerics_ ? ggml_ops::rope_pairs : rope_pairs;
    for (int t = 0; t < T; ++t) {
        rope(cs + int64_t(t) * rd, q + int64_t(t) * QD, nh, hd, rd);
        rope(cs + int64_t(t) * rd, k + int64_t(t) * KVD, nkv, hd, rd);
        const ForwardSeq &s = seqs[tok_seq[t]];
        const int pos = tok_pos[t];
        const int64_t off = int64_t(s.block_table[kFullGroup][pos / bs]) * block_stride + layer_off + int64_t(pos % bs) * KVD;
        if (kv.bf16) {
            f32_to_bf16_n(simd_, k + int64_t(t) * KVD, static_cast<uint16_t *>(kv.k[kFullGroup]) + off, KVD);
            f32_to_bf16_n(simd_, v + int64_t(t) * KVD, static_cast<uint16_t *>(kv.v[kFullGroup]) + off, KVD);
        } else {
            std::memcpy(static_cast<float *>(kv.k[kFullGroup]) + off, k + int64_t(t) * KVD, sizeof(float) * KVD);
            std::memcpy(static_cast<float *>(kv.v[kFullGroup]) + off, v + int64_t(t) * KVD, sizeof(float) * KVD);
        }
    }
    dump("Qcur.2", l, q, int64_t(T) * QD);
    dump("Kcur.2", l, k, int64_t(T) * KVD);
    const float scale = 1.0f / std::sqrt(float(hd));
    const size_t esize = kv.bf16 ? 2 : 4;
    pool_->parallel_for(int64_t(T) * nkv, 1, [&](int64_t b, int64_t e) {
        for (int64_t it = b; it < e; ++it) {
            const int t = int(it / nkv), kh = int(it % nkv);
            const ForwardSeq &s = seqs[tok_seq[t]];
            PagedKvView view;
            view.k = static_cast<const char *>(kv.k[kFullGroup]) + (layer_off + int64_t(kh) * hd) * esize;
            view.v = static_cast<const char *>(kv.v[kFullGroup]) + (layer_off + int64_t(kh) * hd) * esize;
            view.bf16 = kv.bf16;
            view.block_size = bs;
            view.block_stride = block_stride;
            view.row_stride = KVD;
            view.block_table = s.block_table[kFullGroup];
            view.n_blocks = s.n_blocks[kFullGroup];
            if (llamacpp_numerics_)
                // llama.cpp runs a prompt as one ubatch (2+ tokens: tinyBLAS for kqv) and decodes one token at a time.
                ggml_ops::attend_paged(simd_, ggml_build_, q + int64_t(t) * QD + kh * G * hd, G, hd, scale, view, tok_pos[t], s.n_tokens >= 2,
                                       attn + int64_t(t) * QD + kh * G * hd);
            else
                attend_paged(simd_, q + int64_t(t) * QD + kh * G * hd, G, hd, scale, no_sinks_, view, 0, tok_pos[t],
                             attn + int64_t(t) * QD + kh * G * hd);
        }
    });
    {
        const LlamaMatrix *mats[1] = {&L.o};
        float *outs[1] = {proj};
        matmul(mats, outs, 1, attn, T);
    }
    dump("kqv_out", l, attn, int64_t(T) * QD);
    dump("attn_out", l, proj, int64_t(T) * H);
    for (int64_t i = 0; i < int64_t(T) * H; ++i) x[i] += proj[i];
    dump("ffn_inp", l, x, int64_t(T) * H);
}

void LlamaModel::mlp(int l, int T) {
    Workspace &w = *ws_;
    const LlamaLayer &L = layers_[l];
    const int H = cfg_.hidden, F = cfg_.ffn;
    float *x = w.x.data(), *h = grow(w.h, size_t(T) * H), *gate = grow(w.gate, size_t(T) * F);
    float *up = grow(w.up, size_t(T) * F), *act = grow(w.act, size_t(T) * F), *proj = grow(w.proj, size_t(T) * H);
    pool_->parallel_for(T, 4, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) rmsnorm_llama(x + t * H, L.ffn_norm.data(), H, cfg_.rms_eps, h + t * H);
    });
    {
        const LlamaMatrix *mats[2] = {&L.gate, &L.up};
        float *outs[2] = {gate, up};
        matmul(mats, outs, 2, h, T);
    }
    dump("ffn_norm", l, h, int64_t(T) * H);
    dump("ffn_gate", l, gate, int64_t(T) * F);
    dump("ffn_up", l, up, int64_t(T) * F);
    pool_->parallel_for(T, 1, [&](int64_t b, int64_t e) {
        if (llamacpp_numerics_) {
            for (int64_t t = b; t < e; ++t) ggml_ops::swiglu_row(simd_, ggml_build_, gate + t * F, up + t * F, act + t * F, F);
            return;
        }
        for (int64_t i = b * F; i < e * F; ++i) {
            const float g = gate[i];
            act[i] = g / (1.0f + std::exp(-g)) * up[i];
        }
    });
    {
        const LlamaMatrix *mats[1] = {&L.down};
        float *outs[1] = {proj};
        matmul(mats, outs, 1, act, T);
    }
    dump("ffn_swiglu", l, act, int64_t(T) * F);
    dump("ffn_out", l, proj, int64_t(T) * H);
    for (int64_t i = 0; i < int64_t(T) * H; ++i) x[i] += proj[i];
}

}  // namespace ms
