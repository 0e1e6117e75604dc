// V8 heap settings of the worker process: flags for node's command line (measurements: docs/benchmarks/worker.md,
// 2026-12-07). They size the heap, which V8 fixes when the process starts: not settable at run time (v8.setFlagsFromString
// of --no-memory-reducer after start-up made a test program mark-compact 17 times instead of once) nor in NODE_OPTIONS.
// So the operator's worker command carries them (operator/src/controller/plan.ts; worker/test/gc.test.ts keeps the two
// equal), as does hack/bench/compare.ts; the `ready` log line says the young generation in effect.
//
// - A fixed 16 MiB semi-space. A streamed token costs the heap a few KB of short-lived objects (the event, its SSE
//   chunk, node's HTTP write path). V8 starts the young generation at 1 MiB and grows it only when much survives,
//   which little does, so a worker streaming a few hundred tokens/s scavenged every 0.5–1.5 s (0.3–2 ms each, up to
//   10 ms when other threads hold the cores), each a possible hit on some request's time to first token. With 16 MiB
//   they are ~6–16× rarer at about the same cost each, for 32 MiB of address space.
// - No memory reducer: it runs two or three full mark-compacts in a row whenever the allocation rate drops (10–40 ms
//   pauses on a busy 2-core machine), to shrink a heap that is ~20 MB here.
import { getHeapSpaceStatistics } from 'node:v8';

/** Node flags for the worker's command line. */
export const WORKER_NODE_FLAGS: readonly string[] = [
  '--min-semi-space-size=16',
  '--max-semi-space-size=16',
  '--no-memory-reducer',
];

/** The young generation's current capacity in MiB: the semi-space new objects are allocated in (V8 reserves two). */
export function youngGenerationMiB(): number {
  const space = getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
  return space ? Math.round(space.space_size / 2 ** 20) : 0;
}
