#include "cuda/executor.cuh"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/env.h"
#include "cuda/cuda_check.cuh"
#include "cuda/debug_skip.cuh"
#include "cuda/kernels.cuh"

namespace ms::cuda {

namespace {

// The RMSNorm in front of each MoE done by the MoE's router kernel (moe.cuh, MoeInputNorm) instead of its own kernel.
// MODELSERVE_CUDA_MOE_NORM_FUSED=0 turns it off.
bool moe_norm_fused_switch() {
    static const bool on = env_switch("MODELSERVE_CUDA_MOE_NORM_FUSED", true);
    return on;
}
// Steps of up to kL2PrefetchMaxTokens tokens may pull the next layer's qkv projection into L2 while the MoE runs
// (moe.cuh, MoeL2Prefetch). Off by default: on an H100 (2026-12-07, 20b batch 1) it made the step slower, 3.012 against
// 2.790 ms (2.902 ms at normal L2 priority), though the qkv GEMV itself got faster. ExecutorOptions::l2_prefetch turns
// it on; MODELSERVE_CUDA_L2_PREFETCH=1/0, when set, overrides the option for every executor (A/B runs);
// MODELSERVE_CUDA_L2_PREFETCH_LAST=0 prefetches at normal L2 priority (no evict_last, nothing to release).
bool l2_prefetch_on(bool option) {
    static const int env = [] {
        const char *v = std::getenv("MODELSERVE_CUDA_L2_PREFETCH");
        return v && *v ? int(env_switch("MODELSERVE_CUDA_L2_PREFETCH", false)) : -1;
    }();
    return env < 0 ? option : env == 1;
}
bool l2_prefetch_last_switch() {
    static const bool on = env_switch("MODELSERVE_CUDA_L2_PREFETCH_LAST", true);
    return on;
}
// Larger batches read each weight for many tokens: the projections run at full DRAM speed without help.
constexpr int kL2PrefetchMaxTokens = 8;

// The kernels' switches, each read once where it is used (pdl.cuh, attention.cu, matmul_bf16.cu, moe/*.cu, the
// functions above) with the same defaults as here.
void validate_kernel_switches() {
    for (const char *name : {"MODELSERVE_CUDA_PDL", "MODELSERVE_CUDA_ATTN_PLAN", "MODELSERVE_CUDA_PREFILL_ATTN",
                             "MODELSERVE_CUDA_GEMM_SPLIT", "MODELSERVE_MOE_MID_TILE",
                             "MODELSERVE_MOE_PREFILL_V2", "MODELSERVE_CUDA_MOE_NORM_FUSED",
                             "MODELSERVE_CUDA_L2_PREFETCH", "MODELSERVE_CUDA_L2_PREFETCH_LAST",
                             "MODELSERVE_CUDA_ROPE_SPREAD", "MODELSERVE_MOE_COMBINE_TAIL"})
        env_switch(name, false);
    debug_skip(SkipStage::kQkv, 1);  // parses MODELSERVE_CUDA_DEBUG_SKIP (an unknown stage name throws)
    env_choice("MODELSERVE_MOE_TOKEN_TILE", 0, {8, 16, 64, 128});
    env_choice("MODELSERVE_MOE_DECODE_WARPS", 8, {4, 8});
    env_choice("MODELSERVE_MOE_DECODE_BUFS", 2, {2, 3});
}

}  // namespace

ExecutorOptions executor_options_from_env() {
    ExecutorOptions o;
    o.exact_matmul = env_switch("MODELSERVE_CUDA_EXACT", o.exact_matmul);
    o.cuda_graphs = env_switch("MODELSERVE_CUDA_GRAPHS", o.cuda_graphs);
    // Greedy and temperature rows are sampled on the GPU (one host sync per step: the token ids); =0 copies every
    // row's logits to the host and samples there.
    o.device_sampling = env_switch("MODELSERVE_CUDA_DEVICE_SAMPLING", o.device_sampling);
    // The kernels' own switches are read once, where they are used; reading them here first makes a bad value fail
    // the model load with the variable named instead of surfacing in the middle of a step.
    validate_kernel_switches();
    if (const char *f = std::getenv("MODELSERVE_GPU_MEMORY_FRACTION")) {
        char *end = nullptr;
        const double v = std::strtod(f, &end);
        if (end == f || *end != '\0' || !(v > 0.0 && v < 1.0))
            throw Error(MS_ERR_INVALID_ARGUMENT, std::string("MODELSERVE_GPU_MEMORY_FRACTION must be in (0, 1), got \"") + f + "\"");
        o.memory_fraction = v;
    }
    return o;
}

CudaExecutor::CudaExecutor(std::shared_ptr<DeviceModel> model, const ExecutorOptions &options)
    : model_(std::move(model)), opt_(options) {
    MS_CUDA(cudaSetDevice(model_->device()));
    MS_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    size_t free_b = 0, total_b = 0;
    MS_CUDA(cudaMemGetInfo(&free_b, &total_b));
    const double budget = opt_.memory_fraction * double(total_b) - double(total_b - free_b) - double(opt_.workspace_reserve_bytes);
    kv_limit_ = budget > 1.0 ? uint64_t(budget) : 1;  // 1 byte: the KV pool then reports that no block fits
}

const char *StageProfile::name(int i) {
    static const char *names[kStages] = {"embed+rope", "norm+qkv+kv write", "attention", "o proj", "moe", "unembed+sample"};
    return i >= 0 && i < kStages ? names[i] : "?";
}

bool CudaExecutor::GraphKey::operator<(const GraphKey &o) const {
    if (T != o.T) return T < o.T;
    if (out != o.out) return out < o.out;
    if (bf16 != o.bf16) return bf16 < o.bf16;
    if (block_size != o.block_size) return block_size < o.block_size;
    return std::lexicographical_compare(kv, kv + 4, o.kv, o.kv + 4);
}

void CudaExecutor::drop_graphs() {
    for (auto &g : graphs_) cudaGraphExecDestroy(g.second);
    graphs_.clear();
}

CudaExecutor::~CudaExecutor() {
    cudaSetDevice(model_->device());
    if (stream_) cudaStreamSynchronize(stream_);
    drop_graphs();
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
    for (void *p : {(void *)x_, (void *)h_, (void *)qkv_, (void *)attn_, (void *)cs_, (void *)fin_, (void *)logits_,
                    (void *)xb_, (void *)ids_, moe_ws_, (void *)d_step_, (void *)attn_part_, (void *)mm_split_, (void *)sample_part_})
        if (p) cudaFree(p);
    if (pinned_) cudaFreeHost(pinned_);
    if (stream_) cudaStreamDestroy(stream_);
}

size_t CudaExecutor::kv_block_bytes(int group, int block_size, bool bf16) const {
    return kv_spec().block_bytes(group, block_size, bf16);
}

void *CudaExecutor::alloc_kv_memory(size_t bytes) const {
    MS_CUDA(cudaSetDevice(model_->device()));
    void *p = nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess)
        throw Error(MS_ERR_OUT_OF_MEMORY, "CUDA: cannot allocate " + std::to_string(bytes) + " bytes of KV cache (" +
                                              cudaGetErrorString(err) + ")");
    MS_CUDA(cudaMemset(p, 0, bytes));
    return p;
}

