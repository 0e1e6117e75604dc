// Operator configuration from flags (--name=value or --name value) with environment fallbacks (MODELSERVE_*).
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { defaultPlanConfig, type PlanConfig } from './controller/plan.js';
import type { Level } from './telemetry/logger.js';
import { parseBytes } from './weightcache/keys.js';
import { defaultWeightCacheConfig, type WeightCacheConfig } from './weightcache/desired.js';

export interface OperatorConfig {
  kubeconfig?: string;
  /** Watch only this namespace; all when unset. */
  watchNamespace?: string;
  leaderElect: boolean;
  leaseNamespace: string;
  leaseName: string;
  identity: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  httpPort: number;
  httpHost: string;
  concurrency: number;
  resyncMs: number;
  logLevel: Level;
  /** Redis shared with the gateway (queue depth, autoscaler state); no autoscaler without it. */
  redisUrl?: string;
  plan: PlanConfig;
  /** The node-local weight cache (spec.prewarm.nodeCache): where, how big, and the stager Jobs' image. */
  weightCache: WeightCacheConfig;
}

const flags: Record<string, { env: string; help: string }> = {
  kubeconfig: { env: 'KUBECONFIG', help: 'kubeconfig file; in-cluster config when unset' },
  namespace: { env: 'MODELSERVE_WATCH_NAMESPACE', help: 'watch only this namespace (default: all)' },
  'leader-elect': { env: 'MODELSERVE_LEADER_ELECT', help: 'campaign for a Lease before reconciling (default true)' },
  'lease-namespace': { env: 'POD_NAMESPACE', help: 'namespace of the leader Lease (default modelserve-system)' },
  'lease-name': { env: 'MODELSERVE_LEASE_NAME', help: 'name of the leader Lease (default modelserve-operator)' },
  identity: { env: 'POD_NAME', help: 'holder identity in the Lease (default hostname-pid-random)' },
  'lease-duration': { env: 'MODELSERVE_LEASE_DURATION_SECONDS', help: 'seconds (default 15)' },
  'renew-deadline': { env: 'MODELSERVE_RENEW_DEADLINE_SECONDS', help: 'seconds (default 10)' },
  'retry-period': { env: 'MODELSERVE_RETRY_PERIOD_SECONDS', help: 'seconds (default 2)' },
  'http-port': { env: 'MODELSERVE_HTTP_PORT', help: 'port of /healthz, /readyz, /metrics (default 8080; 0 = any)' },
  'http-host': { env: 'MODELSERVE_HTTP_HOST', help: 'address to listen on (default 0.0.0.0)' },
  concurrency: { env: 'MODELSERVE_CONCURRENCY', help: 'parallel reconciles (default 4)' },
  'resync-seconds': { env: 'MODELSERVE_RESYNC_SECONDS', help: 'periodic resync of every object (default 300)' },
  'log-level': { env: 'MODELSERVE_LOG_LEVEL', help: 'debug, info, warn or error (default info)' },
  'worker-image': { env: 'MODELSERVE_WORKER_IMAGE', help: 'default worker image' },
  'worker-command': { env: 'MODELSERVE_WORKER_COMMAND', help: 'worker entry point, JSON array or space-separated' },
  'fetch-command': { env: 'MODELSERVE_FETCH_COMMAND', help: 'weights download entry point (init container)' },
  'cluster-domain': { env: 'MODELSERVE_CLUSTER_DOMAIN', help: 'Service DNS suffix (default cluster.local)' },
  'redis-url': { env: 'MODELSERVE_REDIS_URL', help: 'Redis of the gateway queues; runs the autoscaler when set' },
  'weight-cache-dir': {
    env: 'MODELSERVE_WEIGHT_CACHE_DIR',
    help: 'node-local weight cache root on GPU nodes (default /var/lib/modelserve/weights)',
  },
  'weight-cache-budget': {
    env: 'MODELSERVE_WEIGHT_CACHE_BUDGET',
    help: 'disk budget of the cache per node, e.g. 500Gi (default: unlimited)',
  },
  'weight-cache-retries': { env: 'MODELSERVE_WEIGHT_CACHE_RETRIES', help: 'stager Job backoffLimit (default 2)' },
  'stager-image': { env: 'MODELSERVE_STAGER_IMAGE', help: 'image of the weight-cache stager Jobs' },
  'stager-command': { env: 'MODELSERVE_STAGER_COMMAND', help: 'stager entry point, JSON array or space-separated' },
  'hf-token-secret': {
    env: 'MODELSERVE_HF_TOKEN_SECRET',
    help: "Secret (key token) in a deployment's namespace: HF_TOKEN of its hf:// stagers",
  },
  'hf-endpoint': {
    env: 'HF_ENDPOINT',
    help: 'Hugging Face Hub (or mirror) for hf:// sources (default huggingface.co)',
  },
};

