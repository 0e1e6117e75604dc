#include "cuda/loader.cuh"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>

#include "common/env.h"
#include "common/error.h"
#include "cuda/cuda_check.cuh"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14
#endif

namespace ms::cuda {

namespace {

using Clock = std::chrono::steady_clock;

std::atomic<bool> g_populate_supported{true};

// Brings a mapped range into memory in one go: asynchronous read-ahead of the whole range (deep I/O queue from a
// cold file), then the page tables filled without a fault per page. Failures are harmless: memcpy faults as usual.
void fault_in(const void *p, size_t n) {
    static const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
    const uintptr_t a = uintptr_t(p) & ~(page - 1);
    const size_t len = size_t(uintptr_t(p) + n - a);
    madvise(reinterpret_cast<void *>(a), len, MADV_WILLNEED);
    if (g_populate_supported.load(std::memory_order_relaxed) &&
        madvise(reinterpret_cast<void *>(a), len, MADV_POPULATE_READ) != 0 && errno == EINVAL)
        g_populate_supported.store(false, std::memory_order_relaxed);  // kernel before 5.14
}

struct Chunk {
    const uint8_t *src;
    uint8_t *dst;
    size_t bytes;
    bool mapped;
};

}  // namespace

LoaderOptions loader_options_from_env() {
    LoaderOptions o;
    const long cores = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
    o.threads = int(env_long("MODELSERVE_LOAD_THREADS", std::min(8L, cores), 1, 256));
    o.chunk_bytes = size_t(env_long("MODELSERVE_LOAD_CHUNK_MB", 4, 1, 1024)) << 20;
    o.buffers_per_thread = int(env_long("MODELSERVE_LOAD_BUFFERS", 2, 1, 16));
    o.populate = env_long("MODELSERVE_LOAD_POPULATE", 1, 0, 1) == 1;
    return o;
}

LoaderStats upload_segments(const std::vector<UploadSegment> &segments, int device, const LoaderOptions &options,
                            ms_progress_fn progress, void *progress_user) {
    const auto t0 = Clock::now();
    LoaderStats stats;
    const size_t chunk_bytes = std::max<size_t>(options.chunk_bytes, 4096);
    const int buffers = std::max(1, options.buffers_per_thread);

    // Chunks in source-address order: the mapped checkpoint is read front to back by all threads together.
    std::vector<size_t> order(segments.size());
    std::iota(order.begin(), order.end(), size_t(0));
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        return uintptr_t(segments[a].src) < uintptr_t(segments[b].src);
    });
    std::vector<Chunk> chunks;
    uint64_t total = 0;
    for (size_t i : order) {
        const UploadSegment &s = segments[i];
        if (s.bytes == 0) continue;
        if (!s.src || !s.dst) throw Error(MS_ERR_INTERNAL, "upload_segments: a segment has a null source or destination");
        for (size_t off = 0; off < s.bytes; off += chunk_bytes)
            chunks.push_back({static_cast<const uint8_t *>(s.src) + off, static_cast<uint8_t *>(s.dst) + off,
                              std::min(chunk_bytes, s.bytes - off), s.mapped});
        total += s.bytes;
    }
    const int threads = int(std::max<size_t>(1, std::min<size_t>(size_t(std::max(1, options.threads)), chunks.size())));
    stats.bytes = total;
    stats.chunks = chunks.size();
    stats.threads = threads;
    stats.chunk_bytes = chunk_bytes;
    if (chunks.empty()) {
        if (progress) progress(progress_user, 0, 0);
        return stats;
    }

    MS_CUDA(cudaSetDevice(device));
    // The staging ring: one pinned allocation, `buffers` slices per thread. Pinning costs about 0.5 ms per MiB
    // (measured), so the ring stays small: 8 threads x 2 x 4 MiB = 64 MiB.
    uint8_t *staging = nullptr;
    const auto ts = Clock::now();
    MS_CUDA(cudaHostAlloc(reinterpret_cast<void **>(&staging), size_t(threads) * buffers * chunk_bytes,
                          cudaHostAllocDefault));
    stats.staging_seconds = std::chrono::duration<double>(Clock::now() - ts).count();
    std::vector<cudaStream_t> streams(threads, nullptr);
    std::vector<cudaEvent_t> events(size_t(threads) * buffers, nullptr);
    auto release = [&] {
        for (cudaEvent_t e : events)
            if (e) cudaEventDestroy(e);
        for (cudaStream_t s : streams)
            if (s) cudaStreamDestroy(s);
        cudaFreeHost(staging);
    };
    try {
        for (auto &s : streams) MS_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
        for (auto &e : events) MS_CUDA(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    } catch (...) {
        release();
        throw;
    }

    std::atomic<size_t> next{0};
    std::atomic<uint64_t> done{0};
    std::atomic<bool> failed{false};
    std::atomic<int> running{threads};
    std::exception_ptr first_error;
    std::mutex mu;
    std::condition_variable cv;

    auto reader = [&](int t) {
        try {
            MS_CUDA(cudaSetDevice(device));
            const cudaStream_t stream = streams[t];
            std::vector<bool> in_flight(buffers, false);
            for (int k = 0;; k = (k + 1) % buffers) {
                const size_t i = next.fetch_add(1, std::memory_order_relaxed);
                if (i >= chunks.size() || failed.load(std::memory_order_relaxed)) break;
                const Chunk &c = chunks[i];
                uint8_t *buf = staging + (size_t(t) * buffers + k) * chunk_bytes;
                cudaEvent_t ev = events[size_t(t) * buffers + k];
                if (c.mapped && options.populate) fault_in(c.src, c.bytes);  // overlaps the copy still using `buf`
                if (in_flight[k]) MS_CUDA(cudaEventSynchronize(ev));  // the DMA that last read this buffer is done
                std::memcpy(buf, c.src, c.bytes);
                MS_CUDA(cudaMemcpyAsync(c.dst, buf, c.bytes, cudaMemcpyHostToDevice, stream));
                MS_CUDA(cudaEventRecord(ev, stream));
                in_flight[k] = true;
                done.fetch_add(c.bytes, std::memory_order_relaxed);
            }
            MS_CUDA(cudaStreamSynchronize(stream));
        } catch (...) {
            std::lock_guard<std::mutex> lock(mu);
            if (!first_error) first_error = std::current_exception();
            failed = true;
        }
        cudaStreamSynchronize(streams[t]);  // after a failure too: no copy may still read the ring when it is freed
        {
            std::lock_guard<std::mutex> lock(mu);
            running.fetch_sub(1);
        }
        cv.notify_all();
    };

    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (int t = 0; t < threads; ++t) pool.emplace_back(reader, t);
    {
        std::unique_lock<std::mutex> lock(mu);
        while (running.load() > 0) {
            cv.wait_for(lock, std::chrono::milliseconds(50));
            if (progress && running.load() > 0) {
                lock.unlock();
                progress(progress_user, done.load(std::memory_order_relaxed), total);
                lock.lock();
            }
        }
    }
    for (auto &th : pool) th.join();
    release();
    if (first_error) std::rethrow_exception(first_error);
    if (progress) progress(progress_user, total, total);
    stats.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return stats;
}

}  // namespace ms::cuda
