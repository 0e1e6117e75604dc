// `make sim`: replays the Azure code trace at several speeds through the simulator with each policy and prints
// TTFT SLO attainment, TTFT percentiles, GPU-hours, scale events and rejected requests; writes plots to .tmp/sim/.
// First, per speed, the trace's bursts that no reactive policy serves (bursts.ts), then the policy tables.
//   npx tsx hack/sim/main.ts [--trace FILE] [--speeds 1,2,5] [--cold-starts 30,5] [--standby 1] [--jitter-seed N]
//     [--out .tmp/sim] [--synthetic decode-heavy]
// --jitter-seed N (N > 0) moves every arrival by up to ±0.25 s (seeded) before the replay, to show the replay's noise.
// --synthetic decode-heavy replays a generated load of short prompts and long answers instead of the trace
// (trace.ts: decodeHeavyTrace), where prompt tokens alone would size one replica.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { hpaPolicy, knativePolicy, OURS_CONFIG, oursPolicy, staticPolicy } from './policies.js';
import { burstOutcomes, burstTable, findBursts, type StartupClasses } from './bursts.js';
import { burstReport, plotHtml } from './report.js';
import { GATEWAY_DEFAULTS, simulate, type SimOptions, type SimResult } from './simulator.js';
import { decodeHeavyTrace, jitterTrace, loadTrace, scaleTrace, type TraceRequest } from './trace.js';
import { GPT_OSS_120B_H100, prefillThroughput } from './workerModel.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
/** Seconds from promoting a loaded standby to its first routed request (label patch, EndpointSlice, gateway). */
const PROMOTE_S = 1;

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}
const numbers = (s: string, flag: string): number[] =>
  s.split(',').map((x) => {
    const n = Number(x);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${flag}: ${JSON.stringify(x)} is not a positive number`);
    return n;
  });

/**
 * The static baselines' sizes: replicas for the trace's peak prompt-token rate over 10 s windows (the issue's
 * static peak) and over 2 s windows (enough for the sharpest bursts), and for its mean rate.
 */
function staticSizes(trace: TraceRequest[], perReplica: number): { peak: number; burst: number; mean: number } {
  const peakOver = (seconds: number) => {
    const windows = new Map<number, number>();
    for (const r of trace) {
      const w = Math.floor(r.t / seconds);
      windows.set(w, (windows.get(w) ?? 0) + r.context);
    }
    return Math.max(...windows.values()) / seconds;
  };
  const total = trace.reduce((sum, r) => sum + r.context, 0);
  const meanRate = total / Math.max(1, trace[trace.length - 1]!.t);
  return {
    peak: Math.ceil(peakOver(10) / perReplica),
    burst: Math.ceil(peakOver(2) / perReplica),
    mean: Math.max(1, Math.ceil(meanRate / perReplica)),
  };
}

const pct = (x: number) => (100 * x).toFixed(1);
const sec = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '-');

function row(r: SimResult): string {
  return `| ${r.policy} | ${pct(r.sloAttainment)} | ${sec(r.ttftP95)} | ${sec(r.ttftP99)} | ${r.gpuHours.toFixed(2)} | ${r.scaleEvents} | ${r.rejected} | ${r.maxReplicas} |`;
}

function main(): void {
  const traceFile = path.resolve(
    repoRoot,
    arg('trace', path.join(repoRoot, '../shared/traces/azure-llm-2023-code.csv')),
  );
  const speeds = numbers(arg('speeds', '1,2,5'), 'speeds');
  const coldStarts = numbers(arg('cold-starts', '30,5'), 'cold-starts');
  const standbys = Number(arg('standby', '1'));
  if (!Number.isInteger(standbys) || standbys < 0) throw new Error(`--standby: ${arg('standby', '1')} is not a count`);
  const outDir = path.resolve(repoRoot, arg('out', '.tmp/sim'));
  mkdirSync(outDir, { recursive: true });
  const seed = Number(arg('jitter-seed', '0'));
  if (!Number.isInteger(seed) || seed < 0) throw new Error(`--jitter-seed: ${arg('jitter-seed', '0')} is not a count`);
  const synthetic = arg('synthetic', '');
  if (synthetic && synthetic !== 'decode-heavy') throw new Error(`--synthetic: ${synthetic} is not decode-heavy`);
  const loaded = synthetic ? decodeHeavyTrace() : loadTrace(traceFile);
  const base = seed > 0 ? jitterTrace(loaded, seed) : loaded;
  const model = GPT_OSS_120B_H100;
  const meanContext = base.reduce((s, r) => s + r.context, 0) / base.length;
  const perReplica = prefillThroughput(model, meanContext);
  const source = synthetic ? `synthetic ${synthetic}` : `trace ${path.relative(repoRoot, traceFile)}`;
  console.log(`${source}: ${base.length} requests over ${base[base.length - 1]!.t.toFixed(0)} s`);
  console.log(
    `worker: ${model.name}; prefill ${Math.round(perReplica)} tok/s/replica at mean context ${Math.round(meanContext)}`,
  );
  console.log(
    'TTFT SLO 2 s; attainment counts rejected requests as misses; GPU-hours include cold starts and drains\n',
  );

  const optionsFor = (speed: number, coldStartS: number): SimOptions => ({
    ...GATEWAY_DEFAULTS,
    model,
    coldStartS,
    promoteS: PROMOTE_S,
    sampleEveryS: 5 / speed,
  });

  const classes: StartupClasses = [
    ...coldStarts.map((c): [string, number] => [`${c} s start`, c]),
    // As many loaded standbys as the burst needs, each serving PROMOTE_S after its promotion.
    [`standby promotion (${PROMOTE_S} s)`, PROMOTE_S],
  ];
  for (const speed of speeds) {
    const trace = scaleTrace(base, speed);
    const outcomes = burstOutcomes(trace, findBursts(trace, perReplica), optionsFor(speed, coldStarts[0]!), classes);
    console.log(`### Bursts at ${speed}x that no reactive policy serves\n`);
    console.log(burstTable(outcomes, classes, trace.length, perReplica) + '\n');
  }

  for (const coldStartS of coldStarts) {
    for (const speed of speeds) {
      const trace = scaleTrace(base, speed);
      const sizes = staticSizes(trace, perReplica);
      const options = optionsFor(speed, coldStartS);
      const started = Date.now();
      const countsOnly = { serviceRate: true, tokens: false };
      // What loop.ts feeds: the prompt-token signals, with spec.autoscaling.prefillTokensPerSecond set to one
      // replica's prefill rate from the worker model (the engine's benchmark); ours-measured leaves it unset (the
      // policy measures the rate), ours-counts leaves the token signals out (the loop before they were wired).
      const oursConfig = { ...OURS_CONFIG, prefillTokensPerSecond: perReplica };
      const results = [
        oursPolicy(oursConfig, 'ours'),
        oursPolicy(OURS_CONFIG, 'ours-measured'),
        oursPolicy(OURS_CONFIG, 'ours-counts', countsOnly),
        staticPolicy(`static-peak(${sizes.peak})`, sizes.peak),
        staticPolicy(`static-mean(${sizes.mean})`, sizes.mean),
        hpaPolicy(),
        knativePolicy(),
        staticPolicy(`static-burst(${sizes.burst})`, sizes.burst),
      ].map((p) => simulate(trace, p, options));
      if (standbys > 0) {
        const policy = oursPolicy(oursConfig, `ours+standby(${standbys})`);
        results.push(simulate(trace, policy, { ...options, standbyReplicas: standbys }));
      }
      const elapsed = (Date.now() - started) / 1000;
      console.log(`### ${speed}x speed, ${coldStartS} s cold start (simulated in ${elapsed.toFixed(1)} s)\n`);
      console.log('| policy | TTFT<=2s % | p95 TTFT s | p99 TTFT s | GPU-h | scale events | rejected | max replicas |');
      console.log('|---|---|---|---|---|---|---|---|');
      for (const r of results) console.log(row(r));
      const named = (prefix: string) => results.find((r) => r.policy.startsWith(prefix))!;
      const peak = named('static-peak');
      const burstSized = named('static-burst');
      const dynamic = [named('hpa-util'), named('knative-kpa')];
      console.log('');
      for (const ours of results.filter((r) => r.policy.startsWith('ours'))) {
        const dominatedBy = dynamic
          .filter((r) => r.sloAttainment > ours.sloAttainment && r.gpuHours < ours.gpuHours)
          .map((r) => r.policy);
        console.log(
          `${ours.policy} vs static peak: attainment ${(100 * (ours.sloAttainment - peak.sloAttainment)).toFixed(2)} points, ` +
            `GPU-hours ${pct(ours.gpuHours / peak.gpuHours)} %` +
            ` (${pct(ours.gpuHours / burstSized.gpuHours)} % of ${burstSized.policy})` +
            (ours.standbyGpuHours > 0 ? ` (standbys ${ours.standbyGpuHours.toFixed(2)} GPU-h)` : '') +
            `; dominated by a dynamic baseline: ${dominatedBy.length ? dominatedBy.join(', ') : 'no'}`,
        );
      }
      console.log(burstReport(results[0]!, 2));
      const file = path.join(outDir, `sim-${speed}x-cold${coldStartS}s.html`);
      writeFileSync(file, plotHtml(`${speed}x speed, ${coldStartS} s cold start`, results));
      console.log(`plot: ${path.relative(repoRoot, file)}\n`);
    }
  }
}

main();