void CudaExecutor::free_kv_memory(void *p) const {
    cudaSetDevice(model_->device());
    cudaFree(p);
}

void CudaExecutor::forward(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, float *logits) {
    run(seqs, n_seqs, kv, Output::Logits, logits);
}
void CudaExecutor::forward_greedy(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, int32_t *ids) {
    run(seqs, n_seqs, kv, Output::Greedy, ids);
}
void CudaExecutor::forward_sample(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, const DeviceSampling *rows,
                                  int32_t *tokens_out, float *host_logits) {
    run(seqs, n_seqs, kv, Output::Sample, tokens_out, rows, host_logits);
}
void CudaExecutor::forward_all_logits(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, float *logits) {
    run(seqs, n_seqs, kv, Output::AllLogits, logits);
}

void CudaExecutor::validate(const ForwardSeq *seqs, int n_seqs, const KvStorage &kv) const {
    const KvSpec &spec = kv_spec();
    const int V = vocab_size(), window = model_->config().sliding_window;
    auto fail = [](const std::string &m) { throw Error(MS_ERR_INVALID_ARGUMENT, "CUDA forward: " + m); };
    if (n_seqs < 0 || (n_seqs > 0 && !seqs)) fail("bad seqs");
    if (kv.kv_dim != spec.kv_dim) fail("KvStorage.kv_dim does not match the model");
    if (kv.block_size <= 0) fail("KvStorage.block_size must be > 0");
    for (int g = 0; g < kNumKvGroups; ++g)
        if (spec.layers_in_group[g] > 0 && (kv.layers_in_group[g] != spec.layers_in_group[g] || !kv.k[g] || !kv.v[g]))
            fail("KvStorage group " + std::to_string(g) + " does not match the KvSpec");
    for (int i = 0; i < n_seqs; ++i) {
        const ForwardSeq &s = seqs[i];
        const std::string who = "seq " + std::to_string(i);
        if (s.n_tokens <= 0 || s.start_pos < 0 || !s.tokens) fail(who + " has no tokens or a negative start");
        for (int j = 0; j < s.n_tokens; ++j)
            if (s.tokens[j] < 0 || s.tokens[j] >= V)
                fail(who + " token " + std::to_string(s.tokens[j]) + " is outside the vocabulary [0, " + std::to_string(V) + ")");
        const int64_t need = (int64_t(s.start_pos) + s.n_tokens + kv.block_size - 1) / kv.block_size;
        for (int g = 0; g < kNumKvGroups; ++g) {
            if (spec.layers_in_group[g] == 0) continue;
            if (s.n_blocks[g] < need || !s.block_table[g])
                fail(who + " block table of group " + std::to_string(g) + " covers fewer positions than start_pos + n_tokens");
            const int64_t first = g == kSlidingGroup ? std::max<int64_t>(0, s.start_pos - window + 1) / kv.block_size : 0;
            for (int64_t b = first; b < need; ++b)
                if (s.block_table[g][b] < 0 || s.block_table[g][b] >= kv.num_blocks[g])
                    fail(who + " block " + std::to_string(b) + " of group " + std::to_string(g) + " is not a valid block id");
        }
    }
}

