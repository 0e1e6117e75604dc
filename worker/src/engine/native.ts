// The Engine interface (types.ts) over the native addon (worker/native/addon, built by `make native`). The addon
// delivers the events of one engine step in one call; this module splits them per request and maps native error
// codes to EngineError / EngineCapacityError.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  EngineCapacityError,
  EngineError,
  type Engine,
  type EngineOptions,
  type EngineStats,
  type EventHandler,
  type FinishReason,
  type GenerationRequest,
  type ModelInfo,
  type ModelTokenizer,
  type TokenEvent,
} from './types.js';

/** One event as the addon delivers it: a TokenEvent plus the request id. */
interface NativeEvent extends TokenEvent {
  id: number;
}

/** A request as the addon takes it: token ids may come as an Int32Array (copied in one go; an array is read element
 * by element through N-API, each checked and named for its error message). */
type NativeRequest = Omit<GenerationRequest, 'prompt' | 'stopTokenIds'> & {
  prompt: number[] | Int32Array;
  stopTokenIds?: number[] | Int32Array;
};

/** `ids` as an Int32Array when every id is an int32 (what the addon accepts), else as given, so the addon reports
 * the bad element as before. */
export function int32Ids(ids: number[]): number[] | Int32Array {
  for (let i = 0; i < ids.length; i++) {
    const t = ids[i]!;
    if ((t | 0) !== t) return ids;
  }
  return Int32Array.from(ids);
}

interface NativeEngine {
  submit(request: NativeRequest): number;
  cancel(id: number): void;
  stats(): EngineStats;
  info(): ModelInfo;
  evalLogits(tokens: number[]): Float32Array;
  tokenize(text: string, parseSpecial: boolean): Int32Array;
  tokenBytes(token: number, special: boolean): Uint8Array;
  chatTemplate(): string;
  close(): Promise<void>;
}

interface NativeLoadOptions {
  modelPath: string;
  backend?: string;
  threads?: number;
  maxContext: number;
  maxBatchedTokens: number;
  maxSeqs: number;
  maxWaiting: number;
  kvBlockSize: number;
  kvMemoryBytes: number;
  /** Read by the CUDA backend only (sizes the KV cache from GPU memory); the CPU path uses kvMemoryBytes. */
  kvMemoryFraction?: number;
  kvDtypeBf16: number;
  enablePrefixCaching: number;
}

interface NativeAddon {
  loadModel(
    options: NativeLoadOptions,
    onEvents: (batch: NativeEvent[]) => void,
    onProgress?: (doneBytes: number, totalBytes: number) => void,
  ): Promise<NativeEngine>;
}

/** Defaults of the engine options (the C API's ms_engine_params_default). */
export const ENGINE_DEFAULTS: Required<
  Omit<EngineOptions, 'onProgress' | 'backend' | 'threads' | 'modelPath' | 'kvMemoryFraction'>
> = {
  maxContext: 4096,
  maxBatchedTokens: 2048,
  maxSeqs: 64,
  maxWaiting: 0,
  kvBlockSize: 16,
  kvMemoryBytes: 1024 * 1024 * 1024,
  kvDtype: 'bfloat16',
  enablePrefixCaching: true,
};

/** Where the addon is: $MODELSERVE_ENGINE_ADDON, else worker/native/build/modelserve_engine.node. */
export function addonPath(): string {
  const fromEnv = process.env.MODELSERVE_ENGINE_ADDON;
  if (fromEnv) return path.resolve(fromEnv);
  const here = path.dirname(fileURLToPath(import.meta.url));
  return path.resolve(here, '../../native/build/modelserve_engine.node');
}

let cachedAddon: NativeAddon | undefined;

function loadAddon(): NativeAddon {
  if (cachedAddon) return cachedAddon;
  const file = addonPath();
  if (!existsSync(file)) {
    throw new EngineError(
      'MS_ERR_ADDON_MISSING',
      `the native engine addon is not built: ${file} does not exist (run \`make native\`, or set MODELSERVE_ENGINE_ADDON)`,
    );
  }
  const require = createRequire(import.meta.url);
  cachedAddon = require(file) as NativeAddon;
  return cachedAddon;
}

/** Turns an error thrown by the addon (an Error with a `code` such as MS_ERR_CAPACITY) into an EngineError. */
export function toEngineError(err: unknown): EngineError {
  if (err instanceof EngineError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !code.startsWith('MS_ERR_')) return new EngineError('MS_ERR_INTERNAL', message);
  return code === 'MS_ERR_CAPACITY' ? new EngineCapacityError(code, message) : new EngineError(code, message);
}

