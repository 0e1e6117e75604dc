#include "model/model.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "cpu/aligned_vector.h"
#include "cpu/attention.h"
#include "cpu/bf16.h"
#include "cpu/matmul_bf16.h"
#include "cpu/matmul_bf16dot.h"
#include "cpu/matmul_f16dot.h"
#include "cpu/matmul_mxfp4.h"
#include "cpu/matmul_mxfp4_q8.h"
#include "cpu/matmul_q8_dense.h"
#include "cpu/rmsnorm.h"
#include "cpu/router.h"
#include "cpu/swiglu.h"
#include "io/mapped_file.h"

namespace ms {

namespace {

std::vector<float> to_f32(const TensorView &t) {
    std::vector<float> out(size_t(t.numel()));
    bf16_to_f32_n(Simd::Scalar, reinterpret_cast<const uint16_t *>(t.data), out.data(), t.numel());
    return out;
}

template <class V> typename V::value_type *grow(V &v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
}

}  // namespace

struct Model::Workspace {
    // Activation buffers the matrix kernels read 64 bytes at a time: cache-line aligned (see cpu/aligned_vector.h).
    AlignedVector<float> x, h, q, k, v, attn, proj, router, cos_sin, xe, gu, act, acts, dn, fin;
    std::vector<int> tok_seq, tok_pos, topk_ids, slot_of, slot_token, expert_count, expert_off, logit_rows;
    std::vector<float> topk_w;
    AlignedVector<uint16_t> hb, ab, xeb, actb, finb;  // bf16 or fp16 copies of the matmul inputs (bf16_act_, fp16)
    AlignedVector<float> hs, as, xes, actbs, fins;    // the fp16 copies' per-row factors (cpu/matmul_f16dot.h)
    // int8 expert inputs in panels of 8 tokens (q8_act_): panel_off[e] = first panel of expert e.
    AlignedVector<int8_t> pq;
    AlignedVector<float> pd;
    AlignedVector<int32_t> psum;
    std::vector<int> panel_off, panel_expert;
    // int8 inputs of the dense projections (q8 dense mode), panels of 8 tokens.
    AlignedVector<int8_t> dq;
    AlignedVector<float> dd;
    AlignedVector<int32_t> dsum;
    struct Item {
        int expert, r0, r1;
    };
    std::vector<Item> items;
};

struct Model::Q8Dense {
    struct Layer {
        Q8DenseWeights q, k, v, o;
    };
    std::vector<Layer> layers;
    Q8DenseWeights lm_head;
};

// A dense matrix in the fp16 kernels' form (cpu/matmul_f16dot.h, f16_dense_convert).
struct F16DenseWeight {
    AlignedVector<uint16_t> w;
    std::vector<float> factor;
    // Row ranges on the pool: at load, ~2.45 GB of gpt-oss-20b rows are on the way to the first request.
    void convert(Simd s, const DenseWeight &d, ThreadPool &pool) {
        w.resize(size_t(d.rows) * size_t(f16_dense_stride(d.cols)));
        factor.resize(size_t(d.rows));
        pool.parallel_for(d.rows, 64, [&](int64_t r0, int64_t r1) {
            f16_dense_convert(s, d.w, d.cols, int(r0), int(r1), w.data(), factor.data());
        });
    }
    size_t bytes() const { return w.size() * sizeof(uint16_t) + factor.size() * sizeof(float); }
};

struct Model::F16Dense {
    struct Layer {
        F16DenseWeight q, k, v, o;
    };
    std::vector<Layer> layers;
    F16DenseWeight lm_head;
};

Model::~Model() = default;

namespace {
// Quantizes `n` rows (row t at x + t * K) into panels 0.. of p (buffers grown as needed), over the pool.
Q8Panels q8_panels_of(Simd simd, ThreadPool &pool, const float *x, int n, int K, AlignedVector<int8_t> &qs,
                      AlignedVector<float> &d, AlignedVector<int32_t> &sum) {
    const int np = (n + kQ8PanelTokens - 1) / kQ8PanelTokens;
    if (qs.size() < size_t(np) * q8_panel_qs_bytes(K)) qs.resize(size_t(np) * q8_panel_qs_bytes(K));
    if (d.size() < size_t(np) * q8_panel_blocks(K)) d.resize(size_t(np) * q8_panel_blocks(K));
    if (sum.size() < size_t(np) * q8_panel_blocks(K)) sum.resize(size_t(np) * q8_panel_blocks(K));
    Q8Panels p{qs.data(), d.data(), sum.data(), K};
    pool.parallel_for(np, 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            const float *rows[kQ8PanelTokens];
            const int m = std::min<int>(kQ8PanelTokens, n - int(i) * kQ8PanelTokens);
            for (int j = 0; j < m; ++j) rows[j] = x + (i * kQ8PanelTokens + j) * int64_t(K);
            q8_quantize_panel(simd, rows, m, p, int(i));
        }
    });
    return p;
}
}  // namespace