void CudaExecutor::ensure_workspace(int tokens, int rows) {
    const ModelConfig &c = model_->config();
    const int H = c.hidden_size, hd = c.head_dim, QD = c.num_attention_heads * hd;
    const int QKV = QD + 2 * c.num_key_value_heads * hd, V = c.vocab_size;
    auto realloc = [](auto *&p, size_t count) {
        if (p) cudaFree(p);
        p = nullptr;
        MS_CUDA(cudaMalloc(reinterpret_cast<void **>(&p), count * sizeof(*p)));
    };
    if (tokens > cap_tokens_) {
        MS_CUDA(cudaStreamSynchronize(stream_));
        drop_graphs();
        const int n = std::max(tokens, std::min(2 * cap_tokens_, 1 << 16));
        realloc(x_, size_t(n) * H);
        realloc(h_, size_t(n) * H);
        realloc(qkv_, size_t(n) * QKV);
        realloc(attn_, size_t(n) * QD);
        realloc(cs_, size_t(n) * hd);
        realloc(xb_, size_t(n) * std::max(H, QD));
        if (moe_ws_) cudaFree(moe_ws_);
        moe_ws_ = nullptr;
        const size_t ws = model_->layers.empty() ? 0 : moe_workspace_bytes(model_->layers[0].moe, n);
        if (ws) MS_CUDA(cudaMalloc(&moe_ws_, ws));
        cap_tokens_ = n;
    }
    if (rows > cap_rows_) {
        MS_CUDA(cudaStreamSynchronize(stream_));
        drop_graphs();
        const int n = std::max(rows, 2 * cap_rows_);
        realloc(fin_, size_t(n) * H);
        realloc(logits_, size_t(n) * V);
        realloc(ids_, size_t(n));
        realloc(sample_part_, sample_scratch_floats(n));
        cap_rows_ = n;
    }
}

static_assert(int(DeviceSampling::kGreedy) == kSampleGreedy && int(DeviceSampling::kTemperature) == kSampleTemperature,
              "DeviceSampling modes and the sampling kernel's modes must agree");

