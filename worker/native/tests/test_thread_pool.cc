// ms::ThreadPool: the spin-then-sleep hand-off between loops, the join, exceptions, shutdown and idle CPU use.
// (CoversEveryIndexOnceAndPropagatesErrors in test_kernels_layers.cc covers the chunking.)
#include <time.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cpu/thread_pool.h"

namespace {

using namespace std::chrono_literals;

// Runs fn on another thread; aborts the whole test binary if it has not returned within `limit` (a hung join or
// shutdown would otherwise hang ctest until its global timeout).
void finishes_within(std::chrono::seconds limit, const char *what, const std::function<void()> &fn) {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::thread t([&] {
        fn();
        std::lock_guard<std::mutex> lk(mu);
        done = true;
        cv.notify_all();
    });
    std::unique_lock<std::mutex> lk(mu);
    if (!cv.wait_for(lk, limit, [&] { return done; })) {
        std::fprintf(stderr, "%s did not finish within %lld s\n", what, static_cast<long long>(limit.count()));
        std::abort();
    }
    lk.unlock();
    t.join();
}

double process_cpu_ms() {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return 1e3 * double(ts.tv_sec) + 1e-6 * double(ts.tv_nsec);
}

int64_t sum_of(ms::ThreadPool &pool, int64_t n, int64_t grain, int64_t salt) {
    std::atomic<int64_t> sum{0};
    pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
        int64_t s = 0;
        for (int64_t i = b; i < e; ++i) s += i * 3 + salt;
        sum.fetch_add(s, std::memory_order_relaxed);
    });
    return sum.load();
}

TEST(ThreadPool, ManyBackToBackShortLoopsGiveCorrectSums) {
    finishes_within(120s, "back-to-back loops", [] {
        for (int threads : {2, 3}) {
            ms::ThreadPool pool(threads);
            // Loops of a few items each, grains from 1 to more than n (inline), as a decode step issues them.
            for (int64_t it = 0; it < 20000; ++it) {
                const int64_t n = 1 + it % 37, grain = 1 + it % 5;
                const int64_t want = 3 * n * (n - 1) / 2 + it * n;
                ASSERT_EQ(sum_of(pool, n, grain, it), want) << "loop " << it << " n " << n << " grain " << grain;
            }
            // Loops long enough that the workers join them (a few microseconds per chunk): each item is counted
            // once, and over the run the workers did take chunks.
            const auto caller = std::this_thread::get_id();
            std::atomic<int64_t> by_workers{0};
            std::vector<std::atomic<int>> hits(64);
            for (int it = 0; it < 5000; ++it) {
                pool.parallel_for(64, 4, [&](int64_t b, int64_t e) {
                    volatile int64_t spin = 0;
                    for (int k = 0; k < 2000; ++k) spin = spin + k;
                    for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1, std::memory_order_relaxed);
                    if (std::this_thread::get_id() != caller) by_workers.fetch_add(1, std::memory_order_relaxed);
                });
            }
            for (auto &h : hits) ASSERT_EQ(h.load(), 5000);
            EXPECT_GT(by_workers.load(), 0) << "the workers never took a chunk";
        }
    });
}

TEST(ThreadPool, EveryThreadTakesPartAndTheJoinWaitsForTheSlowestChunk) {
    finishes_within(60s, "uneven chunks", [] {
        ms::ThreadPool pool(3);
        const auto caller = std::this_thread::get_id();
        for (int rep = 0; rep < 50; ++rep) {
            std::atomic<int> finished{0};
            std::atomic<bool> worker_in{false};
            // The workers' chunks are slow, and the caller's wait (up to 1 s) until a worker has one: parallel_for
            // must not return before the workers' chunks are done.
            pool.parallel_for(6, 1, [&](int64_t, int64_t) {
                if (std::this_thread::get_id() != caller) {
                    worker_in = true;
                    std::this_thread::sleep_for(2ms);
                } else {
                    const auto until = std::chrono::steady_clock::now() + 1s;
                    while (!worker_in.load() && std::chrono::steady_clock::now() < until) std::this_thread::yield();
                }
                finished.fetch_add(1);
            });
            ASSERT_EQ(finished.load(), 6);
        }
        // The pool really is parallel: 3 chunks that each wait for the other two to start finish only if three
        // threads run them at once.
        std::atomic<int> started{0};
        pool.parallel_for(3, 1, [&](int64_t, int64_t) {
            started.fetch_add(1);
            while (started.load() < 3) std::this_thread::yield();
        });
        EXPECT_EQ(started.load(), 3);
    });
}

