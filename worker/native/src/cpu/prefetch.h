// Software prefetch of a byte range into L1, for kernels that stream weights from DRAM tile by tile: a tile of a few
// KB is a page or two, where the hardware prefetcher stops and has to pick the stream up again.
#pragma once

#include <cstdint>

namespace ms {

// An asm statement, not _mm_prefetch: GCC deletes a loop whose body is only __builtin_prefetch (a loop without side
// effects may be assumed to finish, and then it does nothing), which silently turns the prefetch off.
#if defined(__x86_64__) || defined(__i386__)
inline void prefetch_line(const void *p) { asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char *>(p))); }
#else  // the callers are x86 kernels; elsewhere this only has to compile
inline void prefetch_line(const void *p) { __builtin_prefetch(p); }
#endif

inline void prefetch_bytes(const void *p, int64_t bytes) {
    for (int64_t off = 0; off < bytes; off += 64) prefetch_line(static_cast<const char *>(p) + off);
}

}  // namespace ms
