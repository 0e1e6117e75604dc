// Engine settings read from the environment (switches for A/B runs and fallbacks, mostly of the CUDA backend). A value
// that is set but not understood is an error naming the variable, never a silent fallback to the default: a typo in a
// benchmark's MODELSERVE_CUDA_PDL=off must not measure the wrong path.
#pragma once

#include <initializer_list>

namespace ms {

// Unset or empty -> `fallback`; 1/true/on/yes -> true; 0/false/off/no -> false (case-insensitive); anything else
// throws Error(MS_ERR_INVALID_ARGUMENT) naming the variable and the value.
bool env_switch(const char *name, bool fallback);

// Unset or empty -> `fallback`; a base-10 integer in [lo, hi] -> that value; anything else throws as above.
long env_long(const char *name, long fallback, long lo, long hi);

// Unset or empty -> `fallback`; one of `allowed` -> that value; anything else throws as above, listing `allowed`.
int env_choice(const char *name, int fallback, std::initializer_list<int> allowed);

}  // namespace ms
