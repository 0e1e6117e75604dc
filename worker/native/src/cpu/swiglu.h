// gpt-oss SwiGLU on interleaved gate_up rows (even = gate, odd = linear):
//   g = min(gate, limit), u = clamp(linear, -limit, limit), out = g * sigmoid(alpha * g) * (u + 1).
// It costs O(intermediate) per token against O(intermediate * hidden) for the matrices around it, but at batch 32
// the scalar loop (one libm expf per element) was ~7 % of an fp16 decode step, so AVX-512 runs 16 elements at a
// time where the CPU has it (active_simd(): MS_SIMD=scalar forces the scalar loop). Its exp is a degree-7 Taylor
// polynomial after range reduction by ln 2 (inf above ~88.7, 0 / subnormals below); min/clamp/NaN behave as
// std::min/std::clamp do. The SIMD result is not bit-identical to the scalar one (libm expf): over 2^20 random
// inputs it was within 3.7e-7 relative (about 3 ulp; tests/test_kernels_layers.cc checks 5e-7). Each element is
// computed on its own either way, so batching never changes a result.
#pragma once

namespace ms {

void swiglu_interleaved(const float *gate_up, int n_out, float limit, float alpha, float *out);
// The scalar loop, whatever the CPU (the reference of the tests).
void swiglu_interleaved_scalar(const float *gate_up, int n_out, float limit, float alpha, float *out);

}  // namespace ms
