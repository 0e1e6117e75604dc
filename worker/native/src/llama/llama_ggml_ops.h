// The llama forward's operations in the arithmetic of llama.cpp's CPU backend (ggml-cpu as llama-cpp-python 0.3.36
// builds it with -march=native, -O3 and GCC's default -ffp-contract=fast, for an AVX2+FMA CPU or for an AVX-512 one),
// so that our greedy tokens equal llama.cpp's: both sides quantize every matmul input to int8 per 32-block, and that rounding turns any last-bit
// difference upstream into a visible one. Each function here reproduces one ggml operation's order of float
// operations, roundings and fused multiply-adds (re-derived from ggml's source and the built library's machine code,
// not copied). Every function has an AVX2 path (Simd::Avx2 and up) and a scalar twin with the same operation order;
// the two agree bit for bit (tests/llama_ggml_ops_test.cc). This file is compiled with -ffp-contract=off: the only
// fused multiply-adds are the explicit ones.
//
// Model-level choices (which op ggml runs where) are in llama_model.cc; see docs/slm.md, "llama.cpp numerics".
#pragma once

#include <cstdint>

#include "cpu/attention.h"
#include "cpu/quant_matmul.h"
#include "cpu/simd.h"

namespace ms {
namespace ggml_ops {

// Which ggml-cpu build to reproduce. Both run the quantized dot products, RMSNorm and RoPE alike; they differ in the
// f32 vector width of attention (ggml_vec_dot_f32, soft_max, tinyBLAS) and SwiGLU, and in their expf: the AVX-512
// build's (vscalefps) is not the AVX2 build's. testdata/smollm2/greedy.json was made by an AVX-512 build.
enum class GgmlBuild { Avx2, Avx512 };
// ggml_vec_dot_f32 runs 4 registers of 8 or 16 lanes; other head sizes would take its scalar tail (not emulated).
inline int head_dim_multiple(GgmlBuild b) { return b == GgmlBuild::Avx2 ? 32 : 64; }

// One lane of ggml's vectorised expf (ggml_v_expf: Cody-Waite reduction by ln 2, degree-5 polynomial, explicit
// handling of |n| > 126). Differs from libm's expf in the last bits; exp(-inf) = 0.
float expf_lane(float x);
// One lane of the AVX-512 build's ggml_v_expf: j * 2^n by vscalefps, |n| > 192 saturated to 0 or inf.
float expf_lane512(float x);

// ggml_vec_swiglu_f32 over a row of n: out = x / (1 + exp(0 - x)) * g with the build's vector expf in whole groups
// of 8 (AVX2) or 16 (AVX-512) from the row start, libm expf for the rest.
void swiglu_row(Simd s, GgmlBuild build, const float *x, const float *g, float *out, int n);

// RoPE "normal" mode cache and rotation as ggml-cpu: theta starts at pos and is multiplied by theta_scale (powf) per
// pair, sincosf; then out0 = fma(x0, cos, -(x1 sin)), out1 = fma(x0, sin, x1 cos) (GCC's contraction of
// x0*cos - x1*sin and x0*sin + x1*cos).
void rope_cache(int pos, float theta_base, int rope_dims, float *cos_sin);
void rope_pairs(const float *cos_sin, float *x, int n_heads, int head_dim, int rope_dims);

// ggml_vec_dot_q4_1_q8_1 / ggml_vec_dot_q8_0_q8_0 (AVX2 build) for rows [r0, r1) of a Q4_1 or Q8_0 matrix and n_tok
// quantized activation rows: per 32-block an exact int32 sum for each group of 4 elements (8 lanes), accumulated as
// fma(d_w * d_a, lane, acc) in float, then a fixed horizontal sum; Q4_1 adds sum fma(m_w, s_a) after it.
// y[t * ldy + r]. Other weight types throw MS_ERR_INTERNAL (the model refuses them at load in this mode).
void matmul_rows(Simd s, WeightType t, const uint8_t *w, int K, const Q8Rows &xq, int n_tok, int r0, int r1, float *y,
                 int64_t ldy);

// Attention of one token for the n_q_heads query heads of one KV head over positions [0, last] of the paged cache,
// as ggml's non-flash path with W = 8 (AVX2) or 16 (AVX-512) lanes: kq = ggml_vec_dot_f32(k, q) (4 x W
// accumulators), soft_max_ext (scale, max, the build's expf in groups of W positions from 0, each group's sum added
// into a double, times float(1/sum)), then kqv either as ggml_vec_dot_f32 over the positions (a one-token ubatch:
// `batched` false) or as llamafile's tinyBLAS F32 kernel (one W-lane accumulator; a ubatch of 2 or more tokens:
// `batched` true). head_dim % head_dim_multiple(build) == 0, head_dim <= 256.
void attend_paged(Simd s, GgmlBuild build, const float *q, int n_q_heads, int head_dim, float scale,
                  const PagedKvView &kv, int last, bool batched, float *out);

}  // namespace ggml_ops
}  // namespace ms
