// The weight loader: host bytes (mostly the memory-mapped checkpoint) to GPU memory at the speed of the PCIe link.
//
// Several reader threads take chunks of the upload in file order; each copies its chunk from the mapping into one of
// its pinned staging buffers (cudaHostAlloc), queues a cudaMemcpyAsync of it on its own stream and records an event,
// then reads the next chunk into its other buffer while that copy runs. A buffer is refilled only after its event has
// completed; nothing synchronises per tensor. Mapped sources are faulted in a whole chunk at a time
// (MADV_WILLNEED + MADV_POPULATE_READ where the kernel has it), so a cold file is read with deep I/O queues and a
// page-cached one without a page fault per 64 KiB. Progress goes to the engine's ms_progress_fn from the calling
// thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine.h"

namespace ms::cuda {

struct UploadSegment {
    const void *src = nullptr;  // host bytes; must stay valid until upload_segments returns
    void *dst = nullptr;        // device memory
    size_t bytes = 0;
    bool mapped = false;  // src lies in a file mapping: fault it in per chunk before copying
};

struct LoaderOptions {
    int threads = 8;                    // reader threads (each with its own stream)
    size_t chunk_bytes = size_t(4) << 20;  // staging buffer size
    int buffers_per_thread = 2;
    bool populate = true;  // MADV_WILLNEED / MADV_POPULATE_READ on mapped chunks
};

// Defaults, overridden by MODELSERVE_LOAD_THREADS, MODELSERVE_LOAD_CHUNK_MB, MODELSERVE_LOAD_BUFFERS,
// MODELSERVE_LOAD_POPULATE=0. Threads default to min(8, online cores).
LoaderOptions loader_options_from_env();

struct LoaderStats {
    uint64_t bytes = 0;
    uint64_t chunks = 0;
    double seconds = 0;          // the whole call, staging allocation included
    double staging_seconds = 0;  // cudaHostAlloc of the staging ring
    int threads = 0;
    size_t chunk_bytes = 0;
};

// Copies every segment to the GPU `device`; returns when all bytes are there. Reports (done, total) bytes through
// `progress` (may be null) about every 50 ms and once at the end. Throws ms::Error on a CUDA failure (the first
// failing thread's message; the others stop at their next chunk).
LoaderStats upload_segments(const std::vector<UploadSegment> &segments, int device, const LoaderOptions &options,
                            ms_progress_fn progress = nullptr, void *progress_user = nullptr);

}  // namespace ms::cuda
