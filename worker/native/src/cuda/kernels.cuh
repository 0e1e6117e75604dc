// Launchers of the CUDA backend's kernels (one kernel per .cu file next to this header). All are asynchronous on the
// given stream, allocate nothing and never synchronise, so a decode step can be captured as a CUDA graph.
// Activations are fp32 row-major [tokens][width]; weights are bf16 (uint16 bit patterns) as in the checkpoint.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace ms::cuda {

// x[t][:] = embed[tokens[t]][:] (bf16 -> fp32).
void embedding(const uint16_t *embed, const int32_t *tokens, int n_tokens, int hidden, float *x, cudaStream_t s);

// out[r][:] = x[rows ? rows[r] : r][:] * rsqrt(mean(x^2) + eps) * gain[:]  for r < n_rows.
void rmsnorm(const float *x, const int32_t *rows, int n_rows, int width, const float *gain, float eps, float *out,
             cudaStream_t s);

// Dense bf16 projection with fp32 activations: out[t][r] (+)= sum_k x[t][k] * w[r][k] + bias[r].
// `accumulate` adds into out (the residual stream). K must be a multiple of 8.
// Exact path (fp32 activations, any T) and the tensor-core path (activations rounded to bf16; for T > 8) are chosen
// by matmul_bf16 unless `exact` forces the former.
// split_scratch (gemm_split_scratch_floats() floats, or nullptr): lets the tensor-core path split K over several
// blocks when the output tiles alone would leave SMs idle (small batches); partial sums are added in a fixed order.
void matmul_bf16(const float *x, int T, int K, const uint16_t *w, const float *bias, int N, float *out,
                 bool accumulate, bool exact, uint16_t *x_bf16_scratch, float *split_scratch, cudaStream_t s);
void matmul_bf16(const float *x, int T, int K, const uint16_t *w, const float *bias, int N, float *out,
                 bool accumulate, bool exact, uint16_t *x_bf16_scratch, cudaStream_t s);
void gemv_bf16(const float *x, int T, int K, const uint16_t *w, const float *bias, int N, float *out, bool accumulate,
               cudaStream_t s);
void gemm_bf16_tc(const float *x, int T, int K, const uint16_t *w, const float *bias, int N, float *out,
                  bool accumulate, uint16_t *x_bf16_scratch, float *split_scratch, cudaStream_t s);
void gemm_bf16_tc(const float *x, int T, int K, const uint16_t *w, const float *bias, int N, float *out,
                  bool accumulate, uint16_t *x_bf16_scratch, cudaStream_t s);
size_t gemm_split_scratch_floats();

// cos_sin[t][2i], [2i+1] = cos/sin(pos[t] * inv_freq[i]) * concentration for i < head_dim/2 (the CPU's rope_cos_sin).
void rope_cos_sin(const int32_t *pos, int n_tokens, const float *inv_freq, float concentration, int head_dim,
                  float *cos_sin, cudaStream_t s);

// Where token t's K/V go and which keys it reads: block table of its sequence in one group.
struct PagedKv {
    void *k = nullptr, *v = nullptr;  // the group's storage [blocks][layers_in_group][block_size][kv_dim]
    bool bf16 = false;
    int block_size = 16;
    long long block_stride = 0;  // elements between blocks: layers_in_group * block_size * kv_dim
    long long layer_off = 0;     // elements: layer_index_in_group * block_size * kv_dim
    const int32_t *tables = nullptr;       // all sequences' tables of this group, concatenated
    const int32_t *table_off = nullptr;    // [n_seqs]: where sequence i's table starts in `tables`
};

// qkv: [T][(nh + 2 nkv) * hd] as projected. Rotates q and k in place (NeoX half split) and writes k and v at their
// cache slots (positions pos[t] of sequence seq[t]).
void rope_and_kv_write(float *qkv, int T, int nh, int nkv, int hd, const float *cos_sin, const int32_t *pos,
                       const int32_t *seq, const PagedKv &kv, cudaStream_t s);

