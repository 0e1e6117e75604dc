// The worker process: parse flags/env, start HTTP at once (/health answers, /ready says loading), load the engine
// with progress logs, then serve; SIGTERM drains. Usage: npx tsx worker/src/main.ts --model DIR [--port 8000] …
import { basename, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_CONFIG, type WorkerConfig } from './context.js';
import { installSignalHandlers } from './drain.js';
import { kvBudget, memoryLimitBytes, readKvMemoryFraction, weightsBytes } from './engine/kv-budget.js';
import { loadEngine } from './engine/native.js';
import { PacedEngine } from './engine/paced.js';
import { applyComputeThreadNice } from './engine/thread-nice.js';
import { warmUp } from './engine/warmup.js';
import { architectureMismatch, readExpectedArchitecture } from './family/architecture.js';
import { describeFamily } from './family/family.js';
import { youngGenerationMiB } from './gc.js';
import type { Engine, EngineOptions } from './engine/types.js';
import type { ReasoningEffort } from './harmony/render.js';
import { createLogger, type LogLevel } from './log.js';
import { createApp, listen } from './server.js';
import { Tokenizer } from './tokenizer.js';
import { initTracing, type TracingMode } from './tracing.js';
import { chooseWeights, isSyntheticModel, SYNTHETIC_PREFIX } from './weights.js';

const HELP = `modelserve worker: OpenAI-compatible server over the native engine (gpt-oss, GGUF llama models)

  --model PATH              checkpoint directory (config.json + *.safetensors), or a .gguf file or a directory
                            holding one, or synthetic:gpt-oss-20b|synthetic:gpt-oss-120b (random weights
                            generated on the GPU, --backend cuda; benchmarks only)  env MODELSERVE_MODEL
  --served-model-name NAME  the OpenAI model id (default: the directory's name)     env MODELSERVE_SERVED_MODEL_NAME
  --host HOST / --port N    listen address (default 0.0.0.0:8000)                  env MODELSERVE_HOST / MODELSERVE_PORT
  --backend cpu|cuda|auto   engine backend (default auto)                           env MODELSERVE_BACKEND
  --threads N               CPU backend threads                                     env MODELSERVE_THREADS
  --max-context N           max tokens per sequence                                 env MODELSERVE_MAX_CONTEXT
  --max-seqs N              max sequences in a batch                                env MODELSERVE_MAX_SEQS
  --max-batched-tokens N    token budget per engine step                            env MODELSERVE_MAX_BATCHED_TOKENS
  --kv-block-size N         KV cache block size in tokens                           env MODELSERVE_KV_BLOCK_SIZE
  --kv-memory-mb N          KV cache pool size in MiB                               env MODELSERVE_KV_MEMORY_MB
  --kv-memory-fraction F    share of device memory for the engine (default: engine.json's) env MODELSERVE_KV_MEMORY_FRACTION
  --engine-config FILE      the operator's engine.json                             env MODELSERVE_ENGINE_CONFIG
  --kv-dtype float32|bfloat16                                                       env MODELSERVE_KV_DTYPE
  --no-prefix-caching       disable prefix caching                                  env MODELSERVE_PREFIX_CACHING=0
  --max-queue N             sequences that may wait beyond the batch (default 256)  env MODELSERVE_MAX_QUEUE
  --grace-seconds N         drain time for in-flight streams on SIGTERM (default 30) env MODELSERVE_GRACE_SECONDS
  --reasoning-effort low|medium|high  default effort (default medium)               env MODELSERVE_REASONING_EFFORT
  --date YYYY-MM-DD|none    pin the harmony "Current date:" (default: today, UTC)   env MODELSERVE_DATE
  --log-level debug|info|warn|error                                                 env MODELSERVE_LOG_LEVEL
  --warmup-tokens N         generate N tokens before reporting ready (default 0: off) env MODELSERVE_WARMUP_TOKENS
  Traces: MODELSERVE_TRACES=off|console (default off).
  MS_COMPUTE_THREAD_NICE=N (0..19, default 10): the engine's compute threads run N nicer than the event loop.
  Node cache (set by the operator for spec.prewarm.nodeCache): MODELSERVE_WEIGHTS_CACHE=DIR is loaded instead of
  --model when DIR holds MODELSERVE_WEIGHTS_CACHE_MARKER (default .modelserve-complete.json) and the files it lists.
  Development only: MODELSERVE_DEV_TOKEN_DELAY_MS=N hands out each token at most every N ms (slow streams for tests).`;

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    'served-model-name': { type: 'string' },
    host: { type: 'string' },
    port: { type: 'string' },
    backend: { type: 'string' },
    threads: { type: 'string' },
    'max-context': { type: 'string' },
    'max-seqs': { type: 'string' },
    'max-batched-tokens': { type: 'string' },
    'kv-block-size': { type: 'string' },
    'kv-memory-mb': { type: 'string' },
    'kv-memory-fraction': { type: 'string' },
    'engine-config': { type: 'string' },
    'kv-dtype': { type: 'string' },
    'no-prefix-caching': { type: 'boolean' },
    'max-queue': { type: 'string' },
    'grace-seconds': { type: 'string' },
    'reasoning-effort': { type: 'string' },
    date: { type: 'string' },
    'log-level': { type: 'string' },
    'warmup-tokens': { type: 'string' },
    help: { type: 'boolean' },
  },
});

