// make bench-gateway: what the gateway adds to time-to-first-token with 200 concurrent streams through it. One real
// worker (the tiny-harmony checkpoint) and the gateway in front of it (static routing, no auth, no Redis).
//
// Method `probes` (the default): the gateway carries --concurrency streams at all times — background clients that
// send request after request through it, plus the gateway half of the probes — while --probes probe pairs run
// alongside: each pair is one request straight to the worker and one through the gateway, sent together with
// prompts of the same length, so that both see the same engine, the same batch and the same load on the machine.
// The added TTFT is, at each percentile, the gateway probes' TTFT minus the direct probes' TTFT over the same pairs
// (with a bootstrap 95 % interval); the per-pair difference shows how often the gateway's extra hop made a request
// miss an engine step. A phase with the background sent straight to the worker shows, separately, what relaying
// 200 streams costs the rest of this machine (on 2 cores the gateway's CPU is taken from the engine).
// With --baseline DIR (a checkout, e.g. a git worktree of the previous commit) a second gateway runs that
// checkout's code in front of the same worker, in alternating phases: an A/B in one run.
//
// Method `rounds` (the earlier method): closed-loop rounds of --concurrency streams, alternately all direct and all
// through the gateway (--pattern steady|burst); each round's TTFTs are compared at each percentile.
//
// TTFT = request start → first SSE event carrying generated text, measured by this client. Prints Markdown tables.
// Usage: npx tsx operator/test/gateway-bench.ts [--concurrency 200] [--probes 24] [--samples 1000] [--rounds 2]
//   [--max-tokens 128 (rounds: 16)] [--probe-max-tokens 2] [--worker-threads 1] [--baseline DIR]
//   [--method probes|rounds] [--pattern steady|burst] [--per-stream 2]
//   [--worker-entry FILE] [--gateway-entry FILE] [--checkpoint DIR] [--run-dir DIR]
// Environment: GATEWAY_BENCH_BASELINE=DIR is --baseline DIR (for `make bench-gateway`); GATEWAY_BENCH_PROF_DIR=DIR
// writes CPU profiles of the gateway(s) (node --cpu-prof) into DIR.
// On a machine without node_modules (hack/gpu/latency-bench.sh): --worker-entry and --gateway-entry name bundles (a
// .ts entry runs through tsx, as the defaults worker/src/main.ts and operator/src/gateway/main.ts do), --checkpoint a
// tiny-harmony checkpoint made there (default: the cached one, made by worker/native/build/make_checkpoint), --run-dir
// where the worker's and gateways' logs go (default: a new folder under .tmp/runs).
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { runDir, repoRoot } from '../../test/support/paths.js';
import { freePort } from '../../test/support/ports.js';
import { ManagedProcess } from '../../test/support/process.js';
import { waitFor } from '../../test/support/wait.js';
import { tinyCheckpoint } from './gateway-support.js';

