#include "cpu/simd.h"

#include <cstdlib>
#include <cstring>

namespace ms {

const char *simd_name(Simd s) {
    switch (s) {
        case Simd::Scalar: return "scalar";
        case Simd::Avx2: return "avx2";
        case Simd::Avx512: return "avx512";
    }
    return "?";
}

bool simd_supported(Simd s) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    switch (s) {
        case Simd::Scalar: return true;
        case Simd::Avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        case Simd::Avx512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
    }
    return false;
#else
    return s == Simd::Scalar;
#endif
}

Simd detect_simd() {
    Simd best = Simd::Scalar;
    if (simd_supported(Simd::Avx512)) best = Simd::Avx512;
    else if (simd_supported(Simd::Avx2)) best = Simd::Avx2;
    const char *env = std::getenv("MS_SIMD");
    if (env) {
        Simd cap = best;
        if (!std::strcmp(env, "scalar")) cap = Simd::Scalar;
        else if (!std::strcmp(env, "avx2")) cap = Simd::Avx2;
        if (int(cap) < int(best)) best = cap;
    }
    return best;
}

Simd active_simd() {
    static const Simd s = detect_simd();
    return s;
}

}  // namespace ms
