// The TypeScript view of the native engine (worker/native/include/engine.h through the N-API addon).
// The worker's HTTP layer depends only on these types; `native.ts` implements them over the addon.

export interface ModelInfo {
  architecture: string;
  backend: string;
  simd: string;
  nLayers: number;
  nExperts: number;
  nExpertsPerTok: number;
  hiddenSize: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  vocabSize: number;
  slidingWindow: number;
  maxPositionEmbeddings: number;
  eosTokenId: number;
  /** -1 when the model has none. */
  bosTokenId: number;
  /** The model's tokenizer asks for bosTokenId at the start of every prompt (GGUF `tokenizer.ggml.add_bos_token`). */
  addBosToken: boolean;
  weightBytes: number;
}

/** The tokenizer and chat template a model file carries (GGUF models), through the engine's C API. */
export interface ModelTokenizer {
  /** Text to ids; parseSpecial: control tokens such as `<|im_start|>` written in the text are read as such. */
  tokenize(text: string, parseSpecial: boolean): number[];
  /** One token's bytes; special: control tokens give their text (else no bytes). Throws for ids outside the vocabulary. */
  tokenBytes(token: number, special: boolean): Uint8Array;
  /** The chat template from the file's metadata ("" when it has none). */
  readonly chatTemplate: string;
}

export interface EngineOptions {
  /** Hugging Face checkpoint directory (config.json + *.safetensors), a .gguf file or a directory holding one. */
  modelPath: string;
  backend?: 'cpu' | 'cuda' | 'auto';
  threads?: number;
  maxContext?: number;
  maxBatchedTokens?: number;
  maxSeqs?: number;
  /** Requests queued inside the engine before submit() throws EngineCapacityError. 0 = unbounded. */
  maxWaiting?: number;
  kvBlockSize?: number;
  kvMemoryBytes?: number;
  /** CUDA backend: share of GPU memory for weights + activations + KV (the rest of it after weights becomes KV). */
  kvMemoryFraction?: number;
  kvDtype?: 'float32' | 'bfloat16';
  enablePrefixCaching?: boolean;
  /** Called during loading with bytes processed and the total. */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

export interface GenerationRequest {
  prompt: number[];
  maxTokens: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  seed?: number;
  stopTokenIds?: number[];
  /** 0 or absent: no logprobs; N: the sampled token's logprob plus the top-N alternatives (N ≤ 20). */
  logprobs?: number;
  /** OpenAI semantics, in [-2, 2] (0 = off): subtracts count × penalty from each generated token's logit. */
  frequencyPenalty?: number;
  /** OpenAI semantics, in [-2, 2] (0 = off): subtracts the penalty once from every token generated so far. */
  presencePenalty?: number;
  /** vLLM semantics, > 0 (1 = off): divides positive / multiplies negative logits of prompt and generated tokens. */
  repetitionPenalty?: number;
}

export type FinishReason = 'stop' | 'length' | 'cancelled' | 'error';

export interface TokenEvent {
  /** -1 on an event that only finishes the request (cancelled, error). */
  token: number;
  logprob?: number;
  topLogprobs?: { token: number; logprob: number }[];
  /** Set on the request's last event. */
  finishReason?: FinishReason;
  /** On the first token: prompt tokens that came from the prefix cache. */
  cachedPromptTokens?: number;
  /** With finishReason 'error'. */
  message?: string;
}

export interface EngineStats {
  running: number;
  waiting: number;
  kvBlocksUsed: number;
  kvBlocksTotal: number;
  prefixCacheQueries: number;
  prefixCacheHits: number;
  preemptions: number;
  promptTokens: number;
  generationTokens: number;
  steps: number;
}

/** Events of one request, delivered in order, in batches (one call per engine step that produced any).
 * `deliveredAt`: performance.now() when the engine handed the step's events to JS, before any request's handler ran
 * (absent where an engine wrapper hands them out on its own schedule). */
export type EventHandler = (events: TokenEvent[], deliveredAt?: number) => void;

export interface Engine {
  readonly info: ModelInfo;
  /** The model's own tokenizer (GGUF models); absent for checkpoints without one (gpt-oss: o200k_harmony). */
  readonly tokenizer?: ModelTokenizer;
  readonly options: Required<Omit<EngineOptions, 'onProgress' | 'backend' | 'threads' | 'kvMemoryFraction'>>;
  /** Queues a request; returns its id. Throws EngineCapacityError when it can never fit or the queue is full. */
  submit(request: GenerationRequest, onEvents: EventHandler): number;
  /** Cancels a request; its KV blocks are freed before the next step. Unknown ids are ignored. */
  cancel(id: number): void;
  stats(): EngineStats;
  /** Reference path: logits of every position of `tokens` (Float32Array of tokens.length × vocab). */
  evalLogits(tokens: number[]): Float32Array;
  /** Cancels everything in flight and frees the engine and the model. */
  close(): Promise<void>;
}

export class EngineError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'EngineError';
  }
}

/** The request can never fit (context, KV pool) or the engine's waiting queue is full. */
export class EngineCapacityError extends EngineError {}
