// A data-parallel pool for the llama forward pass, whose decode step is ~150 short parallel loops: workers spin for
// a couple of milliseconds between loops (a futex wake per loop would cost more than the loop), then sleep on a
// condition variable so an idle engine burns no CPU. Same contract as ThreadPool::parallel_for: the caller takes
// part, one caller at a time, the first exception is rethrown.
#pragma once

#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "cpu/thread_pool.h"

namespace ms {

class SpinPool {
  public:
    explicit SpinPool(int n_threads);  // 0 = online cores
    ~SpinPool();
    SpinPool(const SpinPool &) = delete;
    SpinPool &operator=(const SpinPool &) = delete;

    int size() const { return n_threads_; }
    void parallel_for(int64_t n, int64_t grain, RangeFn fn);

  private:
    void worker_loop();
    void run_chunks();

    int n_threads_;
    std::vector<std::thread> workers_;
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> pending_{0};
    std::atomic<int> sleepers_{0};
    std::atomic<bool> stop_{false};
    std::atomic<int64_t> next_{0};
    const RangeFn *fn_ = nullptr;
    int64_t n_ = 0, grain_ = 1;
    std::mutex mu_;
    std::condition_variable wake_;
    std::mutex err_mu_;
    std::exception_ptr error_;
};

}  // namespace ms
