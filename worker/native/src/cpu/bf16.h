// bf16 <-> fp32. bf16 is the upper half of an fp32; conversion to bf16 rounds to nearest even (NaN stays NaN).
#pragma once

#include <cstdint>
#include <cstring>

#include "cpu/simd.h"

namespace ms {

inline float bf16_to_f32(uint16_t h) {
    uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
}

void bf16_to_f32_n(Simd s, const uint16_t *in, float *out, int64_t n);
void f32_to_bf16_n(Simd s, const float *in, uint16_t *out, int64_t n);

}  // namespace ms
