#include "cpu/thread_pool.h"

#include <sched.h>
#include <unistd.h>

#include "common/thread_priority.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace ms {

namespace {

// Spinning polls with a pause (~40-140 cycles) and calls sched_yield only once every kPausesPerYield polls (about
// every 30-50 us): on an EEVDF kernel (Linux 6.6+) each sched_yield pushes the thread's deadline a full slice out,
// so a loop of yields leaves the thread at the back of the queue when it next has work, and a machine shared with
// other processes ran a spinning pool's steps ~1.5x slower than a sleeping one (docs/benchmarks/engine.md).
constexpr int kPausesPerYield = 1024;
// A gap this long between two looks at the clock while spinning means another task ran on this core: the machine
// is busy, and spinning would only take CPU time from the threads that do the work, so the thread sleeps.
constexpr std::chrono::microseconds kPreempted{50};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

}  // namespace

ThreadPool::ThreadPool(int n_threads, std::chrono::microseconds spin) : spin_(spin) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? int(n) : 1;
    }
    if (n_threads > int(kCountMask)) n_threads = int(kCountMask);  // the job word counts the workers in 16 bits
    n_threads_ = n_threads;
    compute_thread_nice();  // a bad MS_COMPUTE_THREAD_NICE fails here, not inside a worker
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
    {
        // Under mu_: a worker between its last check and its sleep holds mu_, so it cannot miss the flag.
        std::lock_guard<std::mutex> lk(mu_);
        stop_.store(true);
    }
    wake_.notify_all();
    for (auto &t : workers_) t.join();
}

template <class Ready> void ThreadPool::await(const Ready &ready, std::atomic<int> &sleepers, std::condition_variable &cv) {
    if (ready()) return;
    if (spin_.count() > 0) {
        using clock = std::chrono::steady_clock;
        auto last = clock::now();
        const auto deadline = last + spin_;
        for (unsigned polls = 1;; ++polls) {
            const bool yielded = polls % kPausesPerYield == 0;
            if (yielded) sched_yield();  // another thread (maybe the one we wait for) may need this core
            else cpu_relax();
            if (ready()) return;
            if (yielded || polls % 16 == 0) {
                // Sleep at the end of the spin period, or at once when this thread lost its core for a while.
                const auto now = clock::now();
                if (now >= deadline || now - last > kPreempted) break;
                last = now;
            }
        }
    }
    // The waker changes the state, then reads `sleepers` (both sequentially consistent): either it sees our count
    // and notifies under mu_ (which we hold until wait() releases it), or our check below sees its change.
    std::unique_lock<std::mutex> lk(mu_);
    sleepers.fetch_add(1);
    cv.wait(lk, ready);
    sleepers.fetch_sub(1);
}

void ThreadPool::notify(std::atomic<int> &sleepers, std::condition_variable &cv) {
    if (sleepers.load() == 0) return;
    std::lock_guard<std::mutex> lk(mu_);
    cv.notify_all();
}

void ThreadPool::run_chunks() {
    const int64_t n = n_, grain = grain_;
    for (;;) {
        const int64_t begin = next_.fetch_add(grain, std::memory_order_relaxed);
        if (begin >= n) return;
        const int64_t end = begin + grain < n ? begin + grain : n;
        try {
            (*fn_)(begin, end);
        } catch (...) {
            std::lock_guard<std::mutex> lk(mu_);
            if (!error_) error_ = std::current_exception();
            next_.store(n, std::memory_order_relaxed);  // hand out no more chunks
        }
    }
}

void ThreadPool::worker_loop() {
    lower_compute_thread_priority();
    uint64_t seen = 0;  // generation of the last job this worker joined or skipped
    auto gen = [](uint64_t s) { return s >> kGenShift; };
    for (;;) {
        await([&] { return gen(job_.load()) != seen || stop_.load(); }, idle_sleepers_, wake_);
        if (stop_.load()) return;
        uint64_t s = job_.load();
        seen = gen(s);
        // Join the job while it is open; a failed exchange reloads s (another worker joined, or the caller closed
        // it, or even opened the next one: then this worker picks that one up on the next turn).
        bool joined = false;
        while ((s & kOpen) && gen(s) == seen) {
            if (job_.compare_exchange_weak(s, s + 1)) {
                joined = true;
                break;
            }
        }
        if (!joined) continue;
        run_chunks();
        // The job's fields stay valid until the caller sees the count reach 0; after that this thread touches only
        // the pool's own members (the pool outlives its workers).
        const uint64_t left = job_.fetch_sub(1) - 1;
        if ((left & kCountMask) == 0 && !(left & kOpen)) notify(join_sleepers_, done_);
    }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, RangeFn fn) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if (workers_.empty() || n <= grain) {
        fn(0, n);
        return;
    }
    // No worker touches these now: the previous job was closed with no worker inside.
    fn_ = &fn;
    n_ = n;
    grain_ = grain;
    error_ = nullptr;
    next_.store(0, std::memory_order_relaxed);
    const uint64_t g = (job_.load() >> kGenShift) + 1;
    job_.store(g << kGenShift | kOpen);  // publishes the fields above
    notify(idle_sleepers_, wake_);
    run_chunks();
    // Out of chunks: close the job and wait for the workers that joined it.
    if (job_.fetch_and(~kOpen) & kCountMask) await([&] { return (job_.load() & kCountMask) == 0; }, join_sleepers_, done_);
    fn_ = nullptr;
    std::exception_ptr err;
    {
        std::lock_guard<std::mutex> lk(mu_);
        err = std::move(error_);
        error_ = nullptr;
    }
    if (err) std::rethrow_exception(err);
}

}  // namespace ms
