#include "common/thread_priority.h"

#include <sys/resource.h>
#include <cerrno>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/env.h"

namespace ms {

int compute_thread_nice() {
    static const int nice = int(env_long("MS_COMPUTE_THREAD_NICE", 0, 0, 19));
    return nice;
}

void lower_compute_thread_priority() noexcept {
    int nice = 0;
    try {
        nice = compute_thread_nice();
    } catch (...) {
        return;  // reported where the setting was validated first
    }
    if (nice <= 0) return;
#ifdef __linux__
    // Relative to the thread's current value (inherited from the process). Raising one's own nice value needs no
    // privilege; a failure only leaves the thread at its priority.
    const id_t tid = id_t(syscall(SYS_gettid));
    errno = 0;
    const int cur = getpriority(PRIO_PROCESS, tid);
    if (errno != 0) return;
    setpriority(PRIO_PROCESS, tid, cur + nice > 19 ? 19 : cur + nice);
#endif
}

}  // namespace ms