const { values } = parseArgs({
  options: {
    method: { type: 'string', default: 'probes' },
    concurrency: { type: 'string', default: '200' },
    // probes: pairs in flight at once; samples: pairs measured per gateway (split over the rounds).
    probes: { type: 'string', default: '24' },
    samples: { type: 'string', default: '1000' },
    rounds: { type: 'string', default: '2' },
    // probes: the background phase (background straight to the worker) is skipped with --no-direct-background.
    'direct-background': { type: 'boolean', default: true },
    // Or GATEWAY_BENCH_BASELINE (for `make bench-gateway`).
    baseline: { type: 'string', default: process.env.GATEWAY_BENCH_BASELINE || undefined },
    // rounds only. burst: all N requests start at the same instant; steady: N clients each send --per-stream requests
    // back to back, and only the requests after each client's first count.
    pattern: { type: 'string', default: 'steady' },
    'per-stream': { type: 'string', default: '2' },
    // The streams' length (probes: the background's). 128 tokens keep 200 streams in flight while new requests
    // arrive at a rate the engine admits at its next step (short streams would queue behind its token budget).
    'max-tokens': { type: 'string' },
    // probes only: the probes' own max_tokens (only their first token is measured; short probes give more samples).
    'probe-max-tokens': { type: 'string', default: '2' },
    // One engine thread leaves the other core(s) to the client, the gateway and the worker's event loop.
    'worker-threads': { type: 'string', default: '1' },
    'worker-entry': { type: 'string' },
    // The gateway under test; a --baseline gateway always runs from its checkout's sources.
    'gateway-entry': { type: 'string' },
    checkpoint: { type: 'string' },
    'run-dir': { type: 'string' },
  },
  allowNegative: true,
});
const N = Number(values.concurrency);
const PROBES = Number(values.probes);
const SAMPLES = Number(values.samples);
const ROUNDS = Number(values.rounds);
const PATTERN = values.pattern === 'burst' ? 'burst' : 'steady';
const PER_STREAM = PATTERN === 'burst' ? 1 : Math.max(2, Number(values['per-stream']));
const MAX_TOKENS = Number(values['max-tokens'] ?? (values.method === 'rounds' ? 16 : 128));
const PROBE_MAX_TOKENS = Number(values['probe-max-tokens']);
const METHOD = values.method === 'rounds' ? 'rounds' : 'probes';
if (METHOD === 'probes' && !(PROBES >= 1 && PROBES < N))
  throw new Error('--probes must be at least 1 and below --concurrency');

// Idle sockets close after 4 s, before the servers' 5 s keep-alive timeout can close them under a new request.
const agent = new http.Agent({ keepAlive: true, timeout: 4_000, maxSockets: Infinity });

/** True when an SSE event carries generated text (content or reasoning). */
function hasText(event: string): boolean {
  if (!event.startsWith('data: {')) return false;
  const chunk = JSON.parse(event.slice(6)) as {
    choices?: { delta?: { content?: string; reasoning_content?: string } }[];
  };
  return (chunk.choices ?? []).some((c) => Boolean(c.delta?.content || c.delta?.reasoning_content));
}

/** One streaming chat request; resolves with its TTFT in ms (start → first event with generated text). */
function ttft(port: number, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    let first: number | undefined;
    let buffer = '';
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: '/v1/chat/completions',
        method: 'POST',
        agent,
        headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
      },
      (res) => {
        if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
        res.setEncoding('utf8');
        res.on('data', (text: string) => {
          if (first !== undefined) return;
          const now = performance.now();
          buffer += text;
          let at: number;
          while (first === undefined && (at = buffer.indexOf('\n\n')) !== -1) {
            if (hasText(buffer.slice(0, at))) first = now;
            buffer = buffer.slice(at + 2);
          }
        });
        res.on('error', reject);
        res.on('close', () =>
          first === undefined ? reject(new Error('stream ended without generated text')) : resolve(first - start),
        );
      },
    );
    req.on('socket', (s) => s.setNoDelay(true));
    req.on('error', reject);
    req.end(body);
  });
}

const sorted = (xs: number[]): number[] => [...xs].sort((a, b) => a - b);
const pctSorted = (s: number[], p: number): number => s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
const pct = (xs: number[], p: number): number => pctSorted(sorted(xs), p);
const ms = (x: number, digits = 2): string => (x < 0 ? '−' : '') + Math.abs(x).toFixed(digits);

/** Bootstrap 95 % interval of pct(g) − pct(d) over resampled pairs (a fixed seed: the same data give the same interval). */
function bootstrap(d: number[], g: number[], p: number, reps = 1000): [number, number] {
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * d.length;
  const diffs: number[] = [];
  for (let r = 0; r < reps; r++) {
    const ds: number[] = new Array(d.length);
    const gs: number[] = new Array(d.length);
    for (let i = 0; i < d.length; i++) {
      const j = Math.floor(rand());
      ds[i] = d[j]!;
      gs[i] = g[j]!;
    }
    diffs.push(pct(gs, p) - pct(ds, p));
  }
  const s = sorted(diffs);
  return [pctSorted(s, 2.5), pctSorted(s, 97.5)];
}