void CudaExecutor::run(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, Output what, void *host_out,
                       const DeviceSampling *sampling, float *host_logits) {
    MS_CUDA(cudaSetDevice(model_->device()));
    validate(seqs, n_seqs, kv);
    const ModelConfig &c = model_->config();
    const KvSpec &spec = kv_spec();
    int T = 0;
    for (int i = 0; i < n_seqs; ++i) T += seqs[i].n_tokens;
    if (T == 0) return;

    // Stage the step's integers: tokens, positions, owning seq, logit rows, table offsets, tables.
    std::vector<int32_t> &hs = host_scratch_;
    hs.clear();
    hs.resize(size_t(3) * T);
    int R = 0;
    std::vector<int32_t> rows;
    for (int i = 0, t = 0; i < n_seqs; ++i)
        for (int j = 0; j < seqs[i].n_tokens; ++j, ++t) {
            hs[t] = seqs[i].tokens[j];
            hs[T + t] = seqs[i].start_pos + j;
            hs[2 * T + t] = i;
            if (what == Output::AllLogits || (seqs[i].want_logits && j == seqs[i].n_tokens - 1)) rows.push_back(t);
        }
    R = int(rows.size());
    hs.insert(hs.end(), rows.begin(), rows.end());
    int n_host_rows = 0;
    if (what == Output::Sample) {
        if (R > 0 && !sampling) throw Error(MS_ERR_INVALID_ARGUMENT, "CUDA forward_sample: no sampling rows");
        hs.resize(hs.size() + size_t(4) * R);
        int32_t *p = hs.data() + size_t(3) * T + R;
        for (int r = 0; r < R; ++r) {
            const DeviceSampling &d = sampling[r];
            int mode = d.mode;
            if (mode == DeviceSampling::kTemperature && !(d.temperature > 0.f && std::isfinite(d.temperature)))
                throw Error(MS_ERR_INVALID_ARGUMENT, "CUDA forward_sample: row " + std::to_string(r) +
                                                         " has temperature sampling with temperature " +
                                                         std::to_string(d.temperature));
            if (mode != DeviceSampling::kGreedy && mode != DeviceSampling::kTemperature) mode = DeviceSampling::kHost;
            if (mode == DeviceSampling::kHost) ++n_host_rows;
            sample_row_params(mode, d.temperature, d.seed, p + size_t(4) * r);
        }
        if (n_host_rows > 0 && !host_logits)
            throw Error(MS_ERR_INVALID_ARGUMENT, "CUDA forward_sample: host rows but no host_logits buffer");
    }
    const size_t off_at = hs.size();
    hs.resize(off_at + size_t(2) * n_seqs);
    const size_t tables_at = hs.size();
    for (int g = 0; g < kNumKvGroups; ++g)
        for (int i = 0; i < n_seqs; ++i) {
            hs[off_at + size_t(g) * n_seqs + i] = int32_t(hs.size() - tables_at);
            if (spec.layers_in_group[g] > 0) hs.insert(hs.end(), seqs[i].block_table[g], seqs[i].block_table[g] + seqs[i].n_blocks[g]);
        }
    if (hs.size() > pinned_cap_) {
        MS_CUDA(cudaStreamSynchronize(stream_));
        if (pinned_) cudaFreeHost(pinned_);
        pinned_ = nullptr;
        pinned_cap_ = std::max(hs.size(), 2 * pinned_cap_);
        MS_CUDA(cudaMallocHost(reinterpret_cast<void **>(&pinned_), pinned_cap_ * sizeof(int32_t)));
    }
    if (hs.size() > d_step_cap_) {
        MS_CUDA(cudaStreamSynchronize(stream_));
        drop_graphs();
        if (d_step_) cudaFree(d_step_);
        d_step_ = nullptr;
        d_step_cap_ = std::max(hs.size(), 2 * d_step_cap_);
        MS_CUDA(cudaMalloc(reinterpret_cast<void **>(&d_step_), d_step_cap_ * sizeof(int32_t)));
    }
    std::memcpy(pinned_, hs.data(), hs.size() * sizeof(int32_t));
    ensure_workspace(T, std::max(R, 1));
    {  // Attention launch plan for this batch shape (decode: split keys over blocks) and its scratch.
        int max_q = 0;
        for (int i = 0; i < n_seqs; ++i) max_q = std::max(max_q, seqs[i].n_tokens);
        attn_plan_ = plan_attention(T, c.num_key_value_heads, max_q);
        const size_t need = attention_scratch_floats(T, c.num_attention_heads, c.head_dim, attn_plan_);
        if (need > attn_part_cap_) {
            MS_CUDA(cudaStreamSynchronize(stream_));
            drop_graphs();
            if (attn_part_) cudaFree(attn_part_);
            attn_part_ = nullptr;
            attn_part_cap_ = std::max(need, 2 * attn_part_cap_);
            MS_CUDA(cudaMalloc(reinterpret_cast<void **>(&attn_part_), attn_part_cap_ * sizeof(float)));
            MS_CUDA(cudaMemsetAsync(attn_part_, 0, attn_part_cap_ * sizeof(float), stream_));  // split counters
        }
        if (!mm_split_) MS_CUDA(cudaMalloc(reinterpret_cast<void **>(&mm_split_), gemm_split_scratch_floats() * sizeof(float)));
    }
    MS_CUDA(cudaMemcpyAsync(d_step_, pinned_, hs.size() * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
    bool decode = what != Output::AllLogits && R == T;
    for (int i = 0; i < n_seqs && decode; ++i) decode = seqs[i].n_tokens == 1;
    if (decode && opt_.cuda_graphs && !opt_.profile) {
        GraphKey key{T, int(what), kv.bf16, kv.block_size, {kv.k[0], kv.v[0], kv.k[1], kv.v[1]}};
        cudaGraphExec_t exec = nullptr;
        for (auto &g : graphs_)
            if (!(g.first < key) && !(key < g.first)) exec = g.second;
        if (!exec) {
            cudaGraph_t graph = nullptr;
            MS_CUDA(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
            try {
                enqueue(T, R, n_seqs, kv, what, off_at, tables_at);
            } catch (...) {
                cudaStreamEndCapture(stream_, &graph);
                if (graph) cudaGraphDestroy(graph);
                throw;
            }
            MS_CUDA(cudaStreamEndCapture(stream_, &graph));
            const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
            cudaGraphDestroy(graph);
            MS_CUDA(err);
            graphs_.push_back({key, exec});
        }
        MS_CUDA(cudaGraphLaunch(exec, stream_));
    } else {
        enqueue(T, R, n_seqs, kv, what, off_at, tables_at);
    }
    if (R > 0) {
        if (what == Output::Greedy)
            MS_CUDA(cudaMemcpyAsync(host_out, ids_, size_t(R) * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
        else if (what == Output::Sample) {
            MS_CUDA(cudaMemcpyAsync(host_out, ids_, size_t(R) * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
            // The kHost rows' logits, compacted: one copy per run of consecutive host rows.
            const size_t row_bytes = size_t(c.vocab_size) * sizeof(float);
            int k = 0;
            for (int r = 0; r < R;) {
                if (sampling[r].mode == DeviceSampling::kGreedy || sampling[r].mode == DeviceSampling::kTemperature) {
                    ++r;
                    continue;
                }
                int e = r + 1;
                while (e < R && sampling[e].mode != DeviceSampling::kGreedy && sampling[e].mode != DeviceSampling::kTemperature) ++e;
                MS_CUDA(cudaMemcpyAsync(reinterpret_cast<char *>(host_logits) + size_t(k) * row_bytes,
                                        reinterpret_cast<const char *>(logits_) + size_t(r) * row_bytes,
                                        size_t(e - r) * row_bytes, cudaMemcpyDeviceToHost, stream_));
                k += e - r;
                r = e;
            }
        } else
            MS_CUDA(cudaMemcpyAsync(host_out, logits_, size_t(R) * c.vocab_size * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    }
    MS_CUDA(cudaStreamSynchronize(stream_));  // the step's one host synchronisation
    if (opt_.profile) {
        float ms = 0;
        for (size_t i = 0; i + 1 < profile_marks_.size(); ++i) {
            MS_CUDA(cudaEventElapsedTime(&ms, events_[i], events_[i + 1]));
            profile_.ms[profile_marks_[i + 1]] += ms;
        }
        ++profile_.steps;
    }
}

void CudaExecutor::enqueue(int T, int R, int n_seqs, const KvStorage &kv, Output what, size_t off_at, size_t tables_at) {
    const ModelConfig &c = model_->config();
    const KvSpec &spec = kv_spec();
    const int H = c.hidden_size, hd = c.head_dim, nh = c.num_attention_heads, nkv = c.num_key_value_heads;
    const int QD = nh * hd, KVD = nkv * hd, QKV = QD + 2 * KVD, V = c.vocab_size;
    const float eps = float(c.rms_norm_eps);
    profile_marks_.clear();
    auto mark = [&](int stage) {  // stage = what the interval ending here was spent on
        if (!opt_.profile) return;
        const size_t i = profile_marks_.size();
        if (i >= events_.size()) {
            cudaEvent_t e;
            MS_CUDA(cudaEventCreate(&e));
            events_.push_back(e);
        }
        MS_CUDA(cudaEventRecord(events_[i], stream_));
        profile_marks_.push_back(stage);
    };
    mark(0);
    const int32_t *d_tokens = d_step_, *d_pos = d_step_ + T, *d_seq = d_step_ + 2 * T, *d_rows = d_step_ + 3 * T;
    const int32_t *d_table_off = d_step_ + off_at, *d_tables = d_step_ + tables_at;

    const cudaStream_t s = stream_;
    const bool exact = opt_.exact_matmul;
    embedding(model_->embed, d_tokens, T, H, x_, s);
    rope_cos_sin(d_pos, T, model_->inv_freq, model_->rope_concentration, hd, cs_, s);
    mark(0);
    const float scale = 1.0f / std::sqrt(float(hd));
    const bool fuse_moe_norm = opt_.moe_norm_fused && moe_norm_fused_switch();
    const bool l2_prefetch = l2_prefetch_on(opt_.l2_prefetch) && T <= kL2PrefetchMaxTokens;
    const bool l2_keep = l2_prefetch_last_switch();
    auto qkv_ranges = [&](const DeviceLayer &L, L2Range *out) {
        out[0] = L2Range{L.qkv_w, size_t(QKV) * H * sizeof(uint16_t)};
        out[1] = L.qkv_b ? L2Range{L.qkv_b, size_t(QKV) * sizeof(float)} : L2Range{};
    };
    for (int l = 0; l < c.num_hidden_layers; ++l) {
        const DeviceLayer &L = model_->layers[l];
        const int g = spec.layer_group[l];
        PagedKv pk;
        pk.k = kv.k[g];
        pk.v = kv.v[g];
        pk.bf16 = kv.bf16;
        pk.block_size = kv.block_size;
        pk.block_stride = (long long)kv.layers_in_group[g] * kv.block_size * KVD;
        pk.layer_off = (long long)spec.layer_index_in_group[l] * kv.block_size * KVD;
        pk.tables = d_tables;
        pk.table_off = d_table_off + size_t(g) * n_seqs;

        if (l == 0) rmsnorm(x_, nullptr, T, H, L.attn_norm, eps, h_, s);  // later layers: by the previous MoE combine
        if (!debug_skip(SkipStage::kQkv, T))
            matmul_bf16(h_, T, H, L.qkv_w, L.qkv_b, QKV, qkv_, false, exact, xb_, mm_split_, s);
        if (!debug_skip(SkipStage::kRope, T)) rope_and_kv_write(qkv_, T, nh, nkv, hd, cs_, d_pos, d_seq, pk, s);
        mark(1);
        if (!debug_skip(SkipStage::kAttn, T))
            paged_attention(qkv_, T, nh, nkv, hd, L.sinks, scale, c.is_sliding(l) ? c.sliding_window : 0, d_pos, d_seq,
                            pk, attn_, attn_plan_, attn_part_, s);
        mark(2);
        if (!debug_skip(SkipStage::kO, T)) matmul_bf16(attn_, T, QD, L.o_w, L.o_b, H, x_, true, exact, xb_, mm_split_, s);
        mark(3);
        MoeInputNorm in_norm;
        if (fuse_moe_norm) in_norm = MoeInputNorm{L.mlp_norm, eps};  // the router norms x_ itself
        else rmsnorm(x_, nullptr, T, H, L.mlp_norm, eps, h_, s);
        MoeNextNorm next;
        if (l + 1 < c.num_hidden_layers) next = MoeNextNorm{model_->layers[l + 1].attn_norm, eps, h_};
        MoeL2Prefetch hints;
        if (l2_prefetch) {
            // The next layer's qkv GEMV then reads its weights from L2. This layer's were fetched (kept) by the
            // previous MoE and have been read since: back to normal priority.
            if (l + 1 < c.num_hidden_layers) qkv_ranges(model_->layers[l + 1], hints.fetch);
            if (l > 0 && l2_keep) qkv_ranges(L, hints.release);
            hints.keep = l2_keep;
        }
        moe_forward(L.moe, fuse_moe_norm ? x_ : h_, T, x_, moe_ws_, s, next, in_norm, hints);
        mark(4);
    }
    if (R > 0) {
        rmsnorm(x_, d_rows, R, H, model_->final_norm, eps, fin_, s);
        if (!debug_skip(SkipStage::kLmHead, T))
            matmul_bf16(fin_, R, H, model_->lm_head, nullptr, V, logits_, false, exact, xb_, mm_split_, s);
        if (what == Output::Greedy) argmax_rows(logits_, R, V, ids_, s);
        if (what == Output::Sample) sample_rows(logits_, R, V, d_rows + R, ids_, sample_part_, s);
    }
    mark(5);
}

}  // namespace ms::cuda
