// bench_simd_peak: the multiply-add peak of one core for each 512-bit instruction a matrix kernel could be built on —
// fp32 FMA (vfmadd231ps, the default kernels), bf16 dot product (vdpbf16ps, AVX512-BF16) and fp16 FMA (vfmadd231ph,
// AVX512-FP16) — with enough independent accumulators to hide latency, so the result is each instruction's
// throughput. It is what decides whether rounding activations to bf16 can speed up compute-bound batched decode.
//   bench_simd_peak [--seconds-per-test 0.5]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

// GCC 12 flags its own AVX-512 intrinsic headers (_mm512_undefined_*) as uninitialised: a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

namespace {

constexpr int kChains = 16;  // independent accumulators: > latency x ports for every instruction measured

__attribute__((target("avx512f"))) float fma_ps(long n) {
    __m512 a[kChains];
    for (int i = 0; i < kChains; ++i) a[i] = _mm512_setzero_ps();
    __m512 x = _mm512_set1_ps(1e-3f);
    const __m512 y = _mm512_set1_ps(0.5f);
    for (long k = 0; k < n; ++k) {
#pragma GCC unroll 16
        for (int i = 0; i < kChains; ++i) a[i] = _mm512_fmadd_ps(x, y, a[i]);
        __asm__ volatile("" : "+v"(x));  // keeps the loop from being folded
    }
    __m512 s = a[0];
    for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, a[i]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx512f,avx512bw,avx512bf16"))) float dp_bf16(long n) {
    __m512 a[kChains];
    for (int i = 0; i < kChains; ++i) a[i] = _mm512_setzero_ps();
    __m512bh x = (__m512bh)_mm512_set1_epi16(0x3a83);  // ~1e-3
    const __m512bh y = (__m512bh)_mm512_set1_epi16(0x3f00);
    for (long k = 0; k < n; ++k) {
#pragma GCC unroll 16
        for (int i = 0; i < kChains; ++i) a[i] = _mm512_dpbf16_ps(a[i], x, y);
        __asm__ volatile("" : "+v"(x));
    }
    __m512 s = a[0];
    for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, a[i]);
    return _mm512_reduce_add_ps(s);
}

#if !defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 12  // GCC 12 has AVX512-FP16 intrinsics per function target
#define MS_HAVE_FP16 1
__attribute__((target("avx512f,avx512bw,avx512vl,avx512fp16"))) float fma_ph(long n) {
    __m512h a[kChains];
    for (int i = 0; i < kChains; ++i) a[i] = _mm512_setzero_ph();
    __m512h x = _mm512_set1_ph(static_cast<_Float16>(1e-4f));
    const __m512h y = _mm512_set1_ph(static_cast<_Float16>(0.5f));
    for (long k = 0; k < n; ++k) {
#pragma GCC unroll 16
        for (int i = 0; i < kChains; ++i) a[i] = _mm512_fmadd_ph(x, y, a[i]);
        __asm__ volatile("" : "+v"(x));
    }
    __m512h s = a[0];
    for (int i = 1; i < kChains; ++i) s = _mm512_add_ph(s, a[i]);
    return static_cast<float>(_mm512_reduce_add_ph(s));
}
#endif

// GFLOP/s (2 per multiply-add) of `fn`, which does `macs_per_iter` multiply-adds per iteration; best of 3.
template <class F> double gflops(F fn, double macs_per_iter, double seconds) {
    long n = 1 << 16;
    double best = 0;
    for (;;) {  // size the run to about `seconds`
        const auto t0 = std::chrono::steady_clock::now();
        volatile float r = fn(n);
        (void)r;
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (dt > seconds / 4) break;
        n *= 2;
    }
    for (int rep = 0; rep < 3; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        volatile float r = fn(n);
        (void)r;
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double g = 2.0 * macs_per_iter * double(n) / dt / 1e9;
        if (g > best) best = g;
    }
    return best;
}

}  // namespace

int main(int argc, char **argv) {
    double seconds = 0.5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::string(argv[i]) == "--seconds-per-test") seconds = std::atof(argv[i + 1]);
        else {
            std::fprintf(stderr, "bench_simd_peak: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f")) {
        std::printf("no AVX-512 on this CPU: nothing to measure\n");
        return 0;
    }
    const double f32 = gflops(fma_ps, kChains * 16.0, seconds);
    std::printf("%-34s %8.1f GFLOP/s  1.00x\n", "fp32 FMA (vfmadd231ps zmm)", f32);
    if (__builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw")) {
        const double bf = gflops(dp_bf16, kChains * 32.0, seconds);
        std::printf("%-34s %8.1f GFLOP/s  %.2fx\n", "bf16 dot (vdpbf16ps zmm)", bf, bf / f32);
    } else {
        std::printf("%-34s %8s\n", "bf16 dot (vdpbf16ps zmm)", "n/a");
    }
#ifdef MS_HAVE_FP16
    if (__builtin_cpu_supports("avx512fp16")) {
        const double ph = gflops(fma_ph, kChains * 32.0, seconds);
        std::printf("%-34s %8.1f GFLOP/s  %.2fx\n", "fp16 FMA (vfmadd231ph zmm)", ph, ph / f32);
    } else {
        std::printf("%-34s %8s\n", "fp16 FMA (vfmadd231ph zmm)", "n/a");
    }
#endif
    return 0;
}