/** CPU seconds (user + system) a process has used so far. */
function cpuSeconds(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return NaN;
  }
}

/** The worker's inter-token latency so far (sum, count): its mean over a phase is the engine's step time. */
async function workerItl(port: number): Promise<{ sum: number; count: number }> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const read = (name: string) =>
    Number(
      /^(\S+)\{[^}]*\} (\S+)$/m.exec(
        text
          .split('\n')
          .filter((l) => l.startsWith(name))
          .join('\n'),
      )?.[2],
    );
  return { sum: read('vllm:inter_token_latency_seconds_sum'), count: read('vllm:inter_token_latency_seconds_count') };
}

interface GatewayUnderTest {
  label: string;
  proc: ManagedProcess;
  port: number;
}

async function main(): Promise<void> {
  const dir = values['run-dir'] ? path.resolve(values['run-dir']) : runDir('bench-gateway');
  fs.mkdirSync(dir, { recursive: true });
  const workerPort = await freePort();
  // TypeScript through tsx, a bundle as it is.
  const entry = (file: string): string[] => (file.endsWith('.ts') ? ['--import', 'tsx', file] : [file]);
  const node = (script: string, args: string[]): [string, string[]] => [
    process.execPath,
    [
      ...(process.env.GATEWAY_BENCH_PROF_DIR
        ? ['--cpu-prof', `--cpu-prof-dir=${process.env.GATEWAY_BENCH_PROF_DIR}`]
        : []),
      ...entry(script),
      ...args,
    ],
  ];
  const engineSeqs = METHOD === 'probes' ? N + PROBES : N;
  const worker = new ManagedProcess(
    'worker',
    process.execPath,
    [
      ...entry(
        values['worker-entry'] ? path.resolve(values['worker-entry']) : path.join(repoRoot, 'worker/src/main.ts'),
      ),
      '--model',
      values.checkpoint ? path.resolve(values.checkpoint) : tinyCheckpoint(),
      '--served-model-name',
      'tiny',
      '--host',
      '127.0.0.1',
      '--port',
      String(workerPort),
      '--backend',
      'cpu',
      '--threads',
      String(values['worker-threads']),
      '--max-seqs',
      String(engineSeqs),
      '--max-queue',
      String(4 * engineSeqs),
      '--date',
      '2026-01-01',
      '--log-level',
      'warn',
    ],
    { dir, cwd: repoRoot },
  ).start();
  const startGateway = async (label: string, script: string): Promise<GatewayUnderTest> => {
    const port = await freePort();
    const proc = new ManagedProcess(
      `gateway-${label}`,
      ...node(script, [
        '--host',
        '127.0.0.1',
        '--port',
        String(port),
        '--auth=false',
        '--static-models',
        `tiny=http://127.0.0.1:${workerPort}`,
        '--max-inflight-per-worker',
        String(4 * engineSeqs),
        '--log-level',
        'info',
        '--log-prompts',
      ]),
      { dir, cwd: repoRoot },
    ).start();
    return { label, proc, port };
  };
  const gateway = 'operator/src/gateway/main.ts';
  const gateways = [
    await startGateway(
      'this',
      values['gateway-entry'] ? path.resolve(values['gateway-entry']) : path.join(repoRoot, gateway),
    ),
  ];
  if (values.baseline) gateways.push(await startGateway('baseline', path.join(path.resolve(values.baseline), gateway)));
  try {
    await waitFor(async () => (worker.assertRunning(), (await fetch(`http://127.0.0.1:${workerPort}/ready`)).ok), {
      timeoutMs: 120_000,
      description: 'worker ready',
    });
    for (const g of gateways) {
      await waitFor(async () => (g.proc.assertRunning(), (await fetch(`http://127.0.0.1:${g.port}/readyz`)).ok), {
        timeoutMs: 60_000,
        description: `gateway ${g.label} ready`,
      });
    }
    const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
    const machine = `${os.cpus().length} × ${cpu}, load ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')} at start, node ${process.version}`;
    if (METHOD === 'rounds') await rounds(workerPort, gateways, machine);
    else await probes(workerPort, gateways, machine);
  } finally {
    for (const g of gateways) await g.proc.stop();
    await worker.stop();
    agent.destroy();
  }
}