// Paged attention with per-head sinks and an optional sliding window: token t (sequence seq[t], position pos[t])
// attends keys max(0, pos - window + 1) .. pos (window 0 = full causal). out: [T][nh * hd].
// The plan: query_tile consecutive tokens per block (8 for prefill chunks: runs of one sequence share each staged key
// tile; 1 for decode) and, for decode, `splits` blocks per (token, kv head) over the key range (flash-decoding; needs
// attention_scratch_floats(...) floats of scratch, ZEROED before its first use: it holds counters that each launch
// leaves at zero again). plan_attention picks it from the batch shape only, so a captured graph stays valid at any
// position. Without a plan: one block per (token, kv head), no split.
// tensor_cores (prefill steps): the tensor-core kernel below when it supports the shape, else the query_tile kernel.
struct AttentionPlan {
    int query_tile = 1;
    int splits = 1;
    bool tensor_cores = false;
};
AttentionPlan plan_attention(int T, int nkv, int max_tokens_per_seq);
size_t attention_scratch_floats(int T, int nh, int hd, const AttentionPlan &p);
void paged_attention(const float *qkv, int T, int nh, int nkv, int hd, const float *sinks, float scale, int window,
                     const int32_t *pos, const int32_t *seq, const PagedKv &kv, float *out, const AttentionPlan &plan,
                     float *scratch, cudaStream_t s);
void paged_attention(const float *qkv, int T, int nh, int nkv, int hd, const float *sinks, float scale, int window,
                     const int32_t *pos, const int32_t *seq, const PagedKv &kv, float *out, cudaStream_t s);

// Tensor-core (mma.sync bf16, fp32 accumulate) flash attention for prefill / chunked-prefill steps, same contract as
// paged_attention; q and the softmax weights are rounded to bf16 (attention_prefill.cu). Blocks of 128 / G
// consecutive tokens times the G heads of a kv head. Supported: head_dim 64, bf16 cache, nh / nkv <= 128 (else it
// throws MS_ERR_UNSUPPORTED; paged_attention falls back to the CUDA-core kernel instead).
bool prefill_attention_supported(int nh, int nkv, int hd, const PagedKv &kv);
void paged_attention_prefill(const float *qkv, int T, int nh, int nkv, int hd, const float *sinks, float scale,
                             int window, const int32_t *pos, const int32_t *seq, const PagedKv &kv, float *out,
                             cudaStream_t s);

// Streaming multiprocessors of the current device (queried once).
int cuda_sm_count();

// ids[r] = argmax over logits[r][0..V) (lowest index on ties, as std::max_element).
void argmax_rows(const float *logits, int n_rows, int V, int32_t *ids, cudaStream_t s);

// Device sampling (sample.cu): ids[r] = the token of logits row r per params[4r .. 4r+3] = {mode, temperature (float
// bits), seed low, seed high} as written by sample_row_params. kSampleGreedy: argmax (lowest index on ties);
// kSampleTemperature: exact draw from softmax(logits / T) by Gumbel-max with noise from SplitMix64(seed, index);
// any other mode: ids[r] = -1 (a row sampled on the host). Deterministic; graph-capturable (params read on the device).
// scratch (sample_scratch_floats(n_rows) floats, or nullptr): lets few rows split over several blocks each (chunk
// partials reduced by a second kernel); the chunking depends on (n_rows, V) only and never changes the result.
constexpr int kSampleGreedy = 1, kSampleTemperature = 2;
size_t sample_scratch_floats(int n_rows);
void sample_rows(const float *logits, int n_rows, int V, const int32_t *params, int32_t *ids, float *scratch,
                 cudaStream_t s);
void sample_row_params(int mode, float temperature, uint64_t seed, int32_t out[4]);

// Synthetic weights: deterministic pseudo-random fill on the device from (seed, index).
void fill_bf16_uniform(uint16_t *p, long long n, float scale, uint64_t seed, cudaStream_t s);
void fill_f32_uniform(float *p, long long n, float offset, float scale, uint64_t seed, cudaStream_t s);
// MXFP4: random nibbles; scales (E8M0) drawn from [scale_lo, scale_hi].
void fill_u8_uniform(uint8_t *p, long long n, int lo, int hi, uint64_t seed, cudaStream_t s);

}  // namespace ms::cuda
