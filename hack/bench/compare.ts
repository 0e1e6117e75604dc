// `make bench-serve`: the worker's HTTP path against the engine driven directly, on the same generated checkpoint,
// the same prompts and the same machine, in one run. Reports decode throughput as a ratio (HTTP / direct; target ≥ 0.9)
// and the TTFT the HTTP path adds (target p99 ≤ 2 ms) at concurrency 1 and 32: per request, the client's TTFT minus
// the worker's `engine-ttft` (its Server-Timing trailer), and, as before, the difference of the two runs' TTFT
// percentiles (which the two runs' own spread dominates on a busy machine). Also, per request, the CPU time of the
// worker's event-loop thread and how long it waited for a CPU (Linux), the measure of the HTTP path's own cost.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadEngine } from '../../worker/src/engine/native.js';
import type { EngineOptions } from '../../worker/src/engine/types.js';
import { WORKER_NODE_FLAGS } from '../../worker/src/gc.js';
import { Tokenizer } from '../../worker/src/tokenizer.js';
import { runDirect } from './lib/engine-direct.js';
import { report, runLoad, type RequestResult } from './lib/load.js';
import { serverTimingSummary } from './lib/server-timing.js';
import { buildRequests, plotResults, printSummary } from './serve.js';

const REPO = resolve(import.meta.dirname, '../..');
const { values } = parseArgs({
  options: {
    preset: { type: 'string', default: 'tiny-harmony' },
    // A model to load instead of the generated preset: a checkpoint directory, or synthetic:gpt-oss-20b with
    // --backend cuda (hack/gpu/worker-bench.sh).
    model: { type: 'string', default: '' },
    backend: { type: 'string', default: '' },
    'max-context': { type: 'string', default: '1024' },
    'kv-memory-mb': { type: 'string', default: '' },
    concurrency: { type: 'string', default: '1,32' },
    'num-prompts': { type: 'string', default: '64' },
    'input-len': { type: 'string', default: '128' },
    'output-len': { type: 'string', default: '128' },
    threads: { type: 'string', default: '' },
    // Requests before each measured run (other prompts, 8 tokens each), on both sides alike: a worker that served one
    // request still runs its request path in V8's baseline tiers (HTTP TTFT fell by ≈ 1 ms over the first ~30
    // measured requests with a one-request warm-up), which is not the server a client meets in steady state.
    'warmup-requests': { type: 'string', default: '64' },
    out: { type: 'string', default: join(REPO, '.tmp/bench/worker-serve.json') },
    // For machines without the repo's node_modules (the GPU box): a bundled worker entry and the checkpoint tool.
    // A .ts entry runs through tsx, as the default (worker/src/main.ts) does. Several entries, comma-separated (A/B:
    // another checkout's worker, a bundle), are measured in turn, `--rounds` times alternately, against one
    // engine-direct run.
    'worker-entry': { type: 'string', default: '' },
    rounds: { type: 'string', default: '1' },
    // Node/V8 flags for the worker processes, space-separated (default: the deployed ones, worker/src/gc.ts; given,
    // they replace those, e.g. --worker-node-args=--trace-gc; more per entry: `entry@flags` in --worker-entry), and a
    // file prefix for their stdout (where --trace-gc writes; discarded otherwise): PREFIX.<entry index>.<round>.log.
    'worker-node-args': { type: 'string', default: WORKER_NODE_FLAGS.join(' ') },
    'worker-stdout': { type: 'string', default: '' },
    'make-checkpoint': { type: 'string', default: join(REPO, 'worker/native/build/make_checkpoint') },
  },
});

function checkpoint(preset: string): string {
  const cache = process.env.MODELSERVE_CACHE ?? join(homedir(), '.cache/modelserve');
  const dir = join(cache, 'checkpoints', `${preset}-seed1`);
  if (existsSync(join(dir, 'config.json'))) return dir;
  const tool = values['make-checkpoint']!;
  mkdirSync(join(dir, '..'), { recursive: true });
  const made = spawnSync(tool, ['--preset', preset, '--seed', '1', '--out', dir], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`${tool} failed (run \`make native\`): ${made.stderr ?? made.error}`);
  return dir;
}

interface WorkerEntry {
  /** What the tables call it: the entry as given, with its flags. */
  label: string;
  main: string;
  nodeArgs: string[];
}

