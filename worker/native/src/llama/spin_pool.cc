#include "llama/spin_pool.h"

#include <immintrin.h>
#include <sched.h>
#include <unistd.h>

#include <chrono>

namespace ms {

namespace {
constexpr auto kSpinFor = std::chrono::microseconds(2000);
}

SpinPool::SpinPool(int n_threads) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? int(n) : 1;
    }
    n_threads_ = n_threads;
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this] { worker_loop(); });
}

SpinPool::~SpinPool() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        stop_ = true;
    }
    wake_.notify_all();
    for (auto &t : workers_) t.join();
}

void SpinPool::run_chunks() {
    for (;;) {
        const int64_t begin = next_.fetch_add(grain_, std::memory_order_relaxed);
        if (begin >= n_) return;
        const int64_t end = begin + grain_ < n_ ? begin + grain_ : n_;
        try {
            (*fn_)(begin, end);
        } catch (...) {
            std::lock_guard<std::mutex> lk(err_mu_);
            if (!error_) error_ = std::current_exception();
            next_.store(n_, std::memory_order_relaxed);
        }
    }
}

void SpinPool::worker_loop() {
    uint64_t seen = 0;
    for (;;) {
        auto spin_until = std::chrono::steady_clock::now() + kSpinFor;
        int polls = 0;
        while (generation_.load() == seen && !stop_.load()) {
            // Pause briefly, then yield the core (another thread, maybe our caller, may need it on a busy machine).
            if (++polls < 512) _mm_pause();
            else sched_yield();
            if (polls % 64 == 0 && std::chrono::steady_clock::now() > spin_until) {
                // Sleep; the submitter checks sleepers_ after bumping generation_, so no wake-up is lost.
                std::unique_lock<std::mutex> lk(mu_);
                sleepers_.fetch_add(1);
                wake_.wait(lk, [&] { return generation_.load() != seen || stop_.load(); });
                sleepers_.fetch_sub(1);
                spin_until = std::chrono::steady_clock::now() + kSpinFor;
                polls = 0;
            }
        }
        if (stop_.load()) return;
        seen = generation_.load();
        run_chunks();
        pending_.fetch_sub(1);
    }
}

void SpinPool::parallel_for(int64_t n, int64_t grain, RangeFn fn) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if (workers_.empty() || n <= grain) {
        fn(0, n);
        return;
    }
    fn_ = &fn;
    n_ = n;
    grain_ = grain;
    error_ = nullptr;
    next_.store(0);
    pending_.store(int(workers_.size()));
    generation_.fetch_add(1);
    if (sleepers_.load() > 0) {
        std::lock_guard<std::mutex> lk(mu_);
        wake_.notify_all();
    }
    run_chunks();
    for (int polls = 0; pending_.load() != 0; ++polls) {
        if (polls < 512) _mm_pause();
        else sched_yield();
    }
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
}

}  // namespace ms
