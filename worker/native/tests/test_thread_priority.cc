// MS_COMPUTE_THREAD_NICE: the thread pool's workers run that much nicer than the process, a bad value fails where the
// pool is made (naming the variable). The setting is read once per process, so each case runs in a fresh process
// (gtest's threadsafe death-test style re-executes the test binary).
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "common/error.h"
#include "cpu/thread_pool.h"

namespace {

int own_nice() { return getpriority(PRIO_PROCESS, id_t(syscall(SYS_gettid))); }

// Exits 0 when every pool worker that ran a chunk had nice == base + want, and the caller kept base.
[[noreturn]] void run_pool_and_check(int want) {
    const int base = own_nice();
    const long caller = syscall(SYS_gettid);
    std::atomic<int> worker_chunks{0}, wrong{0};
    {
        ms::ThreadPool pool(2);
        pool.parallel_for(64, 1, [&](int64_t, int64_t) {
            if (syscall(SYS_gettid) != caller) {
                worker_chunks.fetch_add(1);
                if (own_nice() != base + want) wrong.fetch_add(1);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(1));  // long enough for the worker to join
        });
    }
    std::exit(worker_chunks.load() > 0 && wrong.load() == 0 && own_nice() == base ? 0 : 1);
}

TEST(ComputeThreadNice, WorkersRunNicerByTheSetting) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(
        {
            setenv("MS_COMPUTE_THREAD_NICE", "5", 1);
            run_pool_and_check(5);
        },
        ::testing::ExitedWithCode(0), "");
}

TEST(ComputeThreadNice, UnsetChangesNothing) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(
        {
            unsetenv("MS_COMPUTE_THREAD_NICE");
            run_pool_and_check(0);
        },
        ::testing::ExitedWithCode(0), "");
}

TEST(ComputeThreadNice, BadValueFailsWhereThePoolIsMade) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(
        {
            setenv("MS_COMPUTE_THREAD_NICE", "25", 1);
            try {
                ms::ThreadPool pool(2);
            } catch (const ms::Error &e) {
                std::exit(std::strstr(e.what(), "MS_COMPUTE_THREAD_NICE") ? 0 : 3);
            }
            std::exit(2);
        },
        ::testing::ExitedWithCode(0), "");
}

}  // namespace
