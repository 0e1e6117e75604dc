// `make sim`: replays the Azure code trace at several speeds through the simulator with each policy and prints
// TTFT SLO attainment, TTFT percentiles, GPU-hours, scale events and rejected requests; writes plots to .tmp/sim/.
//   npx tsx hack/sim/main.ts [--trace FILE] [--speeds 1,2,5] [--cold-starts 30,5] [--out .tmp/sim]
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { hpaPolicy, knativePolicy, oursPolicy, staticPolicy } from './policies.js';
import { burstReport, plotHtml } from './report.js';
import { simulate, type SimOptions, type SimResult } from './simulator.js';
import { loadTrace, scaleTrace, type TraceRequest } from './trace.js';
import { GPT_OSS_120B_H100, prefillThroughput } from './workerModel.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

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

/** Replicas for the trace's peak (10 s windows) and mean prefill token rates: the static baselines' sizes. */
function staticSizes(trace: TraceRequest[], perReplica: number): { peak: number; mean: number } {
  const windows = new Map<number, number>();
  let total = 0;
  for (const r of trace) {
    windows.set(Math.floor(r.t / 10), (windows.get(Math.floor(r.t / 10)) ?? 0) + r.context);
    total += r.context;
  }
  const peakRate = Math.max(...windows.values()) / 10;
  const meanRate = total / Math.max(1, trace[trace.length - 1]!.t);
  return { peak: Math.ceil(peakRate / perReplica), mean: Math.max(1, Math.ceil(meanRate / perReplica)) };
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
  const outDir = path.resolve(repoRoot, arg('out', '.tmp/sim'));
  mkdirSync(outDir, { recursive: true });
  const base = loadTrace(traceFile);
  const model = GPT_OSS_120B_H100;
  const meanContext = base.reduce((s, r) => s + r.context, 0) / base.length;
  const perReplica = prefillThroughput(model, meanContext);
  console.log(
    `trace ${path.relative(repoRoot, traceFile)}: ${base.length} requests over ${base[base.length - 1]!.t.toFixed(0)} s`,
  );
  console.log(
    `worker: ${model.name}; prefill ${Math.round(perReplica)} tok/s/replica at mean context ${Math.round(meanContext)}`,
  );
  console.log(
    'TTFT SLO 2 s; attainment counts rejected requests as misses; GPU-hours include cold starts and drains\n',
  );

  for (const coldStartS of coldStarts) {
    for (const speed of speeds) {
      const trace = scaleTrace(base, speed);
      const sizes = staticSizes(trace, perReplica);
      const options: SimOptions = {
        model,
        coldStartS,
        gpusPerReplica: 1,
        ttftSloS: 2,
        ttftWindowS: 20,
        maxQueue: 2000,
        queueTimeoutS: 60,
        maxInflightPerWorker: 16,
        sampleEveryS: 5 / speed,
      };
      const started = Date.now();
      const results = [
        oursPolicy(),
        oursPolicy(undefined, 'ours-no-rate', false),
        staticPolicy(`static-peak(${sizes.peak})`, sizes.peak),
        staticPolicy(`static-mean(${sizes.mean})`, sizes.mean),
        hpaPolicy(),
        knativePolicy(),
      ].map((p) => simulate(trace, p, options));
      const elapsed = (Date.now() - started) / 1000;
      console.log(`### ${speed}x speed, ${coldStartS} s cold start (simulated in ${elapsed.toFixed(1)} s)\n`);
      console.log('| policy | TTFT<=2s % | p95 TTFT s | p99 TTFT s | GPU-h | scale events | rejected | max replicas |');
      console.log('|---|---|---|---|---|---|---|---|');
      for (const r of results) console.log(row(r));
      const ours = results[0]!;
      const peak = results[2]!;
      const dominatedBy = results
        .slice(4)
        .filter((r) => r.sloAttainment > ours.sloAttainment && r.gpuHours < ours.gpuHours)
        .map((r) => r.policy);
      console.log(
        `\nours vs static peak: attainment ${(100 * (ours.sloAttainment - peak.sloAttainment)).toFixed(2)} points, ` +
          `GPU-hours ${pct(ours.gpuHours / peak.gpuHours)} %; dominated by a dynamic baseline: ${dominatedBy.length ? dominatedBy.join(', ') : 'no'}`,
      );
      console.log(burstReport(ours, 2));
      const file = path.join(outDir, `sim-${speed}x-cold${coldStartS}s.html`);
      writeFileSync(file, plotHtml(`${speed}x speed, ${coldStartS} s cold start`, results));
      console.log(`plot: ${path.relative(repoRoot, file)}\n`);
    }
  }
}

main();