const chatBody = (user: string, maxTokens = MAX_TOKENS): string =>
  JSON.stringify({
    model: 'tiny',
    stream: true,
    max_tokens: maxTokens,
    temperature: 0,
    messages: [
      { role: 'system', content: 'You are a benchmark.' },
      { role: 'user', content: user },
    ],
  });

/** The gateway's own time before each first byte (`overhead_ms` of its audit lines) for prompts matching `re`. */
function ownOverhead(g: GatewayUnderTest, re: RegExp): number[] {
  return fs
    .readFileSync(g.proc.logFile, 'utf8')
    .split('\n')
    .filter((l) => l.includes('"audit":true'))
    .map((l) => JSON.parse(l) as { overhead_ms?: number; prompt?: string })
    .filter((a) => re.test(a.prompt ?? ''))
    .map((a) => a.overhead_ms)
    .filter((v): v is number => typeof v === 'number');
}

interface Phase {
  /** The gateway under test: it carries the background and the gateway half of each probe pair. */
  gateway: GatewayUnderTest;
  /** Where the background streams go. */
  background: 'gateway' | 'direct';
  direct: number[];
  via: number[];
  gatewayCpuS: number;
  gatewayRequests: number;
  itl: { sum: number; count: number };
  seconds: number;
}

async function probes(workerPort: number, gateways: GatewayUnderTest[], machine: string): Promise<void> {
  const kinds: { gateway: GatewayUnderTest; background: 'gateway' | 'direct' }[] = gateways.map((g) => ({
    gateway: g,
    background: 'gateway',
  }));
  if (values['direct-background']) kinds.push({ gateway: gateways[0]!, background: 'direct' });
  const phases: Phase[] = kinds.map((k) => ({
    ...k,
    direct: [],
    via: [],
    gatewayCpuS: 0,
    gatewayRequests: 0,
    itl: { sum: 0, count: 0 },
    seconds: 0,
  }));
  const perRound = Math.ceil(SAMPLES / ROUNDS);
  // Every prompt has the same length (a fixed-width counter), so pairs differ only in the path they take.
  let seq = 0;
  const tag = () => String(seq++).padStart(7, '0');
  // Each pair starts after a random pause of up to one engine step (measured in the warm-up), so that pairs are not
  // sent in step with the engine (a runner's previous pair ends on a step boundary).
  let stepMs = 100;
  const sleep = (t: number) => new Promise((r) => setTimeout(r, t));

  const runPhase = async (phase: Phase, id: string, pairs: number, record: boolean) => {
    const g = phase.gateway;
    const bgPort = phase.background === 'gateway' ? g.port : workerPort;
    let stop = false;
    let gatewayRequests = 0;
    const cpu0 = cpuSeconds(g.proc.pid);
    const itl0 = await workerItl(workerPort);
    const t0 = performance.now();
    const background = Array.from({ length: N - PROBES }, async () => {
      while (!stop) {
        await ttft(bgPort, chatBody(`Background ${tag()}: tell me something.`));
        if (bgPort === g.port) gatewayRequests++;
      }
    });
    const probeBody = (user: string) => chatBody(user, PROBE_MAX_TOKENS);
    let started = 0;
    const runners = Array.from({ length: PROBES }, async () => {
      while (started < pairs) {
        const k = started++;
        await sleep(Math.random() * stepMs);
        // Which of the two is sent first, and which prompt each gets, alternate from pair to pair.
        const [a, b] = [`Probe ${id} a ${tag()}: tell me something.`, `Probe ${id} b ${tag()}: tell me something.`];
        const [dBody, gBody] = k % 2 === 0 ? [a, b] : [b, a];
        const [d, v] =
          k % 2 === 0
            ? await Promise.all([ttft(workerPort, probeBody(dBody)), ttft(g.port, probeBody(gBody))])
            : await Promise.all([ttft(g.port, probeBody(gBody)), ttft(workerPort, probeBody(dBody))]).then(
                ([x, y]) => [y, x] as const,
              );
        gatewayRequests++;
        if (record) {
          phase.direct.push(d);
          phase.via.push(v);
        }
      }
    });
    await Promise.all(runners);
    const seconds = (performance.now() - t0) / 1000;
    const cpu1 = cpuSeconds(g.proc.pid);
    const itl1 = await workerItl(workerPort);
    stop = true;
    await Promise.all(background);
    if (itl1.count > itl0.count) stepMs = (1000 * (itl1.sum - itl0.sum)) / (itl1.count - itl0.count);
    if (record) {
      phase.gatewayCpuS += cpu1 - cpu0;
      phase.gatewayRequests += gatewayRequests;
      phase.itl.sum += itl1.sum - itl0.sum;
      phase.itl.count += itl1.count - itl0.count;
      phase.seconds += seconds;
    }
    process.stderr.write(
      `phase ${id} (gateway ${g.label}, background ${phase.background}): ${pairs} pairs in ${seconds.toFixed(1)} s, ` +
        `gateway CPU ${(cpu1 - cpu0).toFixed(2)} s for ${gatewayRequests} requests${record ? '' : ' (warm-up)'}\n`,
    );
  };

  // Warm-up: connections, JIT, the worker's prefix cache for the shared system prompt.
  for (const [i, phase] of phases.entries()) await runPhase(phase, `w${i}`, 2 * PROBES, false);
  for (let r = 0; r < ROUNDS; r++) {
    // Alternate the order of the phases from round to round, so that none always runs first.
    const order = r % 2 === 0 ? phases : [...phases].reverse();
    for (const phase of order) await runPhase(phase, `r${r}p${phases.indexOf(phase)}`, perRound, true);
  }

  const out: string[] = [
    `gateway TTFT bench (probes): ${N} concurrent streams through the gateway (${N - PROBES} background + ${PROBES} probes) ` +
      `and ${PROBES} direct probes; max_tokens ${MAX_TOKENS} (probes ${PROBE_MAX_TOKENS}); worker threads ${values['worker-threads']}; ${ROUNDS} rounds; ${machine}`,
    '',
  ];
  for (const [i, phase] of phases.entries()) {
    const { direct: d, via: v } = phase;
    const paired = d.map((x, j) => v[j]! - x);
    const step = phase.itl.count > 0 ? (1000 * phase.itl.sum) / phase.itl.count : NaN;
    const own = ownOverhead(phase.gateway, new RegExp(`^user: Probe r\\d+p${i} `, 'm'));
    const sameStep = paired.filter((x) => Math.abs(x) <= step / 2);
    out.push(
      `### gateway ${phase.gateway.label}, background ${phase.background === 'gateway' ? `through the gateway (${N} streams in it)` : `straight to the worker (${PROBES} streams in the gateway)`}`,
      '',
      `${d.length} pairs in ${phase.seconds.toFixed(0)} s; engine step (worker's mean inter-token latency) ${step.toFixed(1)} ms; ` +
        `gateway CPU ${((1000 * phase.gatewayCpuS) / Math.max(1, phase.gatewayRequests)).toFixed(2)} ms per request ` +
        `(${phase.gatewayRequests} requests, ${((100 * phase.gatewayCpuS) / phase.seconds).toFixed(1)} % of a core)`,
      '',
      '| percentile | direct TTFT ms | via gateway TTFT ms | added ms (95 % CI) | ratio gateway/direct | per-pair difference ms | gateway own overhead ms |',
      '|---|---|---|---|---|---|---|',
      ...[50, 90, 99].map((p) => {
        const [lo, hi] = bootstrap(d, v, p);
        const dp = pct(d, p);
        const vp = pct(v, p);
        return `| p${p} | ${ms(dp)} | ${ms(vp)} | ${ms(vp - dp)} (${ms(lo)} … ${ms(hi)}) | ${(vp / dp).toFixed(3)} | ${ms(pct(paired, p))} | ${own.length ? ms(pct(own, p), 3) : '–'} |`;
      }),
      '',
      `pairs where the gateway request got its first token a step later than the direct one (difference > half a step): ` +
        `${((100 * paired.filter((x) => x > step / 2).length) / paired.length).toFixed(1)} %; a step earlier: ` +
        `${((100 * paired.filter((x) => x < -step / 2).length) / paired.length).toFixed(1)} %. ` +
        `Pairs served in the same step (${sameStep.length}): difference p50 ${ms(pct(sameStep, 50))}, p90 ${ms(pct(sameStep, 90))}, p99 ${ms(pct(sameStep, 99))} ms`,
      '',
    );
  }
  process.stdout.write(out.join('\n'));
}