export function usage(): string {
  return Object.entries(flags)
    .map(([name, f]) => `  --${name.padEnd(18)} ${f.help} [$${f.env}]`)
    .join('\n');
}

function parseCommand(text: string): string[] {
  const trimmed = text.trim();
  if (trimmed.startsWith('[')) {
    const parsed: unknown = JSON.parse(trimmed);
    if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === 'string')) {
      throw new Error(`expected a JSON array of strings, got ${trimmed}`);
    }
    return parsed as string[];
  }
  return trimmed ? trimmed.split(/\s+/) : [];
}

function positiveNumber(name: string, value: string | undefined, fallback: number, allowZero = false): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) {
    throw new Error(`--${name}: expected a ${allowZero ? 'non-negative' : 'positive'} number, got ${value}`);
  }
  return n;
}

export function parseConfig(argv: string[], env: NodeJS.ProcessEnv): OperatorConfig {
  const given: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (!arg.startsWith('--')) throw new Error(`unexpected argument ${arg}\n${usage()}`);
    const eq = arg.indexOf('=');
    const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    if (!(name in flags)) throw new Error(`unknown flag --${name}\n${usage()}`);
    let value: string | undefined = eq < 0 ? argv[i + 1] : arg.slice(eq + 1);
    if (eq < 0) {
      if (value === undefined || value.startsWith('--')) {
        if (name !== 'leader-elect') throw new Error(`--${name} needs a value`);
        value = 'true';
      } else i++;
    }
    given[name] = value ?? '';
  }
  const get = (name: string): string | undefined => given[name] ?? env[flags[name]!.env];

  const level = (get('log-level') ?? 'info') as Level;
  if (!['debug', 'info', 'warn', 'error'].includes(level)) throw new Error(`--log-level: unknown level ${level}`);
  const leaderElect = (get('leader-elect') ?? 'true').toLowerCase();
  if (!['true', 'false'].includes(leaderElect)) throw new Error(`--leader-elect: expected true or false`);
  const workerCommand = get('worker-command');
  const fetchCommand = get('fetch-command');
  const stagerCommand = get('stager-command');
  const cacheDir = get('weight-cache-dir') || defaultWeightCacheConfig.hostPath;
  if (!cacheDir.startsWith('/')) throw new Error(`--weight-cache-dir: expected an absolute path, got ${cacheDir}`);
  const budget = get('weight-cache-budget') || undefined;
  if (budget) parseBytes(budget, '--weight-cache-budget');
  return {
    kubeconfig: get('kubeconfig') || undefined,
    watchNamespace: get('namespace') || undefined,
    leaderElect: leaderElect === 'true',
    leaseNamespace: get('lease-namespace') || 'modelserve-system',
    leaseName: get('lease-name') || 'modelserve-operator',
    identity: get('identity') || `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`,
    leaseDurationMs: positiveNumber('lease-duration', get('lease-duration'), 15) * 1000,
    renewDeadlineMs: positiveNumber('renew-deadline', get('renew-deadline'), 10) * 1000,
    retryPeriodMs: positiveNumber('retry-period', get('retry-period'), 2) * 1000,
    httpPort: positiveNumber('http-port', get('http-port'), 8080, true),
    httpHost: get('http-host') || '0.0.0.0',
    concurrency: positiveNumber('concurrency', get('concurrency'), 4),
    resyncMs: positiveNumber('resync-seconds', get('resync-seconds'), 300) * 1000,
    logLevel: level,
    redisUrl: get('redis-url') || undefined,
    plan: {
      workerImage: get('worker-image') || defaultPlanConfig.workerImage,
      workerCommand: workerCommand !== undefined ? parseCommand(workerCommand) : defaultPlanConfig.workerCommand,
      fetchCommand: fetchCommand !== undefined ? parseCommand(fetchCommand) : defaultPlanConfig.fetchCommand,
      clusterDomain: get('cluster-domain') || defaultPlanConfig.clusterDomain,
      weightCacheDir: cacheDir,
      ...(get('hf-endpoint') ? { hfEndpoint: get('hf-endpoint') } : {}),
      ...(get('hf-token-secret') ? { hfTokenSecret: get('hf-token-secret') } : {}),
    },
    weightCache: {
      hostPath: cacheDir,
      ...(budget ? { budget } : {}),
      stagerImage: get('stager-image') || defaultWeightCacheConfig.stagerImage,
      stagerCommand: stagerCommand !== undefined ? parseCommand(stagerCommand) : defaultWeightCacheConfig.stagerCommand,
      ...(get('hf-endpoint') ? { hfEndpoint: get('hf-endpoint') } : {}),
      ...(get('hf-token-secret') ? { hfTokenSecret: get('hf-token-secret') } : {}),
      jobRetries: positiveNumber(
        'weight-cache-retries',
        get('weight-cache-retries'),
        defaultWeightCacheConfig.jobRetries,
        true,
      ),
    },
  };
}
