// The gateway process: flags → Redis (optional) → discovery (Kubernetes informers, or a static map) and API keys →
// HTTP. SIGTERM: /readyz turns 503, new connections are refused, in-flight streams get --grace-seconds to finish.
// Usage: npx tsx operator/src/gateway/main.ts --help
import { KubeConfig } from '@kubernetes/client-node';
import { Redis } from 'ioredis';
import { KubeClient } from '../k8s/rest.js';
import { createLogger, type Logger } from '../telemetry/logger.js';
import { ApiKeyStore } from './apiKeys.js';
import { parseConfig, usage, type GatewayConfig } from './config.js';
import { KubeDiscovery, StaticDiscovery, type Discovery } from './discovery.js';
import { Gateway } from './gateway.js';
import { KeySource } from './keySource.js';
import * as metrics from './metrics.js';
import { QueueSignals } from './queueSignals.js';
import { RateLimiter } from './rateLimit.js';

function loadConfig(): GatewayConfig {
  if (process.argv.includes('--help')) {
    process.stdout.write(`usage: gateway [flags]\n${usage()}\n`);
    process.exit(0);
  }
  try {
    return parseConfig(process.argv.slice(2), process.env);
  } catch (err) {
    process.stderr.write(`gateway: ${(err as Error).message}\n`);
    process.exit(2);
  }
}

/** Logs Redis failures at most once per 5 s per operation: an outage must not flood the log. */
function redisErrorReporter(log: Logger): (op: string, err: unknown) => void {
  const last = new Map<string, number>();
  return (op, err) => {
    metrics.redisErrors.inc({ op });
    const now = Date.now();
    if (now - (last.get(op) ?? 0) < 5_000) return;
    last.set(op, now);
    const what = op.startsWith('ratelimit') ? 'rate limits are not enforced (fail open)' : 'will retry';
    log.warn(`redis ${op} failed; ${what}`, { error: (err as Error).message ?? String(err) });
  };
}

function connectRedis(url: string, log: Logger): Redis {
  const redis = new Redis(url, {
    // Fail fast instead of queueing commands while disconnected: a request never waits on Redis.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: 1_000,
    connectTimeout: 2_000,
    retryStrategy: (n) => Math.min(100 * n, 2_000),
  });
  let down = false;
  redis.on('error', (err: Error) => {
    if (!down) log.warn('redis connection error; serving on, reconnecting', { error: err.message });
    down = true;
  });
  redis.on('ready', () => {
    if (down) log.info('redis reconnected');
    down = false;
  });
  return redis;
}

async function main(): Promise<void> {
  const config = loadConfig();
  const log = createLogger(config.logLevel, { component: 'gateway', gateway: config.gatewayId });
  const redis = config.redisUrl ? connectRedis(config.redisUrl, log) : undefined;
  if (!redis) log.warn('no --redis-url: per-key rate limits are off and queue lengths are not published');
  const onRedisError = redisErrorReporter(log);

  let client: KubeClient | undefined;
  const kube = (): KubeClient => {
    if (!client) {
      const kc = new KubeConfig();
      if (config.kubeconfig) kc.loadFromFile(config.kubeconfig);
      else kc.loadFromDefault();
      client = new KubeClient(kc);
    }
    return client;
  };
  const discovery: Discovery = config.staticModels
    ? new StaticDiscovery(config.staticModels, config.namespace ?? 'default')
    : new KubeDiscovery(kube(), {
        namespace: config.namespace,
        resyncMs: config.resyncMs,
        onError: (err) => log.warn('discovery watch failed; retrying', { error: String(err) }),
      });
  const keys = config.auth ? new ApiKeyStore() : undefined;
  const keySource = keys
    ? new KeySource(kube(), keys, log, { namespace: config.keysNamespace, resyncMs: config.resyncMs })
    : undefined;
  if (!keys) log.warn('authentication is off (--auth=false): every request is served');

  let synced = false;
  const signals = new QueueSignals(redis, config.gatewayId, onRedisError);
  const gateway = new Gateway({
    config,
    discovery,
    keys,
    limiter: new RateLimiter(redis, onRedisError),
    signals,
    log,
    isSynced: () => synced,
  });
  const port = await gateway.listen(config.host, config.port);
  log.info('gateway listening', { port, auth: config.auth, redis: Boolean(redis) });
  signals.start();
  await Promise.all([discovery.start(), keySource?.start()]);
  gateway.syncEndpoints();
  synced = true;
  log.info('gateway ready', { models: discovery.targets().map((t) => `${t.model} (${t.endpoints.length} ready)`) });

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('shutting down', { signal, inflight: gateway.inflight, graceMs: config.graceMs });
    const force = setTimeout(() => process.exit(1), config.graceMs + 10_000);
    force.unref();
    await gateway.shutdown(config.graceMs);
    signals.stop();
    await Promise.all([discovery.stop(), keySource?.stop()]);
    redis?.disconnect();
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

main().catch((err: unknown) => {
  process.stderr.write(`gateway: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