async function rounds(workerPort: number, gateways: GatewayUnderTest[], machine: string): Promise<void> {
  const round = async (port: number, label: string) => {
    const t0 = performance.now();
    const out: number[] = [];
    await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        for (let k = 0; k < PER_STREAM; k++) {
          const t = await ttft(port, chatBody(`Request ${i}.${k}: tell me something.`));
          if (PATTERN === 'burst' || k > 0) out.push(t);
        }
      }),
    );
    process.stderr.write(`round ${label}: ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
    return out;
  };
  const paths = [{ label: 'direct', port: workerPort }, ...gateways.map((g) => ({ label: g.label, port: g.port }))];
  for (const p of paths) await round(p.port, `${p.label} (warm-up)`);
  const ttfts = new Map<string, number[]>(paths.map((p) => [p.label, []]));
  for (let r = 0; r < ROUNDS; r++) {
    for (const p of r % 2 === 0 ? paths : [...paths].reverse())
      ttfts.get(p.label)!.push(...(await round(p.port, p.label)));
  }
  const direct = ttfts.get('direct')!;
  const out = [
    `gateway TTFT bench (rounds): ${N} concurrent streams (${PATTERN}${PATTERN === 'steady' ? `, ${PER_STREAM} requests each, first not counted` : ''}) × ${ROUNDS} rounds per path, max_tokens ${MAX_TOKENS}, worker threads ${values['worker-threads']}, ${machine}`,
    '',
  ];
  for (const g of gateways) {
    const via = ttfts.get(g.label)!;
    const own = ownOverhead(g, PATTERN === 'burst' ? /^user: Request /m : /^user: Request \d+\.[1-9]/m);
    out.push(
      `### gateway ${g.label}`,
      '',
      '| percentile | direct TTFT ms | via gateway TTFT ms | difference ms | ratio gateway/direct | gateway own overhead ms |',
      '|---|---|---|---|---|---|',
      ...[50, 90, 99].map((p) => {
        const dp = pct(direct, p);
        const vp = pct(via, p);
        return `| p${p} | ${ms(dp)} | ${ms(vp)} | ${ms(vp - dp)} | ${(vp / dp).toFixed(3)} | ${own.length ? ms(pct(own, p), 3) : '–'} |`;
      }),
      '',
      `(${direct.length} direct and ${via.length} gateway streams; own overhead from ${own.length} audit lines, warm-up included)`,
      '',
    );
  }
  process.stdout.write(out.join('\n'));
}

main().catch((err: unknown) => {
  process.stderr.write(`bench-gateway: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
