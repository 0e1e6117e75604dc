// Error handling shared by the CUDA backend: every runtime call is checked and a failure becomes an ms::Error that
// names the call and the CUDA error string (never an abort).
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "common/error.h"

namespace ms::cuda {

inline void check(cudaError_t err, const char *what) {
    if (err == cudaSuccess) return;
    const ms_status status = err == cudaErrorMemoryAllocation ? MS_ERR_OUT_OF_MEMORY : MS_ERR_INTERNAL;
    throw Error(status, std::string("CUDA: ") + what + ": " + cudaGetErrorString(err));
}

// After a kernel launch: catches bad launch configurations immediately (asynchronous faults surface at the next sync).
inline void check_launch(const char *kernel) { check(cudaGetLastError(), kernel); }

inline int ceil_div(long long a, long long b) { return int((a + b - 1) / b); }

}  // namespace ms::cuda

#define MS_CUDA(call) ::ms::cuda::check((call), #call)
