// Load generator for any OpenAI-compatible endpoint (`vllm bench serve` style). Examples:
//   npx tsx hack/bench/serve.ts --base-url http://127.0.0.1:8000 --model tiny --mode concurrency --concurrency 32
//   npx tsx hack/bench/serve.ts … --mode poisson --rate 20 --num-prompts 500
//   npx tsx hack/bench/serve.ts … --mode trace --trace ../shared/traces/azure-llm-2023-code.csv --time-scale 0.1
// Writes JSON with vLLM's keys (--out) and an HTML plot of TTFT and ITL over time (--plot).
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Tokenizer } from '../../worker/src/tokenizer.js';
import { progressBar, report, runLoad, type BenchRequest, type RequestResult } from './lib/load.js';
import { plotHtml } from './lib/plot.js';
import { makeRng, promptTokens } from './lib/prompts.js';
import { formatServerTiming, serverTimingSummary } from './lib/server-timing.js';
import { readAzureTrace } from './lib/trace.js';

export interface ServeBenchOptions {
  baseUrl: string;
  model: string;
  endpoint: 'completions' | 'chat';
  mode: 'concurrency' | 'poisson' | 'trace';
  concurrency: number;
  rate: number;
  numPrompts: number;
  inputLen: number;
  outputLen: number;
  trace?: string;
  timeScale: number;
  maxInputLen: number;
  maxOutputLen: number;
  seed: number;
  quiet?: boolean;
}

export function buildRequests(o: ServeBenchOptions): BenchRequest[] {
  const rng = makeRng(o.seed);
  const tokenizer = o.endpoint === 'chat' ? new Tokenizer() : undefined;
  const make = (input: number, output: number, at?: number): BenchRequest => {
    const prompt = promptTokens(input, rng);
    return { prompt, text: tokenizer ? tokenizer.decode(prompt) : '', outputTokens: output, at };
  };
  if (o.mode === 'trace') {
    if (!o.trace) throw new Error('--mode trace needs --trace PATH');
    return readAzureTrace(o.trace)
      .slice(0, o.numPrompts)
      .map((r) =>
        make(
          Math.max(1, Math.min(r.inputTokens, o.maxInputLen)),
          Math.max(1, Math.min(r.outputTokens, o.maxOutputLen)),
          r.at * o.timeScale,
        ),
      );
  }
  let at = 0;
  return Array.from({ length: o.numPrompts }, () => {
    // Poisson arrivals: exponential gaps with mean 1/rate.
    if (o.mode === 'poisson') at += -Math.log(1 - rng()) / o.rate;
    return make(o.inputLen, o.outputLen, o.mode === 'poisson' ? at : undefined);
  });
}

export async function benchServe(
  o: ServeBenchOptions,
): Promise<{ summary: Record<string, unknown>; results: RequestResult[] }> {
  const requests = buildRequests(o);
  const { results, durationS } = await runLoad(
    {
      baseUrl: o.baseUrl,
      model: o.model,
      endpoint: o.endpoint,
      concurrency: o.mode === 'concurrency' ? o.concurrency : o.concurrency || 0,
      scheduled: o.mode !== 'concurrency',
      onProgress: o.quiet ? undefined : progressBar(`${o.mode}`),
    },
    requests,
  );
  return { summary: { ...report(results, durationS), ...serverTimingSummary(results) }, results };
}

export function printSummary(title: string, s: Record<string, unknown>): void {
  const n = (k: string): string => (typeof s[k] === 'number' ? (s[k] as number).toFixed(2) : '-');
  const lines = [
    `==== ${title} ====`,
    `completed ${s.completed}  failed ${s.failed}  duration ${n('duration')} s`,
    `request throughput ${n('request_throughput')} req/s  output ${n('output_throughput')} tok/s  total ${n('total_token_throughput')} tok/s`,
    `${'metric'.padEnd(8)} ${'mean'.padStart(9)} ${'p50'.padStart(9)} ${'p90'.padStart(9)} ${'p99'.padStart(9)}  (ms)`,
    ...['ttft', 'tpot', 'itl', 'e2el'].map(
      (m) =>
        `${m.padEnd(8)} ${n(`mean_${m}_ms`).padStart(9)} ${n(`p50_${m}_ms`).padStart(9)} ${n(`p90_${m}_ms`).padStart(9)} ${n(`p99_${m}_ms`).padStart(9)}`,
    ),
    // With the worker's Server-Timing (serverTimingSummary's keys): the TTFT the HTTP path added, per request.
    ...formatServerTiming(s),
  ];
  console.log(lines.join('\n'));
}

export function plotResults(title: string, results: RequestResult[]): string {
  const ok = results.filter((r) => r.ok);
  return plotHtml(
    title,
    ok.map((r) => ({ t: r.startMs / 1000, v: r.ttftMs })),
    ok.flatMap((r) => r.itlsMs.map((v, i) => ({ t: r.chunkAtMs[i + 1]! / 1000, v }))),
  );
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'base-url': { type: 'string', default: 'http://127.0.0.1:8000' },
      model: { type: 'string' },
      endpoint: { type: 'string', default: 'completions' },
      mode: { type: 'string', default: 'concurrency' },
      concurrency: { type: 'string', default: '1' },
      rate: { type: 'string', default: '10' },
      'num-prompts': { type: 'string', default: '100' },
      'input-len': { type: 'string', default: '128' },
      'output-len': { type: 'string', default: '64' },
      trace: { type: 'string' },
      'time-scale': { type: 'string', default: '1' },
      'max-input-len': { type: 'string', default: '1000000' },
      'max-output-len': { type: 'string', default: '1000000' },
      seed: { type: 'string', default: '1' },
      out: { type: 'string' },
      plot: { type: 'string' },
    },
  });
  const num = (k: keyof typeof values): number => {
    const v = Number(values[k]);
    if (!Number.isFinite(v)) throw new Error(`--${k} must be a number, got '${String(values[k])}'`);
    return v;
  };
  const baseUrl = values['base-url']!.replace(/\/$/, '');
  let model = values.model;
  if (!model) {
    const list = (await (await fetch(`${baseUrl}/v1/models`)).json()) as { data: { id: string }[] };
    model = list.data[0]?.id ?? '';
  }
  const options: ServeBenchOptions = {
    baseUrl,
    model,
    endpoint: values.endpoint === 'chat' ? 'chat' : 'completions',
    mode: values.mode as ServeBenchOptions['mode'],
    concurrency: num('concurrency'),
    rate: num('rate'),
    numPrompts: num('num-prompts'),
    inputLen: num('input-len'),
    outputLen: num('output-len'),
    trace: values.trace,
    timeScale: num('time-scale'),
    maxInputLen: num('max-input-len'),
    maxOutputLen: num('max-output-len'),
    seed: num('seed'),
  };
  if (!['concurrency', 'poisson', 'trace'].includes(options.mode)) throw new Error(`--mode ${options.mode}?`);
  const { summary, results } = await benchServe(options);
  printSummary(`${options.mode} against ${baseUrl} (${model})`, summary);
  if (values.out) writeFileSync(values.out, JSON.stringify({ ...options, ...summary }, null, 1));
  if (values.plot) writeFileSync(values.plot, plotResults(`${options.mode} — ${model}`, results));
}

// Run as a script only (compare.ts imports this module, also when both are bundled into one file).
if (/serve\.(ts|js|mjs)$/.test(process.argv[1] ?? '')) {
  main().catch((err: unknown) => {
    console.error((err as Error).message);
    process.exit(1);
  });
}
