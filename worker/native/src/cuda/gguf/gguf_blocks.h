// How the CUDA GGUF matrix kernels read one 32-element block of a weight row, as __host__ __device__ functions: the
// kernels (gguf_kernels.cuh) call exactly these, and a plain CPU test (tests/gguf_blocks_test.cc, no GPU) checks them
// against the CPU engine's scalar dequantization (cpu/quant_types.h, quant_matmul.cc) for every type.
//
// A block (layouts in cpu/quant_types.h; float types: 32 consecutive values) is read as 4 slices of 8 elements. Slice
// s of a 4-bit block is the qs word at bytes 4s..4s+3: its low nibbles are elements 4s..4s+3, its high nibbles
// elements 16+4s..16+4s+3; slice s of Q8_0 and of the float types is elements 8s..8s+7. Either way a slice is two runs
// of 4 consecutive elements, starting at elem(s, 0) and elem(s, 4), so the activations of a slice are two aligned
// float4 loads. quants() gives the slice's 8 values before scaling, in the order of elem(s, 0..7); the weight is
// scale() * q + min() exactly as the CPU computes it (Q4_0: d (q - 8), Q4_1: d q + m, Q8_0: d q, float types: q).
//
// Alignment the callers guarantee: a block pointer is 2-byte aligned for Q4_0 and Q8_0 (18- and 34-byte blocks),
// 4-byte aligned for Q4_1 and 16-byte aligned for the float types (rows of K % 32 == 0 elements from a 16-byte
// aligned tensor).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define MS_GGUF_HD __host__ __device__ __forceinline__
#else
#define MS_GGUF_HD inline
#endif

#if !defined(__CUDA_ARCH__)
#include "cpu/quant_types.h"
#endif

#if defined(__CUDA_ARCH__)
#define MS_GGUF_UNROLL _Pragma("unroll")
#else
#define MS_GGUF_UNROLL
#endif

namespace ms::gguf {

// 2-byte aligned 16-bit load, and 32-bit loads from 2- or 4-byte aligned addresses.
MS_GGUF_HD uint16_t ld_u16(const uint8_t *p) {
#if defined(__CUDA_ARCH__)
    return *reinterpret_cast<const uint16_t *>(p);
#else
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
#endif
}
MS_GGUF_HD uint32_t ld_u32_a2(const uint8_t *p) {
#if defined(__CUDA_ARCH__)
    const uint16_t *h = reinterpret_cast<const uint16_t *>(p);
    return uint32_t(h[0]) | uint32_t(h[1]) << 16;
#else
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
#endif
}
MS_GGUF_HD uint32_t ld_u32_a4(const uint8_t *p) {
#if defined(__CUDA_ARCH__)
    return *reinterpret_cast<const uint32_t *>(p);
#else
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
#endif
}
// Four 32-bit words from a 16-byte aligned address (one 16-byte load on the device).
MS_GGUF_HD void ld_u32x4_a16(const uint8_t *p, uint32_t w[4]) {
#if defined(__CUDA_ARCH__)
    const uint4 v = *reinterpret_cast<const uint4 *>(p);
    w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
#else
    std::memcpy(w, p, 16);
#endif
}

MS_GGUF_HD float bits_to_f32(uint32_t b) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(b);
#else
    float f;
    std::memcpy(&f, &b, 4);
    return f;
#endif
}

MS_GGUF_HD float half_to_f32(uint16_t h) {
#if defined(__CUDA_ARCH__)
    return __half2float(__ushort_as_half(h));  // exact (IEEE half -> float), like ms::fp16_to_f32
#else
    return ms::fp16_to_f32(h);
#endif
}

// Byte i (0..3) of v as the float 2^23 + byte: adding -2^23 - bias then gives byte - bias exactly, with one byte
// permute and one add instead of an integer-to-float conversion (a quarter-rate instruction).
MS_GGUF_HD float byte_magic(uint32_t v, int i) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(__byte_perm(v, 0x4B000000u, 0x7440u | unsigned(i)));  // bytes {v.i, 0, 0, 0x4B}
#else
    return bits_to_f32(0x4B000000u | ((v >> (8 * i)) & 0xffu));
#endif
}
constexpr float kMagic = 8388608.0f;  // 2^23

// The 4-bit layouts: slice s holds elements 4s..4s+3 (low nibbles) and 16+4s..16+4s+3 (high nibbles).
MS_GGUF_HD int elem_4bit(int s, int i) { return i < 4 ? 4 * s + i : 12 + 4 * s + i; }
// Q8_0 and the float types: slice s holds elements 8s..8s+7.
MS_GGUF_HD int elem_linear(int s, int i) { return 8 * s + i; }

// The 8 nibbles of a qs word as floats q - bias, in elem_4bit order.
MS_GGUF_HD void nibbles(uint32_t qw, float bias, float q[8]) {
    const uint32_t lo = qw & 0x0f0f0f0fu, hi = (qw >> 4) & 0x0f0f0f0fu;
    const float c = -(kMagic + bias);  // exact: bias <= 8
MS_GGUF_UNROLL
    for (int i = 0; i < 4; ++i) {
        q[i] = byte_magic(lo, i) + c;
        q[4 + i] = byte_magic(hi, i) + c;
    }
}
// Four int8 of a word as floats.
MS_GGUF_HD void int8x4(uint32_t w, float q[4]) {
    const uint32_t u = w ^ 0x80808080u;  // int8 q -> unsigned q + 128
MS_GGUF_UNROLL
    for (int i = 0; i < 4; ++i) q[i] = byte_magic(u, i) - (kMagic + 128.0f);
}

