// ggml block-quantized weight formats (as stored in GGUF) and the per-block int8 form activations take before a
// quantized dot product. Each weight row of K elements is K/32 consecutive blocks:
//   Q4_0 (18 bytes): fp16 d, 16 bytes of nibbles; element j = d * (q_j - 8)
//   Q4_1 (20 bytes): fp16 d, fp16 m, 16 bytes;     element j = d * q_j + m
//   Q8_0 (34 bytes): fp16 d, 32 int8;              element j = d * q_j
// In the 4-bit formats byte i holds element i in its low nibble and element i + 16 in its high nibble.
#pragma once

#include <cstdint>
#include <cstring>

namespace ms {

constexpr int kQuantBlock = 32;

// IEEE half <-> float, exact for every half (subnormals, inf, NaN); float -> half rounds to nearest even.
inline float fp16_to_f32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0x1f) bits = sign | 0x7f800000u | (mant << 13);
    else if (exp != 0) bits = sign | ((exp + 112) << 23) | (mant << 13);
    else if (mant == 0) bits = sign;
    else {  // subnormal: normalise
        int e = -1;
        do { ++e; mant <<= 1; } while (!(mant & 0x400));
        bits = sign | uint32_t(112 - e) << 23 | ((mant & 0x3ff) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline uint16_t f32_to_fp16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000;
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return uint16_t(sign | 0x7e00);  // NaN
    if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00);  // rounds to inf
    if (ax < 0x38800000u) {  // subnormal or zero in half: scale into the integer range and round to nearest even
        float a;
        std::memcpy(&a, &ax, 4);
        const float scaled = a * 16777216.0f;  // 2^24: one half subnormal ulp becomes 1
        uint32_t m = uint32_t(scaled);
        const float frac = scaled - float(m);
        if (frac > 0.5f || (frac == 0.5f && (m & 1))) ++m;
        return uint16_t(sign | m);
    }
    uint32_t m = ax + 0xc8000fffu + ((ax >> 13) & 1);  // rebias exponent (-112 << 23) and round to nearest even
    return uint16_t(sign | (m >> 13));
}

// Activations of one row quantized to int8 per 32-block (structure of arrays, so a run of blocks' int8 values is
// contiguous): qs[b*32 + j], d[b] = fp16-rounded scale, sum[b] = sum of the block's qs, s[b] = fp16-rounded d * sum
// (unrounded d), exactly the numbers llama.cpp's Q8_0/Q8_1 activation blocks carry.
struct Q8Row {
    int8_t *qs = nullptr;
    float *d = nullptr;
    float *s = nullptr;
    int32_t *sum = nullptr;
};

}  // namespace ms