std::unique_ptr<Model> Model::load(const ms_model_params &params, bool prefault) {
    if (!params.path || !*params.path) throw Error(MS_ERR_INVALID_ARGUMENT, "ms_model_params.path is empty");
    std::string backend = params.backend ? params.backend : "auto";
    if (backend != "cpu" && backend != "auto") {
        if (backend == "cuda") throw Error(MS_ERR_UNSUPPORTED, "backend \"cuda\" is not available in this build");
        throw Error(MS_ERR_INVALID_ARGUMENT, "backend must be \"cpu\", \"cuda\" or \"auto\", got \"" + backend + "\"");
    }
    if (params.n_threads < 0) throw Error(MS_ERR_INVALID_ARGUMENT, "n_threads must be >= 0");
    const std::string dir = params.path;
    auto m = std::unique_ptr<Model>(new Model());
    const std::string cfg_path = dir + "/config.json";
    m->cfg_ = ModelConfig::parse(read_text_file(cfg_path), cfg_path);
    const ModelConfig &c = m->cfg_;
    m->ckpt_ = Checkpoint::open(dir);
    const Checkpoint &ck = *m->ckpt_;

    const int64_t H = c.hidden_size, I = c.intermediate_size, E = c.num_local_experts, V = c.vocab_size;
    const int64_t QD = int64_t(c.num_attention_heads) * c.head_dim, KVD = int64_t(c.num_key_value_heads) * c.head_dim;
    auto bf16 = [&](const std::string &name, std::vector<int64_t> shape) { return ck.require(name, Dtype::BF16, shape); };
    auto dense = [&](const std::string &prefix, int64_t rows, int64_t cols, bool bias) {
        DenseWeight d;
        d.w = reinterpret_cast<const uint16_t *>(bf16(prefix + ".weight", {rows, cols}).data);
        if (bias) d.bias = to_f32(bf16(prefix + ".bias", {rows}));
        d.rows = int(rows);
        d.cols = int(cols);
        return d;
    };
    auto experts = [&](const std::string &prefix, int64_t rows, int64_t cols) {
        ExpertWeight x;
        x.blocks = ck.require(prefix + "_blocks", Dtype::U8, {E, rows, cols / 32, 16}).data;
        x.scales = ck.require(prefix + "_scales", Dtype::U8, {E, rows, cols / 32}).data;
        x.bias = to_f32(bf16(prefix + "_bias", {E, rows}));
        x.rows = int(rows);
        x.cols = int(cols);
        return x;
    };
    m->embed_ = reinterpret_cast<const uint16_t *>(bf16("model.embed_tokens.weight", {V, H}).data);
    m->final_norm_ = to_f32(bf16("model.norm.weight", {H}));
    m->lm_head_ = dense("lm_head", V, H, false);
    for (int l = 0; l < c.num_hidden_layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        LayerWeights L;
        L.attn_norm = to_f32(bf16(p + "input_layernorm.weight", {H}));
        L.mlp_norm = to_f32(bf16(p + "post_attention_layernorm.weight", {H}));
        L.sinks = to_f32(bf16(p + "self_attn.sinks", {c.num_attention_heads}));
        L.q = dense(p + "self_attn.q_proj", QD, H, true);
        L.k = dense(p + "self_attn.k_proj", KVD, H, true);
        L.v = dense(p + "self_attn.v_proj", KVD, H, true);
        L.o = dense(p + "self_attn.o_proj", H, QD, true);
        L.router = dense(p + "mlp.router", E, H, true);
        L.gate_up = experts(p + "mlp.experts.gate_up_proj", 2 * I, H);
        L.down = experts(p + "mlp.experts.down_proj", H, I);
        m->layers_.push_back(std::move(L));
    }

    m->simd_ = active_simd();
    m->pool_ = std::make_unique<ThreadPool>(params.n_threads);  // before the fp16 mode: its conversion runs on it
    m->bf16_act_ = m->simd_ == Simd::Avx512 && bf16_dot_enabled();
    // A number from the environment: an integer in [0, 2^20] (0 = automatic), else a named error.
    auto min_tokens_env = [](const char *name) {
        const char *v = std::getenv(name);
        if (!v || !*v) return 0;
        char *end = nullptr;
        const long n = std::strtol(v, &end, 10);
        if (*end != '\0' || n < 0 || n > 1 << 20)
            throw Error(MS_ERR_INVALID_ARGUMENT, std::string(name) + " must be an integer >= 0 (0 = automatic), got \"" + v + "\"");
        return int(n);
    };
    // Unset: fp16 where the CPU has AVX512-FP16 (set_f16_activations falls back to fp32 elsewhere).
    const char *act = std::getenv("MS_ACTIVATIONS");
    if (!act || !*act) act = "fp16";
    // A typo must not silently fall back to fp32 (or to the automatic threshold): both are named errors.
    if (std::strcmp(act, "fp32") != 0 && std::strcmp(act, "q8") != 0 && std::strcmp(act, "q8all") != 0 && std::strcmp(act, "fp16") != 0)
        throw Error(MS_ERR_INVALID_ARGUMENT, std::string("MS_ACTIVATIONS must be fp32, fp16, q8 or q8all, got \"") + act + "\"");
    if (!std::strcmp(act, "fp16")) m->set_f16_activations(true, min_tokens_env("MS_F16_MIN_TOKENS"));
    else if (std::strcmp(act, "fp32") != 0) m->set_q8_activations(true, min_tokens_env("MS_Q8_MIN_TOKENS"), !std::strcmp(act, "q8all"));
    m->rope_ = make_rope(c.rope_params());
    m->spec_ = c.kv_spec();
    m->ws_ = std::make_unique<Workspace>();
    if (prefault) ck.prefault(params.progress, params.progress_user);
    return m;
}

