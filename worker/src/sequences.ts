// One HTTP request's engine sequences (n choices × prompts): admission, submission, per-sequence timing (queue,
// prefill, decode → metrics and trace spans), and cancellation when the client goes away or a stop string is hit.
import { Admission, AdmissionClosedError, type Slot } from './admission.js';
import {
  EngineCapacityError,
  type Engine,
  type FinishReason,
  type GenerationRequest,
  type TokenEvent,
} from './engine/types.js';
import type { FinishedReason, WorkerMetrics } from './metrics.js';
import type { RequestTiming } from './server-timing.js';
import type { RequestTrace } from './tracing.js';

export interface SequenceHandlers {
  /** Generated tokens of one engine step (never empty). */
  onTokens(events: TokenEvent[]): void;
  /** Called once, after the last tokens; `reason` is the engine's, or 'stop' when `stop()` ended it. */
  onFinish(reason: FinishReason, message?: string): void;
}

interface SequenceState {
  request: GenerationRequest;
  handlers: SequenceHandlers;
  slot?: Slot;
  engineId?: number;
  submitted?: number;
  firstToken?: number;
  lastBatch?: number;
  generated: number;
  cachedPromptTokens: number;
  finished: boolean;
  /** Its prompt counts in the worker's waiting prompt tokens (from start() to its first token or its end). */
  promptWaiting?: boolean;
}

const toMetricReason = (reason: FinishReason): FinishedReason => (reason === 'cancelled' ? 'abort' : reason);

export class SequenceRun {
  private readonly sequences: SequenceState[];
  /** Set by cancelAll(). */
  private cancelled = false;
  /** Made only when a sequence has to wait for a slot (it aborts that wait): an AbortController and its signal cost
   * ≈ 3–4 µs (node's EventTarget), on every request's way from its arrival to the engine otherwise. */
  private abort?: AbortController;
  private remaining: number;
  /** Set when the engine refused a sequence as one that can never fit (context, KV pool). */
  capacityRejection?: string;
  /** whenDone()'s callback. */
  private onDone?: () => void;

  constructor(
    private readonly engine: Engine,
    private readonly admission: Admission,
    private readonly metrics: WorkerMetrics,
    private readonly trace: RequestTrace,
    /** performance.now() when the HTTP request arrived. */
    private readonly arrival: number,
    requests: { request: GenerationRequest; handlers: SequenceHandlers }[],
    /** The request's Server-Timing phases (submission and token delivery times are recorded into it). */
    private readonly timing?: RequestTiming,
  ) {
    this.sequences = requests.map((r) => ({ ...r, generated: 0, cachedPromptTokens: 0, finished: false }));
    this.remaining = this.sequences.length;
  }

