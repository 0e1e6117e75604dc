// Gateway configuration from flags (--name=value or --name value) with environment fallbacks (MODELSERVE_GATEWAY_*).
import { hostname } from 'node:os';
import type { Level } from '../telemetry/logger.js';

export interface GatewayConfig {
  host: string;
  port: number;
  kubeconfig?: string;
  /** Watch ModelDeployments and EndpointSlices of this namespace only; all when unset. */
  namespace?: string;
  /** Namespace of the API-key Secrets; all when unset. */
  keysNamespace?: string;
  /** model=url,url;model2=url — serve these workers without Kubernetes. */
  staticModels?: string;
  auth: boolean;
  redisUrl?: string;
  gatewayId: string;
  maxBodyBytes: number;
  maxInflightPerWorker: number;
  loadFactor: number;
  prefixChars: number;
  queueMax: number;
  queueTimeoutMs: number;
  retryAfterSeconds: number;
  maxAttempts: number;
  graceMs: number;
  logPrompts: boolean;
  logLevel: Level;
  resyncMs: number;
}

interface Flag {
  env: string;
  help: string;
  boolean?: boolean;
}

const flags: Record<string, Flag> = {
  host: { env: 'MODELSERVE_GATEWAY_HOST', help: 'address to listen on (default 0.0.0.0)' },
  port: {
    env: 'MODELSERVE_GATEWAY_PORT',
    help: 'port of the OpenAI API, /healthz, /readyz, /metrics (default 8080; 0 = any)',
  },
  kubeconfig: { env: 'KUBECONFIG', help: 'kubeconfig file; in-cluster config when unset' },
  namespace: {
    env: 'MODELSERVE_GATEWAY_NAMESPACE',
    help: 'watch ModelDeployments/EndpointSlices of this namespace only',
  },
  'keys-namespace': { env: 'MODELSERVE_GATEWAY_KEYS_NAMESPACE', help: 'namespace of API-key Secrets (default: all)' },
  'static-models': {
    env: 'MODELSERVE_GATEWAY_STATIC_MODELS',
    help: 'model=url,url;model2=url: no Kubernetes, fixed workers',
  },
  auth: { env: 'MODELSERVE_GATEWAY_AUTH', help: 'require API keys (default true; false for local use)', boolean: true },
  'redis-url': { env: 'MODELSERVE_REDIS_URL', help: 'Redis for rate limits and queue signals (none: no limits)' },
  'gateway-id': { env: 'POD_NAME', help: 'this replica in Redis queue entries (default hostname-pid)' },
  'max-body-bytes': { env: 'MODELSERVE_GATEWAY_MAX_BODY_BYTES', help: 'larger bodies get 413 (default 4194304)' },
  'max-inflight-per-worker': {
    env: 'MODELSERVE_GATEWAY_MAX_INFLIGHT',
    help: 'requests per worker before queueing (default 64)',
  },
  'load-factor': { env: 'MODELSERVE_GATEWAY_LOAD_FACTOR', help: 'affinity load bound c × average (default 1.25)' },
  'prefix-chars': {
    env: 'MODELSERVE_GATEWAY_PREFIX_CHARS',
    help: 'prompt characters hashed for affinity (default 512)',
  },
  'queue-max': { env: 'MODELSERVE_GATEWAY_QUEUE_MAX', help: 'requests waiting per model before 429 (default 256)' },
  'queue-timeout-seconds': {
    env: 'MODELSERVE_GATEWAY_QUEUE_TIMEOUT_SECONDS',
    help: 'wait for a worker before 503 (default 60)',
  },
  'retry-after-seconds': {
    env: 'MODELSERVE_GATEWAY_RETRY_AFTER_SECONDS',
    help: 'Retry-After of queue 429/503 (default 2)',
  },
  'max-attempts': { env: 'MODELSERVE_GATEWAY_MAX_ATTEMPTS', help: 'workers tried before the first byte (default 3)' },
  'grace-seconds': {
    env: 'MODELSERVE_GATEWAY_GRACE_SECONDS',
    help: 'in-flight streams may finish this long on SIGTERM (default 30)',
  },
  'log-prompts': {
    env: 'MODELSERVE_GATEWAY_LOG_PROMPTS',
    help: 'put prompt text in audit lines (default false)',
    boolean: true,
  },
  'log-level': { env: 'MODELSERVE_LOG_LEVEL', help: 'debug, info, warn or error (default info)' },
  'resync-seconds': { env: 'MODELSERVE_GATEWAY_RESYNC_SECONDS', help: 'informer resync period (default 300)' },
};