KvSpec Model::kv_spec() const { return spec_; }

bool Model::set_bf16_activations(bool on) {
    std::lock_guard<std::mutex> lock(mu_);
    bf16_act_ = on && simd_ == Simd::Avx512 && bf16_dot_supported();
    return bf16_act_;
}

bool Model::set_f16_activations(bool on, int min_tokens) {
    std::lock_guard<std::mutex> lock(mu_);
    f16_act_ = on && simd_ == Simd::Avx512 && f16_dot_supported();
    f16_min_tokens_ = min_tokens > 0 ? min_tokens : kF16DefaultMinTokens;
    if (f16_act_ && !f16d_) {
        auto d = std::make_unique<F16Dense>();
        d->layers.resize(layers_.size());
        for (size_t l = 0; l < layers_.size(); ++l) {
            const LayerWeights &L = layers_[l];
            d->layers[l].q.convert(simd_, L.q, *pool_);
            d->layers[l].k.convert(simd_, L.k, *pool_);
            d->layers[l].v.convert(simd_, L.v, *pool_);
            d->layers[l].o.convert(simd_, L.o, *pool_);
        }
        d->lm_head.convert(simd_, lm_head_, *pool_);
        f16d_ = std::move(d);
    }
    return f16_act_;
}

size_t Model::f16_dense_bytes() const {
    if (!f16d_) return 0;
    size_t n = f16d_->lm_head.bytes();
    for (const auto &L : f16d_->layers) n += L.q.bytes() + L.k.bytes() + L.v.bytes() + L.o.bytes();
    return n;
}

bool Model::set_q8_activations(bool on, int min_tokens, bool dense) {
    std::lock_guard<std::mutex> lock(mu_);
    q8_act_ = on;
    q8_dense_ = on && dense;
    if (q8_dense_ && !q8d_) {
        auto d = std::make_unique<Q8Dense>();
        d->layers.resize(layers_.size());
        for (size_t l = 0; l < layers_.size(); ++l) {
            const LayerWeights &L = layers_[l];
            q8_quantize_dense_bf16(L.q.w, L.q.rows, L.q.cols, d->layers[l].q);
            q8_quantize_dense_bf16(L.k.w, L.k.rows, L.k.cols, d->layers[l].k);
            q8_quantize_dense_bf16(L.v.w, L.v.rows, L.v.cols, d->layers[l].v);
            q8_quantize_dense_bf16(L.o.w, L.o.rows, L.o.cols, d->layers[l].o);
        }
        q8_quantize_dense_bf16(lm_head_.w, lm_head_.rows, lm_head_.cols, d->lm_head);
        q8d_ = std::move(d);
    }
    q8_min_tokens_ = min_tokens > 0 ? min_tokens : (simd_ == Simd::Avx512 && q8_vnni_available()) ? 8 : 1;
    return q8_act_;
}

RopeParams ModelConfig::rope_params() const {
    RopeParams rp;
    rp.head_dim = head_dim;
    rp.theta = rope_theta;
    rp.factor = rope_type == "yarn" ? rope_factor : 1.0;
    rp.original_max_pos = rope_original_max_position_embeddings;
    rp.beta_fast = rope_beta_fast;
    rp.beta_slow = rope_beta_slow;
    return rp;
}

KvSpec ModelConfig::kv_spec() const {
    KvSpec s;
    s.kv_dim = num_key_value_heads * head_dim;
    for (int l = 0; l < num_hidden_layers; ++l) {
        const int g = is_sliding(l) ? kSlidingGroup : kFullGroup;
        if (g == kSlidingGroup) s.sliding_window = sliding_window;
        s.layer_group.push_back(g);
        s.layer_index_in_group.push_back(s.layers_in_group[g]++);
    }
    return s;
}

size_t Model::kv_block_bytes(int group, int block_size, bool bf16) const {
    return spec_.block_bytes(group, block_size, bf16);
}

void Model::forward(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, float *logits) {
    run(seqs, n_seqs, kv, logits, false);
}

void Model::forward_all_logits(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, float *logits) {
    run(seqs, n_seqs, kv, logits, true);
}

