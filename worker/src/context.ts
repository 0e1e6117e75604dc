// What every route needs: the engine (once loaded), tokenizer, configuration, admission, metrics, tracing and the
// lifecycle state (ready, draining, in-flight requests).
import { Admission } from './admission.js';
import type { Engine } from './engine/types.js';
import { familyOf, type ModelFamily } from './family/family.js';
import type { ReasoningEffort } from './harmony/render.js';
import { silentLogger, type Logger } from './log.js';
import { WorkerMetrics } from './metrics.js';
import type { Tokenizer } from './tokenizer.js';
import { initTracing, type Tracing } from './tracing.js';

export interface WorkerConfig {
  /** The OpenAI `model` id this worker answers to. */
  servedModelName: string;
  /** Sequences that may wait for a batch slot beyond the engine's max sequences; past it requests get 429. */
  maxQueue: number;
  /** Request bodies larger than this get 413. */
  maxBodyBytes: number;
  /** Retry-After seconds on 429 and 503. */
  retryAfterSeconds: number;
  defaultReasoningEffort: ReasoningEffort;
  /** `Current date:` of the harmony system message: a fixed date, null for none, undefined for today's (UTC). */
  conversationDate?: string | null;
}

export const DEFAULT_CONFIG: Omit<WorkerConfig, 'servedModelName'> = {
  maxQueue: 256,
  maxBodyBytes: 4 * 1024 * 1024,
  retryAfterSeconds: 1,
  defaultReasoningEffort: 'medium',
};

export class WorkerState {
  draining = false;
  private inflight = 0;
  private idleWaiters: (() => void)[] = [];

  get inflightRequests(): number {
    return this.inflight;
  }

  enter(): () => void {
    this.inflight++;
    let left = false;
    return () => {
      if (left) return;
      left = true;
      if (--this.inflight === 0) for (const wake of this.idleWaiters.splice(0)) wake();
    };
  }

  /** Resolves when no request is in flight. */
  idle(): Promise<void> {
    return this.inflight === 0 ? Promise.resolve() : new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}

const DAY_MS = 86_400_000;

export class WorkerContext {
  engine?: Engine;
  /** How the loaded model's text and chats become tokens (harmony for gpt-oss, the model's own tokenizer for GGUF). */
  family?: ModelFamily;
  admission?: Admission;
  readonly metrics: WorkerMetrics;
  readonly state = new WorkerState();
  readonly tracing: Tracing;

  constructor(
    readonly tokenizer: Tokenizer,
    readonly config: WorkerConfig,
    readonly logger: Logger = silentLogger,
    tracing?: Tracing,
  ) {
    this.tracing = tracing ?? initTracing('off');
    this.metrics = new WorkerMetrics(config.servedModelName, {
      engineStats: () => this.engine?.stats(),
      admissionWaiting: () => this.admission?.waitingCount ?? 0,
    });
  }

  /** The engine is loaded (weights in memory, KV cache allocated): start serving. */
  attachEngine(engine: Engine): void {
    this.engine = engine;
    this.family = familyOf(engine, this.tokenizer);
    this.admission = new Admission(engine.options.maxSeqs, this.config.maxQueue);
  }

  get ready(): boolean {
    return this.engine !== undefined && !this.state.draining;
  }

  /** Today's date (UTC) unless configured; the string is made once a day, not per request. */
  conversationDate(): string | null {
    if (this.config.conversationDate !== undefined) return this.config.conversationDate;
    const now = Date.now();
    if (now < this.today.from || now >= this.today.from + DAY_MS) {
      const from = now - (now % DAY_MS);
      this.today = { from, date: new Date(from).toISOString().slice(0, 10) };
    }
    return this.today.date;
  }

  /** The UTC day conversationDate() last formatted: its first millisecond and its date. */
  private today = { from: -Infinity, date: '' };
}
