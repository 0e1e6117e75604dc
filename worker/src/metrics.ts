// Every Prometheus metric the worker exposes, declared here and nowhere else. Names, label and buckets are vLLM v1's
// (docs/metrics.md), so dashboards and inference gateways built for vLLM read them unchanged.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { EngineStats } from './engine/types.js';

export const TTFT_BUCKETS = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560,
];
export const ITL_BUCKETS = [
  0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80,
];
export const REQUEST_LATENCY_BUCKETS = [
  0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680,
];

export type FinishedReason = 'stop' | 'length' | 'abort' | 'error';

export interface WorkerMetricsSources {
  /** Engine counters and gauges, read at scrape time. */
  engineStats(): EngineStats | undefined;
  /** Sequences waiting in the worker's admission queue. */
  admissionWaiting(): number;
}

export class WorkerMetrics {
  readonly registry = new Registry();
  private readonly labels: { model_name: string };
  readonly ttft: Histogram<'model_name'>;
  readonly itl: Histogram<'model_name'>;
  readonly e2e: Histogram<'model_name'>;
  readonly queueTime: Histogram<'model_name'>;
  readonly prefillTime: Histogram<'model_name'>;
  readonly decodeTime: Histogram<'model_name'>;
  readonly promptTokens: Counter<'model_name'>;
  readonly generationTokens: Counter<'model_name'>;
  readonly success: Counter<'model_name' | 'finished_reason'>;
  readonly loadSeconds: Gauge<'model_name'>;
  readonly loadBytes: Gauge<'model_name'>;
  readonly modelBytes: Gauge<'model_name'>;
  readonly loadBytesPerSecond: Gauge<'model_name'>;
  readonly startupSeconds: Gauge<'model_name'>;
  /** Last engine totals seen, to turn the engine's cumulative counts into counter increments. */
  private lastEngine = { queries: 0, hits: 0, preemptions: 0 };
  /** Prompt tokens of the sequences that have no first token yet (modelserve:num_prompt_tokens_waiting). */
  private promptTokensWaiting = 0;

  constructor(modelName: string, sources: WorkerMetricsSources) {
    this.labels = { model_name: modelName };
    const registers = [this.registry];
    const labelNames = ['model_name'] as const;
    const stats = (): EngineStats | undefined => sources.engineStats();
    const labels = this.labels;
    new Gauge({
      name: 'vllm:num_requests_running',
      help: 'Number of requests in model execution batches.',
      labelNames,
      registers,
      collect() {
        this.set(labels, stats()?.running ?? 0);
      },
    });
    new Gauge({
      name: 'vllm:num_requests_waiting',
      help: 'Number of requests waiting to be processed (worker queue plus engine queue).',
      labelNames,
      registers,
      collect() {
        this.set(labels, sources.admissionWaiting() + (stats()?.waiting ?? 0));
      },
    });
    // The autoscaler's token view (docs/autoscaler.md): prefill work ahead of a new prompt. A sequence counts from
    // its arrival until its first token, so a prompt in the admission queue, in the engine's queue or in a chunked
    // prefill counts whole: the engine does not tell JS when a prefill begins, and a 30,000-token prompt part-way
    // through its chunks is still work between the queue and the next first token. vLLM has no such gauge, hence the
    // modelserve: prefix in vLLM's style.
    const waitingPrompt = (): number => this.promptTokensWaiting;
    new Gauge({
      name: 'modelserve:num_prompt_tokens_waiting',
      help: 'Prompt tokens of sequences waiting for their first token (admission queue, engine queue, prefill).',
      labelNames,
      registers,
      collect() {
        this.set(labels, waitingPrompt());
      },
    });
    new Gauge({
      name: 'vllm:kv_cache_usage_perc',
      help: 'KV-cache usage. 1 means 100 percent usage.',
      labelNames,
      registers,
      collect() {
        const s = stats();
        this.set(labels, s && s.kvBlocksTotal > 0 ? s.kvBlocksUsed / s.kvBlocksTotal : 0);
      },
    });
    const syncEngineCounters = (): void => {
      const s = stats();
      if (!s) return;
      const add = (counter: Counter<'model_name'>, now: number, key: 'queries' | 'hits' | 'preemptions'): void => {
        if (now > this.lastEngine[key]) counter.inc(labels, now - this.lastEngine[key]);
        this.lastEngine[key] = Math.max(this.lastEngine[key], now);
      };
      add(prefixQueries, s.prefixCacheQueries, 'queries');
      add(prefixHits, s.prefixCacheHits, 'hits');
      add(preemptions, s.preemptions, 'preemptions');
    };
    const prefixQueries: Counter<'model_name'> = new Counter({
      name: 'vllm:prefix_cache_queries_total',
      help: 'Prefix cache queries, in terms of number of queried tokens.',
      labelNames,
      registers,
      collect: syncEngineCounters,
    });
    const prefixHits: Counter<'model_name'> = new Counter({
      name: 'vllm:prefix_cache_hits_total',
      help: 'Prefix cache hits, in terms of number of cached tokens.',
      labelNames,
      registers,
    });
    const preemptions: Counter<'model_name'> = new Counter({
      name: 'vllm:num_preemptions_total',
      help: 'Cumulative number of preemptions from the engine.',
      labelNames,
      registers,
    });
    this.promptTokens = new Counter({
      name: 'vllm:prompt_tokens_total',
      help: 'Number of prefill tokens processed.',
      labelNames,
      registers,
    });
    this.generationTokens = new Counter({
      name: 'vllm:generation_tokens_total',
      help: 'Number of generation tokens processed.',
      labelNames,
      registers,
    });
    this.success = new Counter({
      name: 'vllm:request_success_total',
      help: 'Count of successfully processed requests.',
      labelNames: ['model_name', 'finished_reason'],
      registers,
    });
    // Counters exist from the start at 0 (as vLLM's do), so rate() works from the first scrape.
    for (const counter of [prefixQueries, prefixHits, preemptions, this.promptTokens, this.generationTokens]) {
      counter.inc(labels, 0);
    }
    const histogram = (name: string, help: string, buckets: number[]): Histogram<'model_name'> =>
      new Histogram({ name, help, buckets, labelNames, registers });
    this.ttft = histogram(
      'vllm:time_to_first_token_seconds',
      'Histogram of time to first token in seconds.',
      TTFT_BUCKETS,
    );
    this.itl = histogram(
      'vllm:inter_token_latency_seconds',
      'Histogram of inter-token latency in seconds.',
      ITL_BUCKETS,
    );
    this.e2e = histogram(
      'vllm:e2e_request_latency_seconds',
      'Histogram of e2e request latency in seconds.',
      REQUEST_LATENCY_BUCKETS,
    );
    this.queueTime = histogram(
      'vllm:request_queue_time_seconds',
      'Histogram of time spent in WAITING phase for request.',
      REQUEST_LATENCY_BUCKETS,
    );
    this.prefillTime = histogram(
      'vllm:request_prefill_time_seconds',
      'Histogram of time spent in PREFILL phase for request.',
      REQUEST_LATENCY_BUCKETS,
    );
    this.decodeTime = histogram(
      'vllm:request_decode_time_seconds',
      'Histogram of time spent in DECODE phase for request.',
      REQUEST_LATENCY_BUCKETS,
    );
    // Model loading (cold start). Gauges, not histograms: a worker process loads its model exactly once, so each
    // series is one pod's figure; max/avg across pods give the fleet view. They move while the load runs, so a
    // scrape during a slow load shows how far it got.
    const gauge = (name: string, help: string): Gauge<'model_name'> => new Gauge({ name, help, labelNames, registers });
    this.loadSeconds = gauge(
      'modelserve_worker_load_seconds',
      'Seconds spent loading the model weights: elapsed so far while loading, the total once loaded.',
    );
    this.loadBytes = gauge('modelserve_worker_load_bytes', 'Bytes of model weights loaded so far.');
    this.modelBytes = gauge('modelserve_worker_model_bytes', 'Bytes of model weights to load (the checkpoint).');
    this.loadBytesPerSecond = gauge(
      'modelserve_worker_load_bytes_per_second',
      'Average weight-loading throughput of the load so far, in bytes per second.',
    );
    this.startupSeconds = gauge(
      'modelserve_worker_startup_seconds',
      'Seconds from the worker process start to ready (0 until ready).',
    );
    this.startupSeconds.set(this.labels, 0);
  }