void Model::validate_step(const ForwardSeq *seqs, int n_seqs, const KvStorage &kv) const {
    if (n_seqs < 0 || (n_seqs > 0 && !seqs)) throw Error(MS_ERR_INVALID_ARGUMENT, "forward: bad seqs");
    if (kv.kv_dim != spec_.kv_dim) throw Error(MS_ERR_INVALID_ARGUMENT, "forward: KvStorage.kv_dim does not match the model");
    if (kv.block_size <= 0) throw Error(MS_ERR_INVALID_ARGUMENT, "forward: KvStorage.block_size must be > 0");
    for (int g = 0; g < kNumKvGroups; ++g)
        if (spec_.layers_in_group[g] > 0 && (kv.layers_in_group[g] != spec_.layers_in_group[g] || !kv.k[g] || !kv.v[g]))
            throw Error(MS_ERR_INVALID_ARGUMENT, "forward: KvStorage group " + std::to_string(g) + " does not match the KvSpec");
    for (int i = 0; i < n_seqs; ++i) {
        const ForwardSeq &s = seqs[i];
        if (s.n_tokens <= 0 || s.start_pos < 0 || !s.tokens)
            throw Error(MS_ERR_INVALID_ARGUMENT, "forward: seq " + std::to_string(i) + " has no tokens or a negative start");
        for (int j = 0; j < s.n_tokens; ++j)
            if (s.tokens[j] < 0 || s.tokens[j] >= cfg_.vocab_size)
                throw Error(MS_ERR_INVALID_ARGUMENT, "forward: seq " + std::to_string(i) + " token " + std::to_string(s.tokens[j]) +
                                                         " is outside the vocabulary [0, " + std::to_string(cfg_.vocab_size) + ")");
        const int64_t need = (int64_t(s.start_pos) + s.n_tokens + kv.block_size - 1) / kv.block_size;
        for (int g = 0; g < kNumKvGroups; ++g) {
            if (spec_.layers_in_group[g] == 0) continue;
            if (s.n_blocks[g] < need || !s.block_table[g])
                throw Error(MS_ERR_INVALID_ARGUMENT, "forward: seq " + std::to_string(i) + " block table of group " +
                                                         std::to_string(g) + " covers fewer positions than start_pos + n_tokens");
            // Every block this chunk reads or writes must be a valid id: all of them for full attention, those
            // inside the window for the sliding group (older ones may be freed, -1).
            int64_t first_block = 0;
            if (g == kSlidingGroup) first_block = std::max<int64_t>(0, s.start_pos - cfg_.sliding_window + 1) / kv.block_size;
            for (int64_t b = first_block; b < need; ++b)
                if (s.block_table[g][b] < 0 || s.block_table[g][b] >= kv.num_blocks[g])
                    throw Error(MS_ERR_INVALID_ARGUMENT, "forward: seq " + std::to_string(i) + " block " + std::to_string(b) +
                                                             " of group " + std::to_string(g) + " is not a valid block id");
        }
    }
}

void Model::run(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, float *logits, bool all_positions) {
    std::lock_guard<std::mutex> lock(mu_);
    validate_step(seqs, n_seqs, kv);
    Workspace &w = *ws_;
    const int H = cfg_.hidden_size, hd = cfg_.head_dim;
    int T = 0;
    for (int i = 0; i < n_seqs; ++i) T += seqs[i].n_tokens;
    if (T == 0) return;
    int *tok_seq = grow(w.tok_seq, T), *tok_pos = grow(w.tok_pos, T);
    float *x = grow(w.x, size_t(T) * H);
    float *cs = grow(w.cos_sin, size_t(T) * hd);
    for (int i = 0, t = 0; i < n_seqs; ++i)
        for (int j = 0; j < seqs[i].n_tokens; ++j, ++t) {
            tok_seq[t] = i;
            tok_pos[t] = seqs[i].start_pos + j;
        }
    pool_->parallel_for(T, 1, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
            const ForwardSeq &s = seqs[tok_seq[t]];
            int tok = s.tokens[tok_pos[t] - s.start_pos];
            bf16_to_f32_n(simd_, embed_ + int64_t(tok) * H, x + t * H, H);
            rope_cos_sin(rope_, tok_pos[t], cs + t * hd);
        }
    });
    for (int l = 0; l < cfg_.num_hidden_layers; ++l) {
        attention_layer(l, seqs, n_seqs, kv);
        moe_layer(l, T);
    }
    // Final norm on the rows that need logits, then the unembedding over the whole vocabulary.
    std::vector<int> &rows = w.logit_rows;
    rows.clear();
    for (int i = 0, t = 0; i < n_seqs; ++i) {
        for (int j = 0; j < seqs[i].n_tokens; ++j, ++t)
            if (all_positions || (seqs[i].want_logits && j == seqs[i].n_tokens - 1)) rows.push_back(t);
    }
    const int R = int(rows.size());
    if (R == 0) return;
    float *fin = grow(w.fin, size_t(R) * H);
    for (int i = 0; i < R; ++i) rmsnorm(simd_, x + int64_t(rows[i]) * H, final_norm_.data(), H, float(cfg_.rms_norm_eps), fin + int64_t(i) * H);
    const int V = cfg_.vocab_size;
    const int64_t grain = std::max<int64_t>(16, V / (pool_->size() * 16));
    if (use_f16(R)) {
        uint16_t *finb = grow(w.finb, size_t(R) * H);
        float *fins = grow(w.fins, R);
        std::atomic<bool> fits{true};
        pool_->parallel_for(R, 4, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i)
                if (!f32_to_f16_row_scaled(simd_, fin + i * H, H, finb + i * H, fins + i)) fits = false;
        });
        if (fits) {
            ++f16_matmuls_;
            pool_->parallel_for(V, grain, [&](int64_t r0, int64_t r1) {
                matmul_f16w_f16x_rows(simd_, finb, fins, R, H, f16d_->lm_head.w.data(), f16d_->lm_head.factor.data(), nullptr, H,
                                      int(r0), int(r1), logits, V);
            });
            return;
        }
    }
    if (q8_act_ && q8_dense_ && !bf16_act_ && !use_f16(T) && T >= std::max(q8_min_tokens_, kQ8DenseMinTokens)) {
        const Q8Panels p = q8_panels_of(simd_, *pool_, fin, R, H, w.dq, w.dd, w.dsum);
        pool_->parallel_for(V, grain, [&](int64_t r0, int64_t r1) {
            matmul_q8_dense_rows(simd_, p, 0, R, q8d_->lm_head, nullptr, int(r0), int(r1), logits, V);
        });
        return;
    }
    if (bf16_act_) {
        uint16_t *finb = grow(w.finb, size_t(R) * H);
        f32_to_bf16_n(simd_, fin, finb, int64_t(R) * H);
        pool_->parallel_for(V, grain, [&](int64_t r0, int64_t r1) {
            matmul_bf16_bf16x_rows(simd_, finb, R, H, lm_head_.w, nullptr, H, int(r0), int(r1), logits, V);
        });
        return;
    }
    pool_->parallel_for(V, grain, [&](int64_t r0, int64_t r1) {
        matmul_bf16_rows(simd_, fin, R, H, lm_head_.w, nullptr, H, int(r0), int(r1), logits, V);
    });
}