export function usage(): string {
  return Object.entries(flags)
    .map(([name, f]) => `  --${name.padEnd(24)} ${f.help} [$${f.env}]`)
    .join('\n');
}

function number(
  name: string,
  value: string | undefined,
  fallback: number,
  opts: { min: number; integer?: boolean },
): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < opts.min || (opts.integer && !Number.isInteger(n))) {
    throw new Error(`--${name}: expected ${opts.integer ? 'an integer' : 'a number'} ≥ ${opts.min}, got ${value}`);
  }
  return n;
}

function boolean(name: string, value: string | undefined, fallback: boolean): boolean {
  if (value === undefined || value === '') return fallback;
  const v = value.toLowerCase();
  if (['true', '1', 'yes'].includes(v)) return true;
  if (['false', '0', 'no'].includes(v)) return false;
  throw new Error(`--${name}: expected true or false, got ${value}`);
}

export function parseConfig(argv: string[], env: NodeJS.ProcessEnv): GatewayConfig {
  const given: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (!arg.startsWith('--')) throw new Error(`unexpected argument ${arg}\n${usage()}`);
    const eq = arg.indexOf('=');
    const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    const flag = flags[name];
    if (!flag) throw new Error(`unknown flag --${name}\n${usage()}`);
    let value: string | undefined = eq < 0 ? argv[i + 1] : arg.slice(eq + 1);
    if (eq < 0) {
      if (value === undefined || value.startsWith('--')) {
        if (!flag.boolean) throw new Error(`--${name} needs a value`);
        value = 'true';
      } else i++;
    }
    given[name] = value ?? '';
  }
  const get = (name: string): string | undefined => given[name] ?? env[(flags[name] as Flag).env];
  const level = (get('log-level') || 'info') as Level;
  if (!['debug', 'info', 'warn', 'error'].includes(level)) throw new Error(`--log-level: unknown level ${level}`);
  return {
    host: get('host') || '0.0.0.0',
    port: number('port', get('port'), 8080, { min: 0, integer: true }),
    kubeconfig: get('kubeconfig') || undefined,
    namespace: get('namespace') || undefined,
    keysNamespace: get('keys-namespace') || undefined,
    staticModels: get('static-models') || undefined,
    auth: boolean('auth', get('auth'), true),
    redisUrl: get('redis-url') || undefined,
    gatewayId: get('gateway-id') || `${hostname()}-${process.pid}`,
    maxBodyBytes: number('max-body-bytes', get('max-body-bytes'), 4 * 1024 * 1024, { min: 1, integer: true }),
    maxInflightPerWorker: number('max-inflight-per-worker', get('max-inflight-per-worker'), 64, {
      min: 1,
      integer: true,
    }),
    loadFactor: number('load-factor', get('load-factor'), 1.25, { min: 1 }),
    prefixChars: number('prefix-chars', get('prefix-chars'), 512, { min: 0, integer: true }),
    queueMax: number('queue-max', get('queue-max'), 256, { min: 0, integer: true }),
    queueTimeoutMs: number('queue-timeout-seconds', get('queue-timeout-seconds'), 60, { min: 0 }) * 1000,
    retryAfterSeconds: number('retry-after-seconds', get('retry-after-seconds'), 2, { min: 0, integer: true }),
    maxAttempts: number('max-attempts', get('max-attempts'), 3, { min: 1, integer: true }),
    graceMs: number('grace-seconds', get('grace-seconds'), 30, { min: 0 }) * 1000,
    logPrompts: boolean('log-prompts', get('log-prompts'), false),
    logLevel: level,
    resyncMs: number('resync-seconds', get('resync-seconds'), 300, { min: 1 }) * 1000,
  };
}
