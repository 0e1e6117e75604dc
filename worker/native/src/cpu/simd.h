// Which SIMD kernel set runs. Chosen once at run time from the CPU's features (the binary itself targets baseline
// x86-64); MS_SIMD=scalar|avx2|avx512 forces a lower level (for tests and comparisons).
#pragma once

namespace ms {

enum class Simd { Scalar = 0, Avx2 = 1, Avx512 = 2 };

const char *simd_name(Simd s);
bool simd_supported(Simd s);  // the CPU can run that level
Simd detect_simd();           // best supported level, capped by MS_SIMD
Simd active_simd();           // detect_simd(), computed once

}  // namespace ms