namespace {
int64_t row_grain(int rows, int threads) { return std::max<int64_t>(4, (rows / (threads * 4) + 3) / 4 * 4); }
}  // namespace

void Model::attention_layer(int l, const ForwardSeq *seqs, int n_seqs, KvStorage &kv) {
    Workspace &w = *ws_;
    const LayerWeights &L = layers_[l];
    const int H = cfg_.hidden_size, hd = cfg_.head_dim, nh = cfg_.num_attention_heads, nkv = cfg_.num_key_value_heads;
    const int QD = nh * hd, KVD = nkv * hd, G = nh / nkv;
    int T = 0;
    for (int i = 0; i < n_seqs; ++i) T += seqs[i].n_tokens;
    float *x = w.x.data(), *h = grow(w.h, size_t(T) * H), *q = grow(w.q, size_t(T) * QD);
    float *k = grow(w.k, size_t(T) * KVD), *v = grow(w.v, size_t(T) * KVD), *attn = grow(w.attn, size_t(T) * QD);
    float *proj = grow(w.proj, size_t(T) * H);
    const bool f16 = use_f16(T);
    uint16_t *hb = bf16_act_ || f16 ? grow(w.hb, size_t(T) * H) : nullptr, *ab = bf16_act_ || f16 ? grow(w.ab, size_t(T) * QD) : nullptr;
    float *hs = f16 ? grow(w.hs, T) : nullptr, *as = f16 ? grow(w.as, T) : nullptr;
    const float eps = float(cfg_.rms_norm_eps);
    const int threads = pool_->size();

    std::atomic<bool> h_fits{true}, attn_fits{true};  // fp16: no inf/NaN in the inputs (else those matmuls run fp32)
    pool_->parallel_for(T, 4, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
            rmsnorm(simd_, x + t * H, L.attn_norm.data(), H, eps, h + t * H);
            if (hs) {
                if (!f32_to_f16_row_scaled(simd_, h + t * H, H, hb + t * H, hs + t)) h_fits = false;
            } else if (hb) {
                f32_to_bf16_n(simd_, h + t * H, hb + t * H, H);
            }
        }
    });
    // in_b: the same input rounded to bf16 (in_s null) or to scaled fp16 (in_s: the rows' factors).
    // W16: W in fp16 (made with fp16 mode).
    auto project = [&](const DenseWeight &W, const F16DenseWeight *W16, const float *in, const uint16_t *in_b, const float *in_s,
                       int K, float *out) {
        if (in_s) ++f16_matmuls_;
        pool_->parallel_for(W.rows, row_grain(W.rows, threads), [&](int64_t r0, int64_t r1) {
            if (in_s)
                matmul_f16w_f16x_rows(simd_, in_b, in_s, T, K, W16->w.data(), W16->factor.data(), W.bias_ptr(), K, int(r0),
                                      int(r1), out, W.rows);
            else if (in_b) matmul_bf16_bf16x_rows(simd_, in_b, T, K, W.w, W.bias_ptr(), K, int(r0), int(r1), out, W.rows);
            else matmul_bf16_rows(simd_, in, T, K, W.w, W.bias_ptr(), K, int(r0), int(r1), out, W.rows);
        });
    };
    const uint16_t *h_b = f16 && !h_fits ? nullptr : hb;
    const float *h_s = f16 && h_fits ? hs : nullptr;
    // q8 dense mode: int8 inputs, int8 copies of the weights.
    const bool q8d = q8_act_ && q8_dense_ && !bf16_act_ && !f16 && T >= std::max(q8_min_tokens_, kQ8DenseMinTokens);
    auto project8 = [&](const DenseWeight &W, const Q8DenseWeights &W8, const Q8Panels &in, float *out) {
        pool_->parallel_for(W.rows, row_grain(W.rows, threads), [&](int64_t r0, int64_t r1) {
            matmul_q8_dense_rows(simd_, in, 0, T, W8, W.bias_ptr(), int(r0), int(r1), out, W.rows);
        });
    };
    if (q8d) {
        const Q8Panels hp = q8_panels_of(simd_, *pool_, h, T, H, w.dq, w.dd, w.dsum);
        project8(L.q, q8d_->layers[l].q, hp, q);
        project8(L.k, q8d_->layers[l].k, hp, k);
        project8(L.v, q8d_->layers[l].v, hp, v);
    } else {
        const F16Dense::Layer *L16 = f16 ? &f16d_->layers[l] : nullptr;
        project(L.q, L16 ? &L16->q : nullptr, h, h_b, h_s, H, q);
        project(L.k, L16 ? &L16->k : nullptr, h, h_b, h_s, H, k);
        project(L.v, L16 ? &L16->v : nullptr, h, h_b, h_s, H, v);
    }

    const int g = spec_.layer_group[l], li = spec_.layer_index_in_group[l];
    const int bs = kv.block_size;
    const int64_t block_stride = int64_t(kv.layers_in_group[g]) * bs * KVD;
    const int64_t layer_off = int64_t(li) * bs * KVD;
    const int *tok_seq = w.tok_seq.data(), *tok_pos = w.tok_pos.data();
    const float *cs = w.cos_sin.data();
    // RoPE on q and k, then store k and v at their cache slots.
    pool_->parallel_for(T, 4, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
            rope_apply(simd_, rope_, cs + t * hd, q + t * QD, nh);
            rope_apply(simd_, rope_, cs + t * hd, k + t * KVD, nkv);
            const ForwardSeq &s = seqs[tok_seq[t]];
            const int pos = tok_pos[t];
            const int64_t off = int64_t(s.block_table[g][pos / bs]) * block_stride + layer_off + int64_t(pos % bs) * KVD;
            if (kv.bf16) {
                f32_to_bf16_n(simd_, k + t * KVD, static_cast<uint16_t *>(kv.k[g]) + off, KVD);
                f32_to_bf16_n(simd_, v + t * KVD, static_cast<uint16_t *>(kv.v[g]) + off, KVD);
            } else {
                std::memcpy(static_cast<float *>(kv.k[g]) + off, k + t * KVD, sizeof(float) * KVD);
                std::memcpy(static_cast<float *>(kv.v[g]) + off, v + t * KVD, sizeof(float) * KVD);
            }
        }
    });
    const bool sliding = cfg_.is_sliding(l);
    const int window = cfg_.sliding_window;
    const float scale = 1.0f / std::sqrt(float(hd));
    const size_t esize = kv.bf16 ? 2 : 4;
    pool_->parallel_for(int64_t(T) * nkv, 1, [&](int64_t b, int64_t e) {
        for (int64_t it = b; it < e; ++it) {
            const int t = int(it / nkv), kh = int(it % nkv);
            const ForwardSeq &s = seqs[tok_seq[t]];
            const int pos = tok_pos[t];
            PagedKvView view;
            view.k = static_cast<const char *>(kv.k[g]) + (layer_off + int64_t(kh) * hd) * esize;
            view.v = static_cast<const char *>(kv.v[g]) + (layer_off + int64_t(kh) * hd) * esize;
            view.bf16 = kv.bf16;
            view.block_size = bs;
            view.block_stride = block_stride;
            view.row_stride = KVD;
            view.block_table = s.block_table[g];
            view.n_blocks = s.n_blocks[g];
            const int first = sliding ? std::max(0, pos - window + 1) : 0;
            attend_paged(simd_, q + int64_t(t) * QD + kh * G * hd, G, hd, scale, L.sinks.data() + kh * G, view, first, pos,
                         attn + int64_t(t) * QD + kh * G * hd);
            if (ab && !f16) f32_to_bf16_n(simd_, attn + int64_t(t) * QD + kh * G * hd, ab + int64_t(t) * QD + kh * G * hd, int64_t(G) * hd);
        }
    });
    if (f16) {  // the fp16 copy needs the whole row (its scale): after the attention loop
        pool_->parallel_for(T, 4, [&](int64_t b, int64_t e) {
            for (int64_t t = b; t < e; ++t)
                if (!f32_to_f16_row_scaled(simd_, attn + t * QD, QD, ab + t * QD, as + t)) attn_fits = false;
        });
    }
    if (q8d) project8(L.o, q8d_->layers[l].o, q8_panels_of(simd_, *pool_, attn, T, QD, w.dq, w.dd, w.dsum), proj);
    else if (f16) project(L.o, &f16d_->layers[l].o, attn, attn_fits ? ab : nullptr, attn_fits ? as : nullptr, QD, proj);
    else project(L.o, nullptr, attn, ab, nullptr, QD, proj);
    pool_->parallel_for(T, 4, [&](int64_t b, int64_t e) {
        for (int64_t i = b * H; i < e * H; ++i) x[i] += proj[i];
    });
}