function workerEntries(): WorkerEntry[] {
  const common = values['worker-node-args']!.split(' ').filter(Boolean);
  const given = values['worker-entry'] ? values['worker-entry'].split(',') : [''];
  return given.map((spec) => {
    const [path, flags = ''] = spec.split('@');
    const main = path ? resolve(path) : join(REPO, 'worker/src/main.ts');
    return { label: spec || 'worker/src/main.ts', main, nodeArgs: [...common, ...flags.split(' ').filter(Boolean)] };
  });
}

/** CPU time of a worker process (Linux /proc; undefined elsewhere), in ms: its main thread's — the event loop, where
 * the HTTP path runs — `run` on a CPU and `wait` runnable but waiting for one (schedstat), and all its threads'
 * (`process`, clock ticks). Wall-clock profiles (--cpu-prof) count a preempted thread's waits as its functions'
 * time, so these are what a change to the JS path's cost per request is read from; `wait` is the contention. */
interface CpuTimes {
  run: number;
  wait: number;
  process: number;
}

function cpuTimes(pid: number | undefined): CpuTimes | undefined {
  if (pid === undefined) return undefined;
  try {
    const [run, wait] = readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ').map(Number);
    // Fields 14 and 15 (utime, stime), after the parenthesized command name; 100 ticks a second on Linux.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    return { run: run! / 1e6, wait: wait! / 1e6, process: ticks * 10 };
  } catch {
    return undefined;
  }
}

/** Per-request CPU of a measured run, from cpuTimes() before and after it. */
function cpuPerRequest(before: CpuTimes | undefined, after: CpuTimes | undefined, requests: number) {
  if (!before || !after || requests === 0) return {};
  return {
    js_thread_cpu_ms_per_request: (after.run - before.run) / requests,
    js_thread_wait_ms_per_request: (after.wait - before.wait) / requests,
    worker_cpu_ms_per_request: (after.process - before.process) / requests,
  };
}

