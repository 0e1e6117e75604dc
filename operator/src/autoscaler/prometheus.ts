// The workers' /metrics as the autoscaler needs them: a Prometheus text-format parser, the vLLM-named gauges and
// histograms of one model, and p95 latencies over a sliding window computed from histogram bucket deltas (what
// PromQL's histogram_quantile(0.95, rate(...[window])) does), so no Prometheus server is needed.

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*/g;

function parseValue(v: string): number {
  if (v === '+Inf') return Infinity;
  if (v === '-Inf') return -Infinity;
  if (v === 'NaN') return NaN;
  return Number(v);
}

/** Parses the Prometheus text exposition format; malformed lines are reported by number, not silently dropped. */
export function parsePrometheusText(text: string): { samples: Sample[]; errors: string[] } {
  const samples: Sample[] = [];
  const errors: string[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const m = LINE.exec(line);
    if (!m) {
      errors.push(`line ${i + 1}: not a sample: ${line.slice(0, 80)}`);
      return;
    }
    const labels: Record<string, string> = {};
    if (m[3]) {
      for (const lm of m[3].matchAll(LABEL)) {
        labels[lm[1]!] = lm[2]!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
      }
    }
    const value = parseValue(m[4]!);
    if (Number.isNaN(value) && m[4] !== 'NaN') {
      errors.push(`line ${i + 1}: bad value ${m[4]}`);
      return;
    }
    samples.push({ name: m[1]!, labels, value });
  });
  return { samples, errors };
}

export const METRIC = {
  waiting: 'vllm:num_requests_waiting',
  running: 'vllm:num_requests_running',
  kvUsage: 'vllm:kv_cache_usage_perc',
  ttft: 'vllm:time_to_first_token_seconds',
  itl: 'vllm:inter_token_latency_seconds',
  generationTokens: 'vllm:generation_tokens_total',
  /** Counted at each sequence's first token (its prefill done), so its rate is prefill throughput. */
  promptTokens: 'vllm:prompt_tokens_total',
  /** Prompt tokens of the sequences without a first token yet (worker/src/metrics.ts). */
  waitingPromptTokens: 'modelserve:num_prompt_tokens_waiting',
  /** The count of the end-to-end latency histogram: requests finished. */
  finished: 'vllm:e2e_request_latency_seconds_count',
} as const;

/** Cumulative bucket counts keyed by upper bound (+Inf included). */
export type Buckets = Map<number, number>;

export interface WorkerMetrics {
  waiting: number;
  running: number;
  kvUsage?: number;
  ttft: Buckets;
  itl: Buckets;
  generationTokens?: number;
  finishedRequests?: number;
  promptTokens?: number;
  /** Absent from workers that predate the gauge. */
  waitingPromptTokens?: number;
}

/** The vLLM-named series of one model (label model_name) from one scrape; series of other models are ignored. */
export function workerMetrics(samples: Sample[], model: string): WorkerMetrics {
  const mine = samples.filter((s) => s.labels.model_name === undefined || s.labels.model_name === model);
  const sum = (name: string) => mine.filter((s) => s.name === name).reduce((a, s) => a + s.value, 0);
  const has = (name: string) => mine.some((s) => s.name === name);
  const buckets = (name: string): Buckets => {
    const out: Buckets = new Map();
    for (const s of mine) {
      if (s.name !== `${name}_bucket` || s.labels.le === undefined) continue;
      const le = parseValue(s.labels.le);
      out.set(le, (out.get(le) ?? 0) + s.value);
    }
    return out;
  };
  return {
    waiting: sum(METRIC.waiting),
    running: sum(METRIC.running),
    ...(has(METRIC.kvUsage) ? { kvUsage: sum(METRIC.kvUsage) } : {}),
    ttft: buckets(METRIC.ttft),
    itl: buckets(METRIC.itl),
    ...(has(METRIC.generationTokens) ? { generationTokens: sum(METRIC.generationTokens) } : {}),
    ...(has(METRIC.finished) ? { finishedRequests: sum(METRIC.finished) } : {}),
    ...(has(METRIC.promptTokens) ? { promptTokens: sum(METRIC.promptTokens) } : {}),
    ...(has(METRIC.waitingPromptTokens) ? { waitingPromptTokens: sum(METRIC.waitingPromptTokens) } : {}),
  };
}

/**
 * The q-quantile of a cumulative histogram, interpolating linearly inside the bucket that holds it (as PromQL's
 * histogram_quantile). undefined without observations; the highest finite bound when it falls in the +Inf bucket.
 */
export function histogramQuantile(q: number, buckets: Buckets): number | undefined {
  const bounds = [...buckets.keys()].sort((a, b) => a - b);
  if (!bounds.length) return undefined;
  const total = buckets.get(bounds[bounds.length - 1]!) ?? 0;
  if (!(total > 0)) return undefined;
  const rank = q * total;
  let prevBound = 0;
  let prevCount = 0;
  for (const b of bounds) {
    const count = buckets.get(b)!;
    if (count >= rank) {
      if (b === Infinity) return prevBound;
      if (count === prevCount) return b;
      return prevBound + ((b - prevBound) * (rank - prevCount)) / (count - prevCount);
    }
    prevBound = b;
    prevCount = count;
  }
  return prevBound;
}

/** later − earlier per bucket; a bucket that went down means the worker restarted, and `later` is the delta. */
export function bucketDelta(later: Buckets, earlier: Buckets | undefined): Buckets {
  const out: Buckets = new Map();
  let reset = false;
  if (earlier) for (const [le, c] of later) if (c < (earlier.get(le) ?? 0)) reset = true;
  for (const [le, c] of later) out.set(le, reset || !earlier ? c : c - (earlier.get(le) ?? 0));
  return out;
}

export function addBuckets(into: Buckets, more: Buckets): Buckets {
  for (const [le, c] of more) into.set(le, (into.get(le) ?? 0) + c);
  return into;
}

/**
 * Per-pod cumulative histograms over time. p95 over the window = quantile of the sum over pods of (newest −
 * oldest snapshot inside the window). A pod seen once contributes nothing yet (its counts include history older
 * than the window).
 */
export class LatencyWindow {
  private readonly snapshots = new Map<string, { t: number; ttft: Buckets; itl: Buckets }[]>();

  constructor(private readonly windowMs: number) {}

  record(pod: string, t: number, m: Pick<WorkerMetrics, 'ttft' | 'itl'>): void {
    const list = this.snapshots.get(pod) ?? [];
    list.push({ t, ttft: m.ttft, itl: m.itl });
    // Keep one snapshot at or before the window start as the baseline.
    while (list.length > 2 && list[1]!.t <= t - this.windowMs) list.shift();
    this.snapshots.set(pod, list);
  }

  /** Forgets pods not in `alive` (deleted replicas). */
  retain(alive: Set<string>): void {
    for (const pod of this.snapshots.keys()) if (!alive.has(pod)) this.snapshots.delete(pod);
  }

  quantiles(q: number): { ttftMs?: number; itlMs?: number } {
    const ttft: Buckets = new Map();
    const itl: Buckets = new Map();
    for (const list of this.snapshots.values()) {
      if (list.length < 2) continue;
      const first = list[0]!;
      const last = list[list.length - 1]!;
      addBuckets(ttft, bucketDelta(last.ttft, first.ttft));
      addBuckets(itl, bucketDelta(last.itl, first.itl));
    }
    const t = histogramQuantile(q, ttft);
    const i = histogramQuantile(q, itl);
    return { ...(t !== undefined ? { ttftMs: t * 1000 } : {}), ...(i !== undefined ? { itlMs: i * 1000 } : {}) };
  }
}
