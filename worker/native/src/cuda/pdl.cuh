// Programmatic dependent launch (PDL) for the dense kernels of a decode step (the MoE kernels have their own, in
// moe/moe_internal.cuh). A kernel launched with launch_maybe_pdl may become resident while its predecessor still runs;
// it must call pdl_wait() before it reads anything an earlier kernel wrote (or writes anything an earlier kernel
// reads). Work that needs no predecessor output — pulling this kernel's weights into L2 — goes before the wait, so
// the DRAM stays busy across the kernel boundary (o-projection weights stream in while attention runs). pdl_trigger()
// lets the next kernel launch; since every kernel waits before touching shared data, and a kernel completes only after
// its own wait returned, completion is transitive down the chain however early a kernel triggers.
// MODELSERVE_CUDA_PDL=0 launches everything normally (the device calls are then no-ops).
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <utility>

#include "common/env.h"

namespace ms::cuda {

__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
__device__ __forceinline__ void prefetch_l2(const void *p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

inline bool pdl_enabled() {
    static const bool on = env_switch("MODELSERVE_CUDA_PDL", true);
    return on;
}

// Launches with the PDL attribute when `pdl` is set; without it the kernel's pdl_wait/pdl_trigger are no-ops.
template <typename... KArgs, typename... Args>
void launch_with_pdl(bool pdl, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                     Args &&...args) {
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = &attr;
    cfg.numAttrs = pdl ? 1 : 0;
    cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

template <typename... KArgs, typename... Args>
void launch_maybe_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                      Args &&...args) {
    launch_with_pdl(pdl_enabled(), kernel, grid, block, smem, stream, std::forward<Args>(args)...);
}

}  // namespace ms::cuda