struct FmtQ4_0 {
    static constexpr int kBytes = 18;
    static constexpr bool kHasMin = false;
    MS_GGUF_HD static int elem(int s, int i) { return elem_4bit(s, i); }
    MS_GGUF_HD static float scale(const uint8_t *blk) { return half_to_f32(ld_u16(blk)); }
    MS_GGUF_HD static float min(const uint8_t *) { return 0.0f; }
    MS_GGUF_HD static void quants(const uint8_t *blk, int s, float q[8]) {
        nibbles(ld_u32_a2(blk + 2 + 4 * s), 8.0f, q);
    }
};

struct FmtQ4_1 {
    static constexpr int kBytes = 20;
    static constexpr bool kHasMin = true;
    MS_GGUF_HD static int elem(int s, int i) { return elem_4bit(s, i); }
    MS_GGUF_HD static float scale(const uint8_t *blk) { return half_to_f32(ld_u16(blk)); }
    MS_GGUF_HD static float min(const uint8_t *blk) { return half_to_f32(ld_u16(blk + 2)); }
    MS_GGUF_HD static void quants(const uint8_t *blk, int s, float q[8]) {
        nibbles(ld_u32_a4(blk + 4 + 4 * s), 0.0f, q);
    }
};

struct FmtQ8_0 {
    static constexpr int kBytes = 34;
    static constexpr bool kHasMin = false;
    MS_GGUF_HD static int elem(int s, int i) { return elem_linear(s, i); }
    MS_GGUF_HD static float scale(const uint8_t *blk) { return half_to_f32(ld_u16(blk)); }
    MS_GGUF_HD static float min(const uint8_t *) { return 0.0f; }
    MS_GGUF_HD static void quants(const uint8_t *blk, int s, float q[8]) {
        int8x4(ld_u32_a2(blk + 2 + 8 * s), q);
        int8x4(ld_u32_a2(blk + 6 + 8 * s), q + 4);
    }
};

// Float "blocks" (32 values, no scale or min): the element order and the scale/min of the quantized formats' interface.
struct FmtFloat {
    static constexpr bool kHasMin = false;
    MS_GGUF_HD static int elem(int s, int i) { return elem_linear(s, i); }
    MS_GGUF_HD static float scale(const uint8_t *) { return 1.0f; }
    MS_GGUF_HD static float min(const uint8_t *) { return 0.0f; }
};

struct FmtF32 : FmtFloat {
    static constexpr int kBytes = 128;
    MS_GGUF_HD static void quants(const uint8_t *blk, int s, float q[8]) {
        uint32_t w[8];
        ld_u32x4_a16(blk + 32 * s, w);
        ld_u32x4_a16(blk + 32 * s + 16, w + 4);
MS_GGUF_UNROLL
        for (int i = 0; i < 8; ++i) q[i] = bits_to_f32(w[i]);
    }
};

struct FmtF16 : FmtFloat {
    static constexpr int kBytes = 64;
    MS_GGUF_HD static void quants(const uint8_t *blk, int s, float q[8]) {
        uint32_t w[4];
        ld_u32x4_a16(blk + 16 * s, w);
MS_GGUF_UNROLL
        for (int i = 0; i < 4; ++i) {
            q[2 * i] = half_to_f32(uint16_t(w[i] & 0xffffu));
            q[2 * i + 1] = half_to_f32(uint16_t(w[i] >> 16));
        }
    }
};

struct FmtBF16 : FmtFloat {
    static constexpr int kBytes = 64;
    MS_GGUF_HD static void quants(const uint8_t *blk, int s, float q[8]) {
        uint32_t w[4];
        ld_u32x4_a16(blk + 16 * s, w);
MS_GGUF_UNROLL
        for (int i = 0; i < 4; ++i) {
            q[2 * i] = bits_to_f32(w[i] << 16);
            q[2 * i + 1] = bits_to_f32(w[i] & 0xffff0000u);
        }
    }
};

// A slice's share of a dot product: sum_i (d q[i] + m) x[i] as d sum_i q[i] x[i] + m sum_i x[i] (x[i]: the activation
// at elem(s, i)); what the GEMV adds per slice and token.
template <class F> MS_GGUF_HD float slice_dot(const float q[8], float d, float m, const float x[8]) {
    const float dot = x[0] * q[0] + x[1] * q[1] + x[2] * q[2] + x[3] * q[3] + x[4] * q[4] + x[5] * q[5] + x[6] * q[6] +
                      x[7] * q[7];
    if constexpr (F::kHasMin) return d * dot + m * (((x[0] + x[1]) + (x[2] + x[3])) + ((x[4] + x[5]) + (x[6] + x[7])));
    return d * dot;
}

// The 32 weights of one block in element order, as the tiled kernel writes them to shared memory.
template <class F> MS_GGUF_HD void dequantize_block(const uint8_t *blk, float out[32]) {
    const float d = F::scale(blk), m = F::min(blk);
    MS_GGUF_UNROLL
    for (int s = 0; s < 4; ++s) {
        float q[8];
        F::quants(blk, s, q);
        MS_GGUF_UNROLL
        for (int i = 0; i < 8; ++i) out[F::elem(s, i)] = d * q[i] + m;
    }
}

}  // namespace ms::gguf
