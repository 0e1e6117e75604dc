// A fixed pool of worker threads for data-parallel loops inside one forward pass. The calling thread takes part, so
// a pool of n threads starts n - 1 workers. parallel_for is not re-entrant and is called from one thread at a time.
#pragma once

#include <atomic>
#include <condition_variable>
#include <exception>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace ms {

// A non-owning reference to a callable taking (begin, end): unlike std::function it never allocates, so a step's
// many parallel loops cost no heap traffic. Valid while the referenced callable lives (the parallel_for call).
class RangeFn {
  public:
    template <class F>
    RangeFn(const F &f)  // NOLINT: implicit on purpose, call sites pass lambdas
        : obj_(&f), call_([](const void *o, int64_t b, int64_t e) { (*static_cast<const F *>(o))(b, e); }) {}
    void operator()(int64_t b, int64_t e) const { call_(obj_, b, e); }

  private:
    const void *obj_;
    void (*call_)(const void *, int64_t, int64_t);
};

class ThreadPool {
  public:
    explicit ThreadPool(int n_threads);  // 0 = online cores
    ~ThreadPool();
    ThreadPool(const ThreadPool &) = delete;
    ThreadPool &operator=(const ThreadPool &) = delete;

    int size() const { return n_threads_; }
    // Calls fn(begin, end) over [0, n) in chunks of `grain` items, spread over the pool; returns when all are done.
    // The first exception thrown by fn is rethrown here.
    void parallel_for(int64_t n, int64_t grain, RangeFn fn);

  private:
    void worker_loop();
    void run_chunks();

    int n_threads_;
    std::vector<std::thread> workers_;
    std::mutex mu_;
    std::condition_variable wake_, done_;
    uint64_t generation_ = 0;
    bool stop_ = false;
    const RangeFn *fn_ = nullptr;
    int64_t n_ = 0, grain_ = 1;
    std::atomic<int64_t> next_{0};
    int active_ = 0;  // workers still inside the current job
    std::exception_ptr error_;
};

}  // namespace ms
