// <immintrin.h> for the CPU kernels' .cc files. GCC 12 flags its own AVX-512 intrinsic headers (_mm512_undefined_*) as
// uninitialised, a false positive, so those two warnings are off for the rest of the including file (headers that
// must not change their includer's warnings, like gemm_f32_avx512.h, push and pop them themselves).
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
