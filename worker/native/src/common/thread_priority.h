// Compute threads (the engine's scheduler thread, which also runs its share of every parallel loop, and the thread
// pool's workers) may run at a lower CPU priority than the process's other threads. On a CPU worker the engine wants
// every core while the Node.js event loop that parses requests and writes streamed tokens needs a core only briefly;
// at equal priority a token that is ready waits for the scheduler to take a core back from a compute thread, which
// shows up as added time to first token. MS_COMPUTE_THREAD_NICE=N (0..19; 0, the default, changes nothing) renices
// each compute thread by N when it starts, so the event loop preempts it at once; when nothing else wants the CPU
// the compute threads get all of it, as before.
#pragma once

namespace ms {

// The validated setting (throws Error naming MS_COMPUTE_THREAD_NICE on a bad value): call where errors can still be
// reported (model load, engine creation) before starting threads.
int compute_thread_nice();

// Applies compute_thread_nice() to the calling thread (Linux: a thread's nice value is its own). Never throws.
void lower_compute_thread_priority() noexcept;

}  // namespace ms
