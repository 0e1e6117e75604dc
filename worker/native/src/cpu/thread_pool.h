// A fixed pool of worker threads for data-parallel loops inside one forward pass (the gpt-oss model and the llama
// model both use it). The calling thread takes part, so a pool of n threads starts n - 1 workers. parallel_for is
// not re-entrant and is called from one thread at a time.
//
// A decode step is tens to hundreds of short loops (0.02-0.5 ms each), so a futex wake-up per loop would cost a
// noticeable share of the step: between loops the workers spin on an atomic job word (pause; a sched_yield only
// every thousand pauses) for a bounded time, `spin` (200 us by default: the gaps between the loops of a step and
// between two decode steps are shorter), and then sleep on a condition variable, so an idle engine burns no CPU.
// A spinning thread also sleeps at once when it notices it lost its core to another task (a busy machine). The
// caller waits for the join the same way, but only for the workers that took part in the loop: a worker that was
// slow to wake (asleep, or preempted) skips a loop that has run out of chunks.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
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
    static constexpr std::chrono::microseconds kDefaultSpin{200};

    // n_threads 0 = online cores. spin: how long a worker polls for the next loop (and the caller for the join)
    // before it sleeps; 0 = sleep at once.
    explicit ThreadPool(int n_threads, std::chrono::microseconds spin = kDefaultSpin);
    ~ThreadPool();
    ThreadPool(const ThreadPool &) = delete;
    ThreadPool &operator=(const ThreadPool &) = delete;

    int size() const { return n_threads_; }
    // Calls fn(begin, end) over [0, n) in chunks of `grain` items, spread over the pool (each thread takes the next
    // chunk when it is done with one); returns when all are done. The first exception thrown by fn is rethrown here
    // (the chunks not yet started are skipped).
    void parallel_for(int64_t n, int64_t grain, RangeFn fn);

  private:
    void worker_loop();
    void run_chunks();
    // Returns once ready() holds: polls it for spin_, then sleeps on cv (counted in sleepers, see notify()).
    template <class Ready> void await(const Ready &ready, std::atomic<int> &sleepers, std::condition_variable &cv);
    // Wakes the sleepers of cv, if any, after the state they wait on changed.
    void notify(std::atomic<int> &sleepers, std::condition_variable &cv);

    int n_threads_;
    std::chrono::microseconds spin_;
    std::vector<std::thread> workers_;

    // job_: generation << kGenShift | kOpen while the caller hands out chunks | workers inside the job (low bits).
    // A worker joins a job by incrementing the count while it is open; the caller closes it when it has run out of
    // chunks and waits only for the workers that joined, so a worker that is slow to wake (asleep, or preempted on
    // a busy machine) never delays the join: it sees the job closed and skips it.
    static constexpr uint64_t kCountMask = 0xffff, kOpen = uint64_t(1) << 16;
    static constexpr int kGenShift = 17;
    alignas(64) std::atomic<uint64_t> job_{0};
    std::atomic<bool> stop_{false};
    // The current job's loop: written by the caller before it opens the job, read by the workers that joined it.
    const RangeFn *fn_ = nullptr;
    int64_t n_ = 0, grain_ = 1;
    alignas(64) std::atomic<int64_t> next_{0};  // first item of the next chunk to hand out
    alignas(64) std::atomic<int> idle_sleepers_{0}, join_sleepers_{0};
    std::mutex mu_;  // guards the sleeps and error_
    std::condition_variable wake_, done_;
    std::exception_ptr error_;
};

}  // namespace ms
