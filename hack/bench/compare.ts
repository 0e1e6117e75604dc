// `make bench-serve`: the worker's HTTP path against the engine driven directly, on the same generated checkpoint,
// the same prompts and the same machine, in one run. Reports decode throughput as a ratio (HTTP / direct; target ≥ 0.9)
// and the TTFT the HTTP path adds (target p99 ≤ 2 ms) at concurrency 1 and 32.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadEngine } from '../../worker/src/engine/native.js';
import type { EngineOptions } from '../../worker/src/engine/types.js';
import { Tokenizer } from '../../worker/src/tokenizer.js';
import { runDirect } from './lib/engine-direct.js';
import { report, runLoad, type RequestResult } from './lib/load.js';
import { buildRequests, plotResults, printSummary } from './serve.js';

const REPO = resolve(import.meta.dirname, '../..');
const { values } = parseArgs({
  options: {
    preset: { type: 'string', default: 'tiny-harmony' },
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
    'worker-entry': { type: 'string', default: '' },
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

async function startWorker(args: string[]): Promise<{ url: string; stop(): Promise<void> }> {
  const entry = values['worker-entry']
    ? [values['worker-entry']]
    : ['--import', 'tsx', join(REPO, 'worker/src/main.ts')];
  const child = spawn(process.execPath, [...entry, ...args], {
    cwd: REPO,
    stdio: ['ignore', 'ignore', 'pipe'],
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
    stop: () =>
      new Promise((res) => {
        child.on('exit', () => res());
        child.kill('SIGTERM');
      }),
  };
}

const fmt = (x: unknown, digits = 2): string => (typeof x === 'number' ? x.toFixed(digits) : String(x));

async function main(): Promise<void> {
  const dir = checkpoint(values.preset!);
  const levels = values.concurrency!.split(',').map(Number);
  const numPrompts = Number(values['num-prompts']);
  const maxSeqs = Math.max(...levels);
  const engineOptions: EngineOptions = {
    modelPath: dir,
    maxContext: 1024,
    maxSeqs,
    ...(values.threads ? { threads: Number(values.threads) } : {}),
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

  // 2. The same through the worker's HTTP path (a separate process, as deployed).
  const port = 18000 + Math.floor(Math.random() * 1000);
  const worker = await startWorker([
    '--model',
    dir,
    '--served-model-name',
    'bench',
    '--port',
    String(port),
    '--host',
    '127.0.0.1',
    '--max-context',
    '1024',
    '--max-seqs',
    String(maxSeqs),
    ...(values.threads ? ['--threads', values.threads] : []),
  ]);
  const http: Record<number, Record<string, unknown>> = {};
  const httpResults: Record<number, RequestResult[]> = {};
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
      const { results, durationS } = await runLoad(opts, requestsFor(c));
      http[c] = report(results, durationS);
      httpResults[c] = results;
      printSummary(`HTTP (worker), concurrency ${c}`, http[c]);
    }
  } finally {
    await worker.stop();
  }

  // 3. Ratios.
  const rows = levels.map((c) => {
    const d = direct[c]!;
    const h = http[c]!;
    return {
      concurrency: c,
      direct_output_tok_s: d.output_throughput as number,
      http_output_tok_s: h.output_throughput as number,
      throughput_ratio: (h.output_throughput as number) / (d.output_throughput as number),
      direct_p50_ttft_ms: d.p50_ttft_ms as number,
      http_p50_ttft_ms: h.p50_ttft_ms as number,
      direct_p99_ttft_ms: d.p99_ttft_ms as number,
      http_p99_ttft_ms: h.p99_ttft_ms as number,
      added_p50_ttft_ms: (h.p50_ttft_ms as number) - (d.p50_ttft_ms as number),
      added_p99_ttft_ms: (h.p99_ttft_ms as number) - (d.p99_ttft_ms as number),
      direct_mean_itl_ms: d.mean_itl_ms as number,
      http_mean_itl_ms: h.mean_itl_ms as number,
    };
  });
  console.log(
    '\n| concurrency | direct tok/s | HTTP tok/s | ratio | TTFT p50 direct/HTTP (ms) | TTFT p99 direct/HTTP (ms) | added p99 (ms) |',
  );
  console.log('|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(
      `| ${r.concurrency} | ${fmt(r.direct_output_tok_s, 1)} | ${fmt(r.http_output_tok_s, 1)} | ${fmt(r.throughput_ratio, 3)} | ${fmt(r.direct_p50_ttft_ms)} / ${fmt(r.http_p50_ttft_ms)} | ${fmt(r.direct_p99_ttft_ms)} / ${fmt(r.http_p99_ttft_ms)} | ${fmt(r.added_p99_ttft_ms)} |`,
    );
  }
  mkdirSync(join(values.out!, '..'), { recursive: true });
  writeFileSync(values.out!, JSON.stringify({ checkpoint: dir, engineOptions, rows, direct, http }, null, 1));
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