/** Splits one step's events into per-request batches, in order, and forgets a request after its last event. */
export class EventRouter {
  private readonly handlers = new Map<number, EventHandler>();

  add(id: number, handler: EventHandler): void {
    this.handlers.set(id, handler);
  }

  get size(): number {
    return this.handlers.size;
  }

  /** Ids seen in the current dispatch (reused: no allocation per step). */
  private readonly seen = new Set<number>();

  /** The events go to their handlers as the addon made them (each still carries its request's `id`): a request's
   * events of one step are contiguous, so its handler gets that run — the whole batch when one request is running —
   * with no copy of each event and no Map per step (they were most of what a token cost the heap). `at`: when the
   * addon delivered the batch (each handler gets it: the engine's part of a request's timing ends there). */
  dispatch(batch: NativeEvent[], at = performance.now()): void {
    if (!this.contiguous(batch)) {
      this.dispatchGrouped(batch, at);
      return;
    }
    const n = batch.length;
    for (let start = 0, end = 0; start < n; start = end) {
      const id = batch[start]!.id;
      for (end = start + 1; end < n && batch[end]!.id === id;) end++;
      this.deliver(id, start === 0 && end === n ? batch : batch.slice(start, end), at);
    }
  }

  /** Whether each request's events form one run. */
  private contiguous(batch: NativeEvent[]): boolean {
    if (batch.length <= 1) return true;
    this.seen.clear();
    let previous = batch[0]!.id;
    this.seen.add(previous);
    for (let i = 1; i < batch.length; i++) {
      const id = batch[i]!.id;
      if (id === previous) continue;
      if (this.seen.has(id)) return false;
      this.seen.add(id);
      previous = id;
    }
    return true;
  }

  /** Events of requests interleaved within one step: grouped by id, in order of first appearance. */
  private dispatchGrouped(batch: NativeEvent[], at: number): void {
    const perRequest = new Map<number, TokenEvent[]>();
    for (const event of batch) {
      const list = perRequest.get(event.id);
      if (list) list.push(event);
      else perRequest.set(event.id, [event]);
    }
    for (const [id, events] of perRequest) this.deliver(id, events, at);
  }

  private deliver(id: number, events: TokenEvent[], at: number): void {
    const handler = this.handlers.get(id);
    if (!handler) return; // finished earlier (for example by close())
    for (let i = 0; i < events.length; i++) {
      if (events[i]!.finishReason !== undefined) {
        this.handlers.delete(id);
        break;
      }
    }
    try {
      handler(events, at);
    } catch (err) {
      // One handler's bug must not starve the others of this step's events; surface it asynchronously.
      queueMicrotask(() => {
        throw err;
      });
    }
  }

  /** Ends every request still open with a synthetic event (the engine is gone). */
  finishAll(reason: FinishReason, message?: string): void {
    const open = [...this.handlers.entries()];
    this.handlers.clear();
    for (const [, handler] of open) handler([{ token: -1, finishReason: reason, ...(message ? { message } : {}) }]);
  }
}

/** The model's tokenizer through the addon (ms_model_tokenize / ms_model_token_bytes / ms_model_chat_template). Token
 * bytes are cached: a vocabulary is small and streaming asks for the same tokens again and again. */
class NativeTokenizer implements ModelTokenizer {
  private readonly bytes = [new Map<number, Uint8Array>(), new Map<number, Uint8Array>()];

  constructor(
    private readonly native: NativeEngine,
    readonly chatTemplate: string,
  ) {}

  tokenize(text: string, parseSpecial: boolean): number[] {
    try {
      return Array.from(this.native.tokenize(text, parseSpecial));
    } catch (err) {
      throw toEngineError(err);
    }
  }

  tokenBytes(token: number, special: boolean): Uint8Array {
    const cache = this.bytes[special ? 1 : 0]!;
    let out = cache.get(token);
    if (out) return out;
    try {
      out = new Uint8Array(this.native.tokenBytes(token, special));
    } catch (err) {
      throw toEngineError(err);
    }
    cache.set(token, out);
    return out;
  }
}