  /** Loader progress: bytes done of total after `seconds` of loading. */
  observeLoadProgress(doneBytes: number, totalBytes: number, seconds: number): void {
    const l = this.labels;
    this.loadBytes.set(l, doneBytes);
    this.modelBytes.set(l, totalBytes);
    this.loadSeconds.set(l, seconds);
    if (seconds > 0) this.loadBytesPerSecond.set(l, doneBytes / seconds);
  }

  /** The worker turned ready `processSeconds` after its process started. */
  observeReady(processSeconds: number): void {
    this.startupSeconds.set(this.labels, processSeconds);
  }

  /** A sequence's prompt starts waiting for its prefill (until its first token or its end without one). */
  addWaitingPrompt(tokens: number): void {
    this.promptTokensWaiting += tokens;
  }

  /** The prompt got its first token, or its sequence ended without one (cancelled, refused, failed). */
  removeWaitingPrompt(tokens: number): void {
    this.promptTokensWaiting -= tokens;
  }

  /**
   * A sequence's first token: its prompt is prefilled. vllm:prompt_tokens_total moves now, as vLLM v1 counts it (in
   * the step that finishes the prefill), not when the request ends, so its rate() is the prefill rate the autoscaler
   * sizes replicas with, even while long generations are still running.
   */
  observePrefilled(promptTokens: number): void {
    this.promptTokens.inc(this.labels, promptTokens);
  }

  /** One finished engine sequence; times in seconds (performance.now based), firstToken/submitted may be absent. */
  observeSequence(s: {
    arrival: number;
    submitted?: number;
    firstToken?: number;
    finished: number;
    generatedTokens: number;
    reason: FinishedReason;
  }): void {
    const l = this.labels;
    this.success.inc({ ...l, finished_reason: s.reason });
    this.e2e.observe(l, s.finished - s.arrival);
    if (s.submitted !== undefined) this.queueTime.observe(l, s.submitted - s.arrival);
    if (s.submitted !== undefined && s.firstToken !== undefined) {
      this.prefillTime.observe(l, s.firstToken - s.submitted);
      this.decodeTime.observe(l, s.finished - s.firstToken);
    }
    if (s.generatedTokens > 0) this.generationTokens.inc(l, s.generatedTokens);
  }

  observeFirstToken(seconds: number): void {
    this.ttft.observe(this.labels, seconds);
  }

  observeInterToken(seconds: number): void {
    this.itl.observe(this.labels, seconds);
  }
}
