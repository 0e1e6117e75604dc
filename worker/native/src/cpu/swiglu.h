// gpt-oss SwiGLU on interleaved gate_up rows (even = gate, odd = linear):
//   g = min(gate, limit), u = clamp(linear, -limit, limit), out = g * sigmoid(alpha * g) * (u + 1).
// Scalar only: it costs O(intermediate) per token against O(intermediate * hidden) for the matrices around it.
#pragma once

namespace ms {

void swiglu_interleaved(const float *gate_up, int n_out, float limit, float alpha, float *out);

}  // namespace ms
