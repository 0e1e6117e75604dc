// A small in-memory Engine for unit tests of the HTTP layer only: each request replays a scripted token list, one
// token per step, honouring maxTokens, stop token ids, cancel, logprobs and the running/waiting counts.
// Integration tests use the real native engine instead.
import type {
  Engine,
  EngineOptions,
  EngineStats,
  EventHandler,
  GenerationRequest,
  ModelInfo,
  TokenEvent,
} from '../../src/engine/types.js';

interface Live {
  id: number;
  request: GenerationRequest;
  script: number[];
  at: number;
  onEvents: EventHandler;
}

export class ScriptedEngine implements Engine {
  readonly info: ModelInfo = {
    architecture: 'GptOssForCausalLM',
    backend: 'scripted',
    simd: 'none',
    nLayers: 1,
    nExperts: 1,
    nExpertsPerTok: 1,
    hiddenSize: 8,
    nHeads: 1,
    nKvHeads: 1,
    headDim: 8,
    vocabSize: 201088,
    slidingWindow: 128,
    maxPositionEmbeddings: 4096,
    eosTokenId: 200002,
    bosTokenId: -1,
    addBosToken: false,
    weightBytes: 0,
  };
  readonly options: Required<Omit<EngineOptions, 'onProgress' | 'backend' | 'threads' | 'kvMemoryFraction'>>;
  private nextId = 1;
  private readonly live = new Map<number, Live>();
  private timer?: NodeJS.Timeout;
  readonly submitted: GenerationRequest[] = [];
  readonly cancelled: number[] = [];
  private generated = 0;

  constructor(
    private readonly script: (request: GenerationRequest) => number[],
    options: Partial<EngineOptions> = {},
    private readonly stepMs = 1,
  ) {
    this.options = {
      modelPath: '/scripted',
      maxContext: options.maxContext ?? 1024,
      maxBatchedTokens: 512,
      maxSeqs: options.maxSeqs ?? 4,
      maxWaiting: 0,
      kvBlockSize: 16,
      kvMemoryBytes: 1 << 20,
      kvDtype: 'float32',
      enablePrefixCaching: false,
    };
  }

  submit(request: GenerationRequest, onEvents: EventHandler): number {
    const id = this.nextId++;
    this.submitted.push(request);
    this.live.set(id, { id, request, script: this.script(request), at: 0, onEvents });
    this.timer ??= setInterval(() => this.step(), this.stepMs);
    return id;
  }

  cancel(id: number): void {
    const live = this.live.get(id);
    if (!live) return;
    this.cancelled.push(id);
    this.live.delete(id);
    live.onEvents([{ token: -1, finishReason: 'cancelled' }]);
  }

  private step(): void {
    let running = 0;
    for (const live of [...this.live.values()]) {
      if (running++ >= this.options.maxSeqs) break;
      const token = live.script[live.at++ % live.script.length]!;
      this.generated++;
      const event: TokenEvent = { token };
      if (live.request.logprobs) {
        event.logprob = -0.5;
        event.topLogprobs = Array.from({ length: live.request.logprobs }, (_, i) => ({
          token: token + i,
          logprob: -0.5 - i,
        }));
      }
      if (live.at === 1) event.cachedPromptTokens = 0;
      if (live.request.stopTokenIds?.includes(token)) event.finishReason = 'stop';
      else if (live.at >= live.request.maxTokens) event.finishReason = 'length';
      if (event.finishReason) this.live.delete(live.id);
      live.onEvents([event]);
    }
    if (this.live.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  stats(): EngineStats {
    const running = Math.min(this.live.size, this.options.maxSeqs);
    return {
      running,
      waiting: this.live.size - running,
      kvBlocksUsed: running,
      kvBlocksTotal: 64,
      prefixCacheQueries: 0,
      prefixCacheHits: 0,
      preemptions: 0,
      promptTokens: 0,
      generationTokens: this.generated,
      steps: 0,
    };
  }

  evalLogits(): Float32Array {
    throw new Error('not scripted');
  }

  async close(): Promise<void> {
    for (const id of [...this.live.keys()]) this.cancel(id);
  }
}
