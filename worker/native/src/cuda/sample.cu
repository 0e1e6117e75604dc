// Sampling on the device: one block per logits row (or per chunk of a row, when few rows would leave SMs idle) picks
// the row's token, so a serving step returns token ids (4 bytes per sequence) instead of vocabulary-wide rows of
// logits. Per row (4 ints from sample_row_params, staged by the executor):
//   greedy       argmax, lowest index on ties (the CPU sampler's greedy pick);
//   temperature  an exact draw from softmax(logits / T) by the Gumbel-max trick: argmax_i (logits_i / T + G_i),
//                G_i = -log(E_i), E_i = -log1p(-U_i) ~ Exp(1), U_i from SplitMix64 of (row seed, i). Computed as
//                logits_i + T * G_i when T < 1 (same argmax, no overflow of logits / T);
//   host         nothing (the executor copies that row's logits back), ids[r] = -1.
// Deterministic: the result is the largest key with the lowest index on ties, whatever order the reduction takes,
// and the noise of element i depends only on (seed, i), never on the launch shape or the batch.
#include <algorithm>
#include <cstring>

#include "cuda/best_index.cuh"
#include "cuda/cuda_check.cuh"
#include "cuda/kernels.cuh"
#include "cuda/pdl.cuh"

namespace ms::cuda {

namespace {
constexpr unsigned long long kGamma = 0x9e3779b97f4a7c15ULL;

__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// G = -log(E), E ~ Exp(1) from 64 random bits. U = (h >> 11 + 1/2) 2^-53 in (0, 1]: fine resolution near 0, where
// E = -log1p(-U) ~ U is small and decides the winner; U rounding to 1 gives E = inf, G = -inf (a key that never wins).
__device__ __forceinline__ float gumbel(unsigned long long h) {
    const float u = fmaf(__ull2float_rn(h >> 11), 0x1p-53f, 0x1p-54f);
    const float e = -log1pf(-u);
    return -logf(e);
}

__device__ __forceinline__ bool device_mode(int mode) { return mode == kSampleGreedy || mode == kSampleTemperature; }

// Block (r, c) (rows on x: up to 2^31 - 1 of them): the best key of row r over [c * chunk, min(V, (c + 1) * chunk)).
// With one chunk per row it writes the token; otherwise the partial (key, index) for sample_final_kernel.
__global__ void __launch_bounds__(1024) sample_kernel(const float *logits, int V, const int32_t *params, int chunk,
                                                      float *part_v, int *part_i, int32_t *ids) {
    pdl_wait();
    pdl_trigger();
    const int r = blockIdx.x, c = blockIdx.y, chunks = gridDim.y;
    const int mode = params[4 * r];
    if (!device_mode(mode)) {
        if (chunks == 1 && threadIdx.x == 0) ids[r] = -1;
        return;  // the whole block: no barrier reached
    }
    const float *row = logits + (long long)r * V;
    const int begin = c * chunk, end = min(V, begin + chunk);
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    if (mode == kSampleGreedy) {
        for (int i = begin + threadIdx.x; i < end; i += blockDim.x) {
            const float v = row[i];
            if (better(v, i, bv, bi)) bv = v, bi = i;
        }
    } else {
        const float T = __int_as_float(params[4 * r + 1]);
        const unsigned long long seed =
            (unsigned long long)(uint32_t)params[4 * r + 2] | ((unsigned long long)(uint32_t)params[4 * r + 3] << 32);
        const bool small_t = T < 1.f;
        const float inv_t = 1.f / T;
        // Element i's bits: SplitMix64 output for state seed + (i + 1) * gamma (independent of the launch shape).
        unsigned long long state = seed + (unsigned long long)(begin + threadIdx.x + 1) * kGamma;
        const unsigned long long stride = (unsigned long long)blockDim.x * kGamma;
        for (int i = begin + threadIdx.x; i < end; i += blockDim.x, state += stride) {
            const float g = gumbel(mix64(state));
            const float l = row[i];
            const float v = small_t ? fmaf(T, g, l) : fmaf(l, inv_t, g);
            if (better(v, i, bv, bi)) bv = v, bi = i;
        }
    }
    block_best(bv, bi);
    if (threadIdx.x == 0) {
        if (chunks == 1) {
            ids[r] = bi == 0x7fffffff ? 0 : bi;
        } else {
            part_v[r * chunks + c] = bv;
            part_i[r * chunks + c] = bi;
        }
    }
}

// One warp per row: the best of the row's chunk partials (same order and tie rule, so the same token as one chunk).
__global__ void sample_final_kernel(const int32_t *params, int chunks, const float *part_v, const int *part_i,
                                    int32_t *ids) {
    pdl_wait();
    pdl_trigger();
    const int r = blockIdx.x, lane = threadIdx.x;
    if (!device_mode(params[4 * r])) {
        if (lane == 0) ids[r] = -1;
        return;
    }
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int c = lane; c < chunks; c += 32)
        if (better(part_v[r * chunks + c], part_i[r * chunks + c], bv, bi)) bv = part_v[r * chunks + c], bi = part_i[r * chunks + c];
    warp_best(bv, bi);
    if (lane == 0) ids[r] = bi == 0x7fffffff ? 0 : bi;
}

constexpr int kMaxChunks = 32, kMinChunk = 8192;

int chunks_for(int n_rows, int V) {
    const int by_sms = (2 * cuda_sm_count() + n_rows - 1) / n_rows;
    const int by_len = (V + kMinChunk - 1) / kMinChunk;
    return std::max(1, std::min({by_sms, by_len, kMaxChunks}));
}
}  // namespace

size_t sample_scratch_floats(int n_rows) { return size_t(std::max(n_rows, 0)) * kMaxChunks * 2; }

void sample_rows(const float *logits, int n_rows, int V, const int32_t *params, int32_t *ids, float *scratch,
                 cudaStream_t s) {
    if (n_rows <= 0) return;
    const int chunks = scratch ? chunks_for(n_rows, V) : 1;
    const int chunk = (V + chunks - 1) / chunks;
    float *part_v = scratch;
    int *part_i = scratch ? reinterpret_cast<int *>(scratch + size_t(n_rows) * kMaxChunks) : nullptr;
    launch_maybe_pdl(sample_kernel, dim3(n_rows, chunks), dim3(1024), 0, s, logits, V, params, chunk, part_v, part_i, ids);
    check_launch("sample_rows");
    if (chunks > 1) {
        launch_maybe_pdl(sample_final_kernel, dim3(n_rows), dim3(32), 0, s, params, chunks, (const float *)part_v,
                         (const int *)part_i, ids);
        check_launch("sample_rows (final)");
    }
}

void sample_row_params(int mode, float temperature, uint64_t seed, int32_t out[4]) {
    out[0] = mode;
    std::memcpy(&out[1], &temperature, sizeof(float));
    out[2] = int32_t(uint32_t(seed));
    out[3] = int32_t(uint32_t(seed >> 32));
}

}  // namespace ms::cuda