async function startWorker(
  worker: WorkerEntry,
  args: string[],
  stdoutFile?: string,
): Promise<{ url: string; pid?: number; stop(): Promise<void> }> {
  const entry = worker.main.endsWith('.ts') ? ['--import', 'tsx', worker.main] : [worker.main];
  const stdout = stdoutFile ? openSync(stdoutFile, 'w') : 'ignore';
  const child = spawn(process.execPath, [...worker.nodeArgs, ...entry, ...args], {
    cwd: REPO,
    stdio: ['ignore', stdout, 'pipe'],
    env: { ...process.env, MODELSERVE_LOG_LEVEL: 'warn' },
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const port = Number(args[args.indexOf('--port') + 1]);
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`worker exited: ${stderr}`);
    if (i > 600) throw new Error(`worker not ready: ${stderr}`);
    const ok = await fetch(`${url}/ready`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    pid: child.pid,
    stop: () =>
      new Promise((res) => {
        child.on('exit', () => res());
        child.kill('SIGTERM');
      }),
  };
}

const fmt = (x: unknown, digits = 2): string => (typeof x === 'number' ? x.toFixed(digits) : String(x));

async function main(): Promise<void> {
  const dir = values.model || checkpoint(values.preset!);
  const levels = values.concurrency!.split(',').map(Number);
  const numPrompts = Number(values['num-prompts']);
  const maxSeqs = Math.max(...levels);
  const engineOptions: EngineOptions = {
    modelPath: dir,
    maxContext: Number(values['max-context']),
    maxSeqs,
    ...(values.threads ? { threads: Number(values.threads) } : {}),
    ...(values.backend ? { backend: values.backend as NonNullable<EngineOptions['backend']> } : {}),
    ...(values['kv-memory-mb'] ? { kvMemoryBytes: Number(values['kv-memory-mb']) * 1024 * 1024 } : {}),
  };
  const requestsFor = (c: number, seed = 1) =>
    buildRequests({
      baseUrl: '',
      model: 'bench',
      endpoint: 'completions',
      mode: 'concurrency',
      concurrency: c,
      rate: 0,
      numPrompts: Math.max(numPrompts, c * 2),
      inputLen: Number(values['input-len']),
      outputLen: Number(values['output-len']),
      timeScale: 1,
      maxInputLen: 1e9,
      maxOutputLen: 1e9,
      seed,
    });
  // Other prompts (another seed), so the warm-up leaves no prefix-cache entries for the measured prompts.
  const warmupFor = (c: number) =>
    requestsFor(c, 2)
      .slice(0, Math.max(c, Number(values['warmup-requests'])))
      .map((r) => ({ ...r, outputTokens: Math.min(r.outputTokens, 8) }));

  // 1. Engine-direct, in this process.
  const engine = await loadEngine(engineOptions);
  const tokenizer = new Tokenizer();
  const direct: Record<number, Record<string, unknown>> = {};
  for (const c of levels) {
    await runDirect(engine, tokenizer, warmupFor(c), c);
    const { results, durationS } = await runDirect(engine, tokenizer, requestsFor(c), c);
    direct[c] = report(results, durationS);
    printSummary(`engine direct, concurrency ${c}`, direct[c]);
  }
  await engine.close();

  // 2. The same through the worker's HTTP path (a separate process, as deployed); A/B entries alternate.
  const entries = workerEntries();
  const rounds = Number(values.rounds);
  const runs: {
    worker: string;
    round: number;
    http: Record<number, Record<string, unknown>>;
    /** Each request's TTFT (ms), in request order, per concurrency. */
    ttftMs: Record<number, number[]>;
    /** Each request's Server-Timing metrics (ms), in request order, per concurrency. */
    serverTiming: Record<number, Record<string, number>[]>;
  }[] = [];
  const httpResults: Record<number, RequestResult[]> = {};
  for (let round = 0; round < rounds; round++) {
    for (const [k, entry] of entries.entries()) {
      const port = 18000 + Math.floor(Math.random() * 1000);
      const worker = await startWorker(
        entry,
        [
          '--model',
          dir,
          '--served-model-name',
          'bench',
          '--port',
          String(port),
          '--host',
          '127.0.0.1',
          '--max-context',
          values['max-context']!,
          '--max-seqs',
          String(maxSeqs),
          ...(values.threads ? ['--threads', values.threads] : []),
          ...(values.backend ? ['--backend', values.backend] : []),
          ...(values['kv-memory-mb'] ? ['--kv-memory-mb', values['kv-memory-mb']] : []),
        ],
        values['worker-stdout'] ? `${values['worker-stdout']}.${k}.${round}.log` : undefined,
      );
      const http: Record<number, Record<string, unknown>> = {};
      const ttftMs: Record<number, number[]> = {};
      const serverTiming: Record<number, Record<string, number>[]> = {};
      try {
        for (const c of levels) {
          const opts = {
            baseUrl: worker.url,
            model: 'bench',
            endpoint: 'completions' as const,
            concurrency: c,
            scheduled: false,
          };
          await runLoad(opts, warmupFor(c));
          const cpuBefore = cpuTimes(worker.pid);
          const { results, durationS } = await runLoad(opts, requestsFor(c));
          const cpu = cpuPerRequest(cpuBefore, cpuTimes(worker.pid), results.length);
          http[c] = { ...report(results, durationS), ...serverTimingSummary(results), ...cpu };
          ttftMs[c] = results.map((r) => Number(r.ttftMs.toFixed(3)));
          serverTiming[c] = results.map((r) => r.serverTiming ?? {});
          if (round === 0 && k === 0) httpResults[c] = results;
          printSummary(`HTTP (${entry.label}, round ${round + 1}), concurrency ${c}`, http[c]);
        }
      } finally {
        await worker.stop();
      }
      runs.push({ worker: entry.label, round: round + 1, http, ttftMs, serverTiming });
    }
  }
  const http = runs[0]!.http;

  // 3. Ratios.
  const rows = runs.flatMap((run) =>
    levels.map((c) => {
      const d = direct[c]!;
      const h = run.http[c]!;
      return {
        ...(runs.length > 1 ? { worker: run.worker, round: run.round } : {}),
        concurrency: c,
        direct_output_tok_s: d.output_throughput as number,
        http_output_tok_s: h.output_throughput as number,
        throughput_ratio: (h.output_throughput as number) / (d.output_throughput as number),
        direct_p50_ttft_ms: d.p50_ttft_ms as number,
        http_p50_ttft_ms: h.p50_ttft_ms as number,
        direct_p99_ttft_ms: d.p99_ttft_ms as number,
        http_p99_ttft_ms: h.p99_ttft_ms as number,
        // Differences of percentiles between the two runs (not per request).
        ttft_p50_diff_ms: (h.p50_ttft_ms as number) - (d.p50_ttft_ms as number),
        ttft_p99_diff_ms: (h.p99_ttft_ms as number) - (d.p99_ttft_ms as number),
        // Per request: client TTFT − the worker's engine-ttft (Server-Timing), and the worker's pre/post parts.
        added_ttft_p50_ms: h.p50_added_ttft_ms as number,
        added_ttft_p90_ms: h.p90_added_ttft_ms as number,
        added_ttft_p99_ms: h.p99_added_ttft_ms as number,
        added_ttft_max_ms: h.max_added_ttft_ms as number,
        server_recv_p50_ms: h.p50_server_recv_ms as number,
        server_recv_p99_ms: h.p99_server_recv_ms as number,
        server_pre_p50_ms: h.p50_server_pre_ms as number,
        server_pre_p99_ms: h.p99_server_pre_ms as number,
        server_post_p50_ms: h.p50_server_post_ms as number,
        server_post_p99_ms: h.p99_server_post_ms as number,
        unattributed_p50_ms: h.p50_unattributed_ms as number,
        unattributed_p99_ms: h.p99_unattributed_ms as number,
        server_timing_requests: h.server_timing_requests as number,
        server_timing_missing: h.server_timing_missing as number,
        direct_mean_itl_ms: d.mean_itl_ms as number,
        http_mean_itl_ms: h.mean_itl_ms as number,
        js_thread_cpu_ms_per_request: h.js_thread_cpu_ms_per_request as number | undefined,
        js_thread_wait_ms_per_request: h.js_thread_wait_ms_per_request as number | undefined,
        worker_cpu_ms_per_request: h.worker_cpu_ms_per_request as number | undefined,
      };
    }),
  );
  const several = runs.length > 1;
  console.log(
    `\n|${several ? ' worker | round |' : ''} concurrency | direct tok/s | HTTP tok/s | ratio | TTFT p50 direct/HTTP (ms) | TTFT p99 direct/HTTP (ms) | p99 diff of runs (ms) | added TTFT per request p50/p90/p99/max (ms) | server recv p50/p99 | server pre p50/p99 | server post p50/p99 | no Server-Timing |`,
  );
  console.log(`|${several ? '---|---|' : ''}---|---|---|---|---|---|---|---|---|---|---|---|`);
  for (const r of rows) {
    console.log(
      `|${several ? ` ${r.worker} | ${r.round} |` : ''} ${r.concurrency} | ${fmt(r.direct_output_tok_s, 1)} | ${fmt(r.http_output_tok_s, 1)} | ${fmt(r.throughput_ratio, 3)} | ${fmt(r.direct_p50_ttft_ms)} / ${fmt(r.http_p50_ttft_ms)} | ${fmt(r.direct_p99_ttft_ms)} / ${fmt(r.http_p99_ttft_ms)} | ${fmt(r.ttft_p99_diff_ms)} | ${fmt(r.added_ttft_p50_ms)} / ${fmt(r.added_ttft_p90_ms)} / ${fmt(r.added_ttft_p99_ms)} / ${fmt(r.added_ttft_max_ms)} | ${fmt(r.server_recv_p50_ms)} / ${fmt(r.server_recv_p99_ms)} | ${fmt(r.server_pre_p50_ms)} / ${fmt(r.server_pre_p99_ms)} | ${fmt(r.server_post_p50_ms)} / ${fmt(r.server_post_p99_ms)} | ${r.server_timing_missing} of ${r.server_timing_missing + r.server_timing_requests} |`,
    );
  }
  if (rows.some((r) => r.js_thread_cpu_ms_per_request !== undefined)) {
    console.log(
      `\n|${several ? ' worker | round |' : ''} concurrency | worker JS thread CPU per request (ms) | JS thread runnable, waiting for a CPU, per request (ms) | worker process CPU per request, all threads (ms) |`,
    );
    console.log(`|${several ? '---|---|' : ''}---|---|---|---|`);
    for (const r of rows) {
      console.log(
        `|${several ? ` ${r.worker} | ${r.round} |` : ''} ${r.concurrency} | ${fmt(r.js_thread_cpu_ms_per_request, 3)} | ${fmt(r.js_thread_wait_ms_per_request, 3)} | ${fmt(r.worker_cpu_ms_per_request, 1)} |`,
      );
    }
  }
  mkdirSync(join(values.out!, '..'), { recursive: true });
  writeFileSync(values.out!, JSON.stringify({ checkpoint: dir, engineOptions, rows, direct, http, runs }, null, 1));
  const top = levels[levels.length - 1]!;
  writeFileSync(
    values.out!.replace(/\.json$/, '.html'),
    plotResults(`worker HTTP path, concurrency ${top}`, httpResults[top]!),
  );
  console.log(`\nwrote ${values.out} and ${values.out!.replace(/\.json$/, '.html')}`);
}

main().catch((err: unknown) => {
  console.error((err as Error).stack ?? err);
  process.exit(1);
});
