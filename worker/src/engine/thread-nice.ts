// The engine's compute threads (the scheduler thread and the CPU thread pool's workers) run at nice 10 under the
// worker's own threads unless MS_COMPUTE_THREAD_NICE says otherwise (0 = as before, same priority; the engine
// validates the value, 0..19, when it loads). On a CPU worker the compute threads want every core while the event loop,
// which reads requests and writes streamed tokens, needs one only briefly; at equal priority it waits behind them
// (measured: docs/benchmarks/worker.md, 2026-12-07 session 6 — the event loop's waits for a CPU halve at c=1, added
// TTFT p90 1.6–1.7 → 1.1–1.4 ms, no throughput change). Niceness orders threads within the worker's own CPU
// cgroup (its container), so in a pod it yields only to the worker's own threads; on a shared machine it also yields
// to other processes of the same group.
export const COMPUTE_THREAD_NICE_ENV = 'MS_COMPUTE_THREAD_NICE';
export const DEFAULT_COMPUTE_THREAD_NICE = 10;

/** Sets the default in `env` (the process's environment, where the addon reads it when it first starts a compute
 * thread) unless it is set; returns the value in effect. Call before the engine loads. */
export function applyComputeThreadNice(env: NodeJS.ProcessEnv = process.env): string {
  env[COMPUTE_THREAD_NICE_ENV] ??= String(DEFAULT_COMPUTE_THREAD_NICE);
  return env[COMPUTE_THREAD_NICE_ENV];
}