if (values.help) {
  console.log(HELP);
  process.exit(0);
}

const env = (name: string): string | undefined => process.env[`MODELSERVE_${name}`];
const opt = (flag: keyof typeof values, envName: string): string | undefined =>
  (values[flag] as string | undefined) ?? env(envName);

function fail(message: string): never {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level: 'error', msg: message })}\n`);
  process.exit(2);
}

function intOpt(flag: keyof typeof values, envName: string, min = 0): number | undefined {
  const raw = opt(flag, envName);
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) fail(`--${String(flag)} must be an integer ≥ ${min}, got '${raw}'`);
  return n;
}

function enumOpt<T extends string>(flag: keyof typeof values, envName: string, allowed: readonly T[]): T | undefined {
  const raw = opt(flag, envName);
  if (raw === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(raw))
    fail(`--${String(flag)} must be one of ${allowed.join(', ')}, got '${raw}'`);
  return raw as T;
}

const modelPath = opt('model', 'MODEL') ?? fail('--model DIR is required (see --help)');
const logger = createLogger(enumOpt<LogLevel>('log-level', 'LOG_LEVEL', ['debug', 'info', 'warn', 'error']) ?? 'info');
// spec.prewarm.nodeCache: the node's cache entry when it is complete, else the model source (weights.ts).
const weights = chooseWeights({
  modelPath,
  cacheDir: env('WEIGHTS_CACHE'),
  marker: env('WEIGHTS_CACHE_MARKER'),
});
const dateRaw = opt('date', 'DATE');
if (dateRaw !== undefined && dateRaw !== 'none' && !/^\d{4}-\d{2}-\d{2}$/.test(dateRaw)) {
  fail(`--date must be YYYY-MM-DD or none, got '${dateRaw}'`);
}
const config: WorkerConfig = {
  ...DEFAULT_CONFIG,
  servedModelName:
    opt('served-model-name', 'SERVED_MODEL_NAME') ??
    (isSyntheticModel(modelPath) ? modelPath.slice(SYNTHETIC_PREFIX.length) : basename(resolve(modelPath))),
  maxQueue: intOpt('max-queue', 'MAX_QUEUE') ?? DEFAULT_CONFIG.maxQueue,
  defaultReasoningEffort:
    enumOpt<ReasoningEffort>('reasoning-effort', 'REASONING_EFFORT', ['low', 'medium', 'high']) ??
    DEFAULT_CONFIG.defaultReasoningEffort,
  ...(dateRaw !== undefined ? { conversationDate: dateRaw === 'none' ? null : dateRaw } : {}),
};
const graceSeconds = intOpt('grace-seconds', 'GRACE_SECONDS') ?? 30;
const warmupTokens = intOpt('warmup-tokens', 'WARMUP_TOKENS') ?? 0;
// Development only (engine/paced.ts): long streams from a tiny checkpoint for the end-to-end tests.
const devTokenDelayRaw = env('DEV_TOKEN_DELAY_MS');
const devTokenDelayMs = devTokenDelayRaw === undefined ? undefined : Number(devTokenDelayRaw);
if (devTokenDelayMs !== undefined && !(Number.isInteger(devTokenDelayMs) && devTokenDelayMs >= 1)) {
  fail(`MODELSERVE_DEV_TOKEN_DELAY_MS must be an integer ≥ 1, got '${devTokenDelayRaw}'`);
}
const kvMemoryMb = intOpt('kv-memory-mb', 'KV_MEMORY_MB', 1);
const backend = enumOpt('backend', 'BACKEND', ['cpu', 'cuda', 'auto'] as const) ?? 'auto';
const kv = (() => {
  try {
    const fractionRaw = opt('kv-memory-fraction', 'KV_MEMORY_FRACTION');
    const engineConfig = opt('engine-config', 'ENGINE_CONFIG');
    const fraction =
      fractionRaw !== undefined ? Number(fractionRaw) : engineConfig ? readKvMemoryFraction(engineConfig) : undefined;
    return kvBudget({
      backend,
      explicitBytes: kvMemoryMb !== undefined ? kvMemoryMb * 1024 * 1024 : undefined,
      fraction,
      memoryLimitBytes: memoryLimitBytes(env('MEMORY_LIMIT')),
      weightsBytes: fraction !== undefined ? weightsBytes(weights.path) : 0,
    });
  } catch (err) {
    return fail((err as Error).message);
  }
})();
const engineOptions: EngineOptions = {
  modelPath: weights.path,
  backend,
  ...defined('threads', intOpt('threads', 'THREADS', 1)),
  ...defined('maxContext', intOpt('max-context', 'MAX_CONTEXT', 1)),
  ...defined('maxSeqs', intOpt('max-seqs', 'MAX_SEQS', 1)),
  ...defined('maxBatchedTokens', intOpt('max-batched-tokens', 'MAX_BATCHED_TOKENS', 1)),
  ...defined('kvBlockSize', intOpt('kv-block-size', 'KV_BLOCK_SIZE', 1)),
  ...defined('kvMemoryBytes', kv.kind === 'bytes' ? kv.bytes : undefined),
  ...defined('kvMemoryFraction', kv.kind === 'fraction' ? kv.fraction : undefined),
  ...defined('kvDtype', enumOpt('kv-dtype', 'KV_DTYPE', ['float32', 'bfloat16'] as const)),
  enablePrefixCaching: !(values['no-prefix-caching'] || env('PREFIX_CACHING') === '0'),
};

function defined<K extends string, V>(key: K, value: V | undefined): Partial<Record<K, V>> {
  return value === undefined ? {} : ({ [key]: value } as Record<K, V>);
}

const tracing = initTracing((env('TRACES') as TracingMode | undefined) ?? 'off');
const { app, ctx } = createApp({ tokenizer: new Tokenizer(), config, logger, tracing });
const port = intOpt('port', 'PORT') ?? 8000;
const { server, port: bound } = await listen(app, port, opt('host', 'HOST') ?? '0.0.0.0');
logger.info('listening', { port: bound, model: config.servedModelName });

let engine: Engine | undefined;
installSignalHandlers(ctx, server, {
  graceSeconds,
  onClosed: async () => {
    await engine?.close();
    await tracing.shutdown();
  },
});

// Before the addon starts the engine's threads (it reads the setting then).
const computeThreadNice = applyComputeThreadNice();
logger.info('loading model', {
  modelPath: engineOptions.modelPath,
  weightsFrom: weights.from,
  weightsReason: weights.reason,
  ...(weights.from === 'cache' ? { cachedBytes: weights.bytes, cachedFiles: weights.files } : {}),
  backend: engineOptions.backend,
  kvCache: kv.kind === 'bytes' ? `${Math.round(kv.bytes / 2 ** 20)} MiB` : kv.kind,
  kvCacheReason: kv.reason,
  computeThreadNice,
});
const started = performance.now();
let lastLogged = 0;
const loaded = { done: 0, total: 0 };
const loadSeconds = (): number => (performance.now() - started) / 1000;
try {
  engine = await loadEngine({
    ...engineOptions,
    onProgress(done, total) {
      Object.assign(loaded, { done, total });
      ctx.metrics.observeLoadProgress(done, total, loadSeconds());
      const now = performance.now();
      if (now - lastLogged < 1000 && done < total) return;
      lastLogged = now;
      logger.info('loading progress', {
        doneBytes: done,
        totalBytes: total,
        percent: total ? Math.round((100 * done) / total) : 100,
        bytesPerSecond: Math.round(done / Math.max(loadSeconds(), 1e-3)),
      });
    },
  });
} catch (err) {
  logger.error('model load failed', { error: (err as Error).message });
  server.close();
  process.exit(1);
}
// spec.model.architecture (engine.json's model.architecture), when set, asserts what the checkpoint must be.
const engineConfigPath = opt('engine-config', 'ENGINE_CONFIG');
try {
  const mismatch = architectureMismatch(
    engineConfigPath ? readExpectedArchitecture(engineConfigPath) : undefined,
    engine.info,
  );
  if (mismatch) throw new Error(mismatch);
} catch (err) {
  logger.error('model load failed', { error: (err as Error).message });
  server.close();
  process.exit(1);
}
if (devTokenDelayMs !== undefined) logger.warn('development token pacing on', { tokenDelayMs: devTokenDelayMs });
// The weight load ends here; a warm-up below is start-up time, not load time.
const loadDone = loadSeconds();
if (warmupTokens > 0) {
  const warmStart = performance.now();
  try {
    await warmUp(engine, warmupTokens);
  } catch (err) {
    logger.error('warm-up failed', { error: (err as Error).message });
    server.close();
    process.exit(1);
  }
  logger.info('warmed up', {
    tokens: warmupTokens,
    seconds: Number(((performance.now() - warmStart) / 1000).toFixed(2)),
  });
}
ctx.attachEngine(devTokenDelayMs !== undefined ? new PacedEngine(engine, devTokenDelayMs) : engine);
// performance.now() counts from the process start: this is the whole cold start, runtime and imports included.
const processSeconds = performance.now() / 1000;
ctx.metrics.observeLoadProgress(loaded.done, loaded.total, loadDone);
ctx.metrics.observeReady(processSeconds);
logger.info('ready', {
  seconds: Number(loadDone.toFixed(2)),
  loadedBytes: loaded.done,
  bytesPerSecond: Math.round(loaded.done / Math.max(loadDone, 1e-3)),
  sinceProcessStartSeconds: Number(processSeconds.toFixed(2)),
  architecture: engine.info.architecture,
  family: describeFamily(ctx.family!),
  backend: engine.info.backend,
  simd: engine.info.simd,
  maxContext: engine.options.maxContext,
  maxSeqs: engine.options.maxSeqs,
  // 16 with gc.ts's WORKER_NODE_FLAGS on node's command line (the operator's worker command), else 1 (V8's default).
  youngGenerationMiB: youngGenerationMiB(),
});
