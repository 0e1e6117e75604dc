// std::vector with 64-byte (cache-line) aligned storage. The matrix kernels load 64-byte vectors from activation rows
// and widened weight scratch; with malloc's 16-byte alignment (large blocks come from mmap at page + 16) every such
// load straddles two cache lines, which cost the fp32 register-tile kernel 20-40 % of its rate (measured with the
// kernel alone on the GPU machine's Xeon: 52-70 vs 73-85 GFLOP/s per core).
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace ms {

template <class T> struct CacheAlignedAllocator {
    using value_type = T;
    static constexpr std::size_t kAlign = 64;
    CacheAlignedAllocator() = default;
    template <class U> CacheAlignedAllocator(const CacheAlignedAllocator<U> &) {}
    T *allocate(std::size_t n) { return static_cast<T *>(::operator new(n * sizeof(T), std::align_val_t(kAlign))); }
    void deallocate(T *p, std::size_t) { ::operator delete(p, std::align_val_t(kAlign)); }
    template <class U> bool operator==(const CacheAlignedAllocator<U> &) const { return true; }
    template <class U> bool operator!=(const CacheAlignedAllocator<U> &) const { return false; }
};

template <class T> using AlignedVector = std::vector<T, CacheAlignedAllocator<T>>;

}  // namespace ms