/** The model's tokenizer, or undefined when its checkpoint carries none (the C API says MS_ERR_UNSUPPORTED). */
function nativeTokenizer(native: NativeEngine): ModelTokenizer | undefined {
  try {
    native.tokenBytes(0, false);
  } catch (err) {
    const e = toEngineError(err);
    if (e.code === 'MS_ERR_UNSUPPORTED') return undefined;
    throw e;
  }
  return new NativeTokenizer(native, native.chatTemplate());
}

class NativeBackedEngine implements Engine {
  private closed = false;
  readonly tokenizer?: ModelTokenizer;

  constructor(
    private readonly native: NativeEngine,
    private readonly router: EventRouter,
    readonly info: ModelInfo,
    readonly options: Engine['options'],
  ) {
    this.tokenizer = nativeTokenizer(native);
  }

  submit(request: GenerationRequest, onEvents: EventHandler): number {
    if (this.closed) throw new EngineError('MS_ERR_CLOSED', 'the engine is closed');
    let id: number;
    try {
      id = this.native.submit({
        ...request,
        prompt: int32Ids(request.prompt),
        ...(request.stopTokenIds ? { stopTokenIds: int32Ids(request.stopTokenIds) } : {}),
      });
    } catch (err) {
      throw toEngineError(err);
    }
    // Events are delivered on this thread, so none can arrive before the handler is registered.
    this.router.add(id, onEvents);
    return id;
  }

  cancel(id: number): void {
    if (this.closed) return;
    try {
      this.native.cancel(id);
    } catch (err) {
      const e = toEngineError(err);
      if (e.code !== 'MS_ERR_NOT_FOUND' && e.code !== 'MS_ERR_CLOSED') throw e;
    }
  }

  stats(): EngineStats {
    if (this.closed) throw new EngineError('MS_ERR_CLOSED', 'the engine is closed');
    try {
      return this.native.stats();
    } catch (err) {
      throw toEngineError(err);
    }
  }

  evalLogits(tokens: number[]): Float32Array {
    if (this.closed) throw new EngineError('MS_ERR_CLOSED', 'the engine is closed');
    try {
      return this.native.evalLogits(tokens);
    } catch (err) {
      throw toEngineError(err);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.native.close();
    // The engine cancelled what was in flight; any request whose final event is still queued ends here.
    this.router.finishAll('cancelled');
  }
}

/** Loads a checkpoint and starts an engine over it (off the JS thread). */
export async function loadEngine(options: EngineOptions): Promise<Engine> {
  const addon = loadAddon();
  const resolved: Engine['options'] = {
    modelPath: options.modelPath,
    maxContext: options.maxContext ?? ENGINE_DEFAULTS.maxContext,
    maxBatchedTokens: options.maxBatchedTokens ?? ENGINE_DEFAULTS.maxBatchedTokens,
    maxSeqs: options.maxSeqs ?? ENGINE_DEFAULTS.maxSeqs,
    maxWaiting: options.maxWaiting ?? ENGINE_DEFAULTS.maxWaiting,
    kvBlockSize: options.kvBlockSize ?? ENGINE_DEFAULTS.kvBlockSize,
    kvMemoryBytes: options.kvMemoryBytes ?? ENGINE_DEFAULTS.kvMemoryBytes,
    kvDtype: options.kvDtype ?? ENGINE_DEFAULTS.kvDtype,
    enablePrefixCaching: options.enablePrefixCaching ?? ENGINE_DEFAULTS.enablePrefixCaching,
  };
  const router = new EventRouter();
  let native: NativeEngine;
  try {
    native = await addon.loadModel(
      {
        modelPath: resolved.modelPath,
        ...(options.backend ? { backend: options.backend } : {}),
        ...(options.threads !== undefined ? { threads: options.threads } : {}),
        maxContext: resolved.maxContext,
        maxBatchedTokens: resolved.maxBatchedTokens,
        maxSeqs: resolved.maxSeqs,
        maxWaiting: resolved.maxWaiting,
        kvBlockSize: resolved.kvBlockSize,
        kvMemoryBytes: resolved.kvMemoryBytes,
        ...(options.kvMemoryFraction !== undefined ? { kvMemoryFraction: options.kvMemoryFraction } : {}),
        kvDtypeBf16: resolved.kvDtype === 'bfloat16' ? 1 : 0,
        enablePrefixCaching: resolved.enablePrefixCaching ? 1 : 0,
      },
      (batch) => router.dispatch(batch),
      options.onProgress,
    );
  } catch (err) {
    throw toEngineError(err);
  }
  return new NativeBackedEngine(native, router, native.info(), resolved);
}