TEST(ThreadPool, ExceptionInAChunkIsRethrownAndThePoolStaysUsable) {
    finishes_within(60s, "exceptions", [] {
        for (auto spin : {ms::ThreadPool::kDefaultSpin, std::chrono::microseconds(0)}) {
            ms::ThreadPool pool(3, spin);
            for (int rep = 0; rep < 200; ++rep) {
                // One throwing chunk among many: rethrown, with its own message.
                try {
                    pool.parallel_for(64, 1, [&](int64_t b, int64_t) {
                        if (b == rep % 64) throw std::runtime_error("chunk " + std::to_string(b));
                    });
                    FAIL() << "no exception, rep " << rep;
                } catch (const std::runtime_error &e) {
                    EXPECT_EQ(std::string(e.what()), "chunk " + std::to_string(rep % 64));
                }
                // Every chunk throws: exactly one exception comes out.
                EXPECT_THROW(pool.parallel_for(16, 1, [](int64_t, int64_t) { throw std::logic_error("all"); }),
                             std::logic_error);
                // The next loop runs in full and does not see the old error.
                ASSERT_EQ(sum_of(pool, 100, 7, rep), 3 * 100 * 99 / 2 + int64_t(rep) * 100);
            }
        }
    });
}

TEST(ThreadPool, ExceptionOnAWorkerThreadReachesTheCaller) {
    finishes_within(60s, "worker exception", [] {
        ms::ThreadPool pool(2);
        const auto caller = std::this_thread::get_id();
        for (int rep = 0; rep < 20; ++rep) {
            std::atomic<bool> worker_in{false};
            // Two chunks: the caller's chunk waits until the worker holds the other one, which throws.
            EXPECT_THROW(pool.parallel_for(2, 1,
                                           [&](int64_t, int64_t) {
                                               if (std::this_thread::get_id() != caller) {
                                                   worker_in = true;
                                                   throw std::runtime_error("worker");
                                               }
                                               while (!worker_in.load()) std::this_thread::yield();
                                           }),
                         std::runtime_error);
            ASSERT_EQ(sum_of(pool, 10, 1, 0), 135);
        }
    });
}

TEST(ThreadPool, DestructionWhileWorkersSpinOrSleepDoesNotHang) {
    // Right after a loop (workers spinning), after an idle period (workers asleep), with a spin longer than the
    // test (they must notice the stop flag while spinning), and never used at all.
    finishes_within(60s, "pool destruction", [] {
        for (int rep = 0; rep < 200; ++rep) {
            ms::ThreadPool pool(3);
            ASSERT_EQ(sum_of(pool, 50, 1, 0), 3675);
        }
        for (int rep = 0; rep < 5; ++rep) {
            ms::ThreadPool pool(3, std::chrono::microseconds(500));
            ASSERT_EQ(sum_of(pool, 50, 1, 0), 3675);
            std::this_thread::sleep_for(20ms);
        }
        for (int rep = 0; rep < 5; ++rep) {
            ms::ThreadPool pool(3, std::chrono::microseconds(0));
            ASSERT_EQ(sum_of(pool, 50, 1, 0), 3675);
            std::this_thread::sleep_for(5ms);
        }
        {
            ms::ThreadPool pool(3, std::chrono::seconds(3600));
            ASSERT_EQ(sum_of(pool, 50, 1, 0), 3675);
        }
        for (int rep = 0; rep < 50; ++rep) ms::ThreadPool pool(4);
    });
}

TEST(ThreadPool, WorkersSleepWhenIdle) {
    ms::ThreadPool pool(3);
    ASSERT_EQ(sum_of(pool, 1000, 10, 1), 3 * 1000 * 999 / 2 + 1000);
    // The workers spin for kDefaultSpin (0.2 ms) after the loop, then must sleep: over a 200 ms idle period the
    // process uses a few ms of CPU at most, where two workers spinning (even yielding) would use up to 400 ms.
    std::this_thread::sleep_for(20ms);  // past the spin period
    const double cpu0 = process_cpu_ms();
    std::this_thread::sleep_for(200ms);
    const double idle_cpu = process_cpu_ms() - cpu0;
    EXPECT_LT(idle_cpu, 20.0) << "the pool's workers kept running while idle";
    // And they still wake for the next loop.
    ASSERT_EQ(sum_of(pool, 1000, 10, 2), 3 * 1000 * 999 / 2 + 2000);
}

TEST(ThreadPool, SpinningWorkersStopSpinningAfterTheSpinPeriod) {
    // With a 50 ms spin, the workers run for about 50 ms after a loop and then sleep: CPU over the next 300 ms is
    // well under the 2 x 300 ms that spinning forever would take (bounded above by the spin budget of 2 workers).
    ms::ThreadPool pool(3, std::chrono::microseconds(50000));
    const double cpu0 = process_cpu_ms();
    ASSERT_EQ(sum_of(pool, 100, 1, 0), 3 * 100 * 99 / 2);
    std::this_thread::sleep_for(300ms);
    const double cpu = process_cpu_ms() - cpu0;
    EXPECT_LT(cpu, 150.0) << "workers spun past their spin period";
}

}  // namespace