  /**
   * Runs `then` when the last sequence finishes, synchronously — in the same turn as the handlers that wrote the last
   * chunks, so a stream's end (usage, `[DONE]`, trailer) leaves in the same socket write as its final chunk instead
   * of a second one a microtask later (when the streams of a batch end in one engine step, that is one syscall
   * fewer per stream on the event loop, where their clients' next requests wait) — and resolves with what it
   * returns, or rejects with what it throws. Call before start(): a run can finish within start().
   */
  whenDone<T>(then: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const run = (): void => {
        try {
          resolve(then());
        } catch (err) {
          reject(err as Error);
        }
      };
      if (this.remaining === 0) run();
      else this.onDone = run;
    });
  }

  get cachedPromptTokens(): number {
    return this.sequences.reduce((sum, s) => sum + s.cachedPromptTokens, 0);
  }

  /** Queues every sequence; each is submitted to the engine as soon as it gets a slot — at once, within this call,
   * when one is free (no promise hop between the request's arrival and the engine). A sequence the engine refuses
   * synchronously finishes (handlers called) within this call too. */
  start(): void {
    this.sequences.forEach((seq) => {
      seq.promptWaiting = true;
      this.metrics.addWaitingPrompt(seq.request.prompt.length);
      const slot = this.cancelled ? undefined : this.admission.tryAcquire();
      if (slot) {
        this.submit(seq, slot);
        return;
      }
      this.abort ??= new AbortController();
      if (this.cancelled) this.abort.abort();
      this.admission.acquire(this.abort.signal).then(
        (slot) => this.submit(seq, slot),
        (err: unknown) => this.finish(seq, 'cancelled', err instanceof AdmissionClosedError ? undefined : String(err)),
      );
    });
  }

  /** Ends one sequence early (a stop string matched): cancels it in the engine and frees its slot. */
  stop(index: number): void {
    const seq = this.sequences[index];
    if (!seq || seq.finished) return;
    // Finish first: the engine may report the cancellation synchronously, and that must not override 'stop'.
    this.finish(seq, 'stop');
    if (seq.engineId !== undefined) this.engine.cancel(seq.engineId);
  }

  /** The client went away: leave the queue, cancel everything in the engine (its KV blocks are freed). */
  cancelAll(): void {
    this.cancelled = true;
    this.abort?.abort();
    for (const seq of this.sequences) {
      if (seq.finished) continue;
      this.finish(seq, 'cancelled');
      if (seq.engineId !== undefined) this.engine.cancel(seq.engineId);
    }
  }

  private submit(seq: SequenceState, slot: Slot): void {
    seq.slot = slot;
    if (seq.finished || this.cancelled) {
      slot.release();
      return;
    }
    seq.submitted = performance.now();
    this.timing?.submitted(seq.submitted);
    try {
      seq.engineId = this.engine.submit(seq.request, (events, deliveredAt) => this.onEvents(seq, events, deliveredAt));
    } catch (err) {
      if (err instanceof EngineCapacityError) this.capacityRejection = err.message;
      this.finish(seq, 'error', err instanceof Error ? err.message : String(err));
    }
  }

  /** `deliveredAt`: when the engine handed this step's events to JS (before other requests' handlers ran). */
  private onEvents(seq: SequenceState, events: TokenEvent[], deliveredAt?: number): void {
    if (seq.finished) return;
    const now = performance.now();
    // Only a finishing event carries no token (-1): filter (a copy) only when there is one.
    let tokens = events;
    for (let i = 0; i < events.length; i++) {
      if (events[i]!.token < 0) {
        tokens = events.filter((e) => e.token >= 0);
        break;
      }
    }
    if (tokens.length > 0) {
      const previous = seq.lastBatch;
      if (seq.firstToken === undefined) {
        seq.firstToken = now;
        seq.cachedPromptTokens = tokens[0]!.cachedPromptTokens ?? 0;
        this.metrics.observePrefilled(seq.request.prompt.length);
        this.stopWaiting(seq);
      }
      seq.lastBatch = now;
      seq.generated += tokens.length;
      if (this.timing?.waitingForDelivery) this.timing.delivering(seq.submitted!, deliveredAt ?? now);
      // The client's tokens first (the socket write), then the metrics, which nobody waits on.
      seq.handlers.onTokens(tokens);
      if (previous === undefined) this.metrics.observeFirstToken((now - this.arrival) / 1000);
      else this.metrics.observeInterToken((now - previous) / 1000);
    }
    // The handler may have stopped the sequence (stop string) while reading these tokens.
    const last = events[events.length - 1];
    if (!seq.finished && last?.finishReason) this.finish(seq, last.finishReason, last.message);
  }

  private stopWaiting(seq: SequenceState): void {
    if (!seq.promptWaiting) return;
    seq.promptWaiting = false;
    this.metrics.removeWaitingPrompt(seq.request.prompt.length);
  }

  private finish(seq: SequenceState, reason: FinishReason, message?: string): void {
    if (seq.finished) return;
    seq.finished = true;
    seq.slot?.release();
    const now = performance.now();
    this.stopWaiting(seq);
    this.metrics.observeSequence({
      arrival: this.arrival / 1000,
      submitted: seq.submitted !== undefined ? seq.submitted / 1000 : undefined,
      firstToken: seq.firstToken !== undefined ? seq.firstToken / 1000 : undefined,
      finished: now / 1000,
      generatedTokens: seq.generated,
      reason: toMetricReason(reason),
    });
    if (seq.submitted !== undefined) {
      this.trace.phase('queue', this.arrival, seq.submitted);
      if (seq.firstToken !== undefined) {
        this.trace.phase('prefill', seq.submitted, seq.firstToken, { prompt_tokens: seq.request.prompt.length });
        this.trace.phase('decode', seq.firstToken, now, { generated_tokens: seq.generated });
      }
    }
    seq.handlers.onFinish(reason, message);
    if (--this.remaining === 0) this.onDone?.();
  }
}