void Model::moe_layer(int l, int T) {
    Workspace &w = *ws_;
    const LayerWeights &L = layers_[l];
    const int H = cfg_.hidden_size, I = cfg_.intermediate_size, E = cfg_.num_local_experts, K = cfg_.num_experts_per_tok;
    const int threads = pool_->size();
    float *x = w.x.data(), *h = grow(w.h, size_t(T) * H), *rl = grow(w.router, size_t(T) * E);
    int *ids = grow(w.topk_ids, size_t(T) * K), *slot_of = grow(w.slot_of, size_t(T) * K);
    float *wts = grow(w.topk_w, size_t(T) * K);
    const float eps = float(cfg_.rms_norm_eps);

    // fp16: the expert inputs as scaled fp16 rows; if any holds inf/NaN the whole layer's experts run fp32 this step.
    bool f16 = use_f16(T);
    uint16_t *hb = bf16_act_ || f16 ? grow(w.hb, size_t(T) * H) : nullptr;
    float *hs = f16 ? grow(w.hs, T) : nullptr;
    std::atomic<bool> h_fits{true};
    pool_->parallel_for(T, 4, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
            rmsnorm(simd_, x + t * H, L.mlp_norm.data(), H, eps, h + t * H);
            if (hs) {
                if (!f32_to_f16_row_scaled(simd_, h + t * H, H, hb + t * H, hs + t)) h_fits = false;
            } else if (hb) {
                f32_to_bf16_n(simd_, h + t * H, hb + t * H, H);
            }
        }
    });
    if (!h_fits) f16 = false, hb = nullptr;
    pool_->parallel_for(E, row_grain(E, threads), [&](int64_t r0, int64_t r1) {
        matmul_bf16_rows(simd_, h, T, H, L.router.w, L.router.bias_ptr(), H, int(r0), int(r1), rl, E);
    });
    for (int t = 0; t < T; ++t) router_topk_softmax(rl + int64_t(t) * E, E, K, ids + int64_t(t) * K, wts + int64_t(t) * K);

    // Group the (token, expert) pairs by expert: slots [off[e], off[e] + count[e]) belong to expert e.
    int *count = grow(w.expert_count, E), *off = grow(w.expert_off, E + 1);
    std::fill(count, count + E, 0);
    for (int i = 0; i < T * K; ++i) ++count[ids[i]];
    off[0] = 0;
    for (int e = 0; e < E; ++e) off[e + 1] = off[e] + count[e];
    int *slot_token = grow(w.slot_token, size_t(T) * K);
    std::fill(count, count + E, 0);
    for (int t = 0; t < T; ++t)
        for (int j = 0; j < K; ++j) {
            int e = ids[t * K + j], s = off[e] + count[e]++;
            slot_token[s] = t;
            slot_of[t * K + j] = s;
        }
    const int S = T * K;
    // q8: expert inputs quantized to int8 in panels of 8 tokens (each expert's tokens start a new panel).
    const bool q8 = q8_act_ && !bf16_act_ && !f16 && T >= q8_min_tokens_;
    float *xe = q8 ? nullptr : grow(w.xe, size_t(S) * H), *gu = grow(w.gu, size_t(S) * 2 * I);
    float *act = grow(w.act, size_t(S) * I), *acts = q8 ? nullptr : grow(w.acts, size_t(S) * I), *dn = grow(w.dn, size_t(S) * H);
    // bf16 and fp16 activations stay in natural element order (vdpbf16ps pairs the two nibbles of a byte).
    const bool b16 = bf16_act_ || f16;
    uint16_t *xeb = b16 ? grow(w.xeb, size_t(S) * H) : nullptr, *actb = b16 ? grow(w.actb, size_t(S) * I) : nullptr;
    float *xes = f16 ? grow(w.xes, S) : nullptr, *actbs = f16 ? grow(w.actbs, S) : nullptr;
    Q8Panels panels;
    int n_panels = 0;
    int *panel_off = nullptr, *panel_expert = nullptr;
    if (q8) {
        panel_off = grow(w.panel_off, E + 1);
        panel_off[0] = 0;
        for (int e = 0; e < E; ++e) panel_off[e + 1] = panel_off[e] + (off[e + 1] - off[e] + kQ8PanelTokens - 1) / kQ8PanelTokens;
        n_panels = panel_off[E];
        panel_expert = grow(w.panel_expert, n_panels);
        for (int e = 0; e < E; ++e)
            for (int p = panel_off[e]; p < panel_off[e + 1]; ++p) panel_expert[p] = e;
        const int Kmax = std::max(H, I);
        panels.qs = grow(w.pq, size_t(n_panels) * q8_panel_qs_bytes(Kmax));
        panels.d = grow(w.pd, size_t(n_panels) * q8_panel_blocks(Kmax));
        panels.sum = grow(w.psum, size_t(n_panels) * q8_panel_blocks(Kmax));
    }
    // Quantizes the rows `rows(slot)` (K values each) of every expert's tokens into the panels.
    auto quantize_panels = [&](int Kin, auto row_of_slot) {
        panels.K = Kin;
        pool_->parallel_for(n_panels, 1, [&](int64_t b, int64_t e) {
            for (int64_t p = b; p < e; ++p) {
                const int ex = panel_expert[p];
                const int s0 = off[ex] + int(p - panel_off[ex]) * kQ8PanelTokens;
                const int n = std::min(kQ8PanelTokens, off[ex + 1] - s0);
                const float *rows[kQ8PanelTokens];
                for (int j = 0; j < n; ++j) rows[j] = row_of_slot(s0 + j);
                q8_quantize_panel(simd_, rows, n, panels, int(p));
            }
        });
    };
    if (q8) {
        quantize_panels(H, [&](int s) { return h + int64_t(slot_token[s]) * H; });
    } else {
        pool_->parallel_for(S, 4, [&](int64_t b, int64_t e) {
            for (int64_t s = b; s < e; ++s) {
                if (xes) xes[s] = hs[slot_token[s]];
                if (xeb) std::memcpy(xeb + s * H, hb + int64_t(slot_token[s]) * H, sizeof(uint16_t) * H);
                else mxfp4_split_activations(h + int64_t(slot_token[s]) * H, H, xe + s * H);
            }
        });
    }

    // Work items: (expert, block of output rows); each expert's weights are read once for all its tokens.
    // in_b: 16-bit inputs (bf16, or fp16 with the factors in_s).
    auto run_experts = [&](const ExpertWeight &W, const float *in, const uint16_t *in_b, const float *in_s, float *out) {
        if (in_s) ++f16_matmuls_;
        int active = 0;
        for (int e = 0; e < E; ++e) active += off[e + 1] > off[e];
        int rb = std::max(4, (W.rows * active / (threads * 8) + 3) / 4 * 4);
        rb = std::min(rb, W.rows);
        w.items.clear();
        for (int e = 0; e < E; ++e) {
            if (off[e + 1] == off[e]) continue;
            for (int r = 0; r < W.rows; r += rb) w.items.push_back({e, r, std::min(W.rows, r + rb)});
        }
        pool_->parallel_for(int64_t(w.items.size()), 1, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) {
                const Workspace::Item &it = w.items[i];
                const int n = off[it.expert + 1] - off[it.expert];
                if (q8)
                    matmul_mxfp4_q8_rows(simd_, panels, panel_off[it.expert], n, W.expert_blocks(it.expert),
                                         W.expert_scales(it.expert), W.expert_bias(it.expert), W.cols, it.r0, it.r1,
                                         out + int64_t(off[it.expert]) * W.rows, W.rows);
                else if (in_s)
                    matmul_mxfp4_f16x_rows(simd_, in_b + int64_t(off[it.expert]) * W.cols, in_s + off[it.expert], n, W.cols,
                                           W.expert_blocks(it.expert), W.expert_scales(it.expert), W.expert_bias(it.expert),
                                           W.cols, it.r0, it.r1, out + int64_t(off[it.expert]) * W.rows, W.rows);
                else if (in_b)
                    matmul_mxfp4_bf16x_rows(simd_, in_b + int64_t(off[it.expert]) * W.cols, n, W.cols, W.expert_blocks(it.expert),
                                            W.expert_scales(it.expert), W.expert_bias(it.expert), W.cols, it.r0, it.r1,
                                            out + int64_t(off[it.expert]) * W.rows, W.rows);
                else
                    matmul_mxfp4_rows(simd_, in + int64_t(off[it.expert]) * W.cols, n, W.cols, W.expert_blocks(it.expert),
                                      W.expert_scales(it.expert), W.expert_bias(it.expert), W.cols, it.r0, it.r1,
                                      out + int64_t(off[it.expert]) * W.rows, W.rows);
            }
        });
    };
    run_experts(L.gate_up, xe, xeb, xes, gu);
    const float limit = float(cfg_.swiglu_limit), alpha = float(cfg_.swiglu_alpha);
    std::atomic<bool> act_fits{true};
    pool_->parallel_for(S, 4, [&](int64_t b, int64_t e) {
        for (int64_t s = b; s < e; ++s) {
            swiglu_interleaved(gu + s * 2 * I, I, limit, alpha, act + s * I);
            if (actbs) {
                if (!f32_to_f16_row_scaled(simd_, act + s * I, I, actb + s * I, actbs + s)) act_fits = false;
            } else if (actb) {
                f32_to_bf16_n(simd_, act + s * I, actb + s * I, I);
            } else if (acts) {
                mxfp4_split_activations(act + s * I, I, acts + s * I);
            }
        }
    });
    if (!act_fits) {  // fp16 could not hold this step's expert outputs: the down projection runs fp32
        pool_->parallel_for(S, 4, [&](int64_t b, int64_t e) {
            for (int64_t s = b; s < e; ++s) mxfp4_split_activations(act + s * I, I, acts + s * I);
        });
        actb = nullptr, actbs = nullptr;
    }
    if (q8) quantize_panels(I, [&](int s) { return act + int64_t(s) * I; });
    run_experts(L.down, acts, actb, actbs, dn);
    // Weighted sum of each token's experts (down bias included), in a fixed order.
    pool_->parallel_for(T, 4, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t)
            for (int j = 0; j < K; ++j) {
                const float wt = wts[t * K + j];
                const float *d = dn + int64_t(slot_of[t * K + j]) * H;
                float *xt = x + t * H;
                for (int i = 0; i < H; ++i) xt[i] += wt * d[i];
            }
    });
}

}  // namespace ms
