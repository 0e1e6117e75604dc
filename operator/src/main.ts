// The operator process: configuration → HTTP endpoints → leader election → (as leader) informers and reconcilers.
// SIGTERM stops the informers and workers, then hands the Lease back so a standby takes over at once.
import { KubeConfig } from '@kubernetes/client-node';
import { startAutoscaler, type Autoscaler } from './autoscaler/loop.js';
import { parseConfig, usage, type OperatorConfig } from './config.js';
import { Controller } from './controller/reconciler.js';
import { LeaderElector } from './k8s/leaderElection.js';
import { KubeClient } from './k8s/rest.js';
import { boundPort, startHttpServer } from './server.js';
import { createLogger } from './telemetry/logger.js';
import * as metrics from './telemetry/metrics.js';
import { WeightCacheController } from './weightcache/controller.js';

function loadConfig(): OperatorConfig {
  if (process.argv.includes('--help')) {
    process.stdout.write(`usage: operator [flags]\n${usage()}\n`);
    process.exit(0);
  }
  try {
    return parseConfig(process.argv.slice(2), process.env);
  } catch (err) {
    process.stderr.write(`operator: ${(err as Error).message}\n`);
    process.exit(2);
  }
}

async function main(): Promise<void> {
  const config = loadConfig();
  const log = createLogger(config.logLevel, { component: 'operator', identity: config.identity });
  const kubeConfig = new KubeConfig();
  if (config.kubeconfig) kubeConfig.loadFromFile(config.kubeconfig);
  else kubeConfig.loadFromDefault();
  const client = new KubeClient(kubeConfig);

  let controller: Controller | undefined;
  let autoscaler: Autoscaler | undefined;
  let weightCache: WeightCacheController | undefined;
  let synced = false;
  let shuttingDown = false;
  const server = await startHttpServer(config.httpHost, config.httpPort, {
    // A follower is ready (it is doing its job: standing by); a leader once its caches are synced.
    ready: () => !controller || synced,
  });
  log.info('http listening', { port: boundPort(server) });

  const startController = async () => {
    controller = new Controller(
      client,
      {
        plan: config.plan,
        namespace: config.watchNamespace,
        concurrency: config.concurrency,
        resyncMs: config.resyncMs,
        unsettledRequeueMs: 30_000,
        identity: config.identity,
      },
      log,
    );
    await controller.start();
    // The node-local weight cache (spec.prewarm.nodeCache): stager Jobs, node labels, WeightsCached; leader only.
    weightCache = new WeightCacheController(
      client,
      {
        config: config.weightCache,
        namespace: config.watchNamespace,
        resyncMs: config.resyncMs,
        identity: config.identity,
      },
      log.child({ component: 'weight-cache' }),
    );
    await weightCache.start();
    synced = true;
    // The autoscaler is a leader-only loop beside the reconciler (it writes through /scale, never the Deployment).
    if (config.redisUrl) {
      autoscaler = await startAutoscaler({
        client,
        redisUrl: config.redisUrl,
        log: log.child({ component: 'autoscaler' }),
        identity: config.identity,
        namespace: config.watchNamespace,
      });
      log.info('autoscaler started');
    } else {
      log.warn('no --redis-url: the autoscaler is off (replicas follow spec.replicas only)');
    }
  };

  const elector = config.leaderElect
    ? new LeaderElector(client, {
        namespace: config.leaseNamespace,
        name: config.leaseName,
        identity: config.identity,
        leaseDurationMs: config.leaseDurationMs,
        renewDeadlineMs: config.renewDeadlineMs,
        retryPeriodMs: config.retryPeriodMs,
        log: (msg, fields) => log.info(msg, fields),
        onNewLeader: (identity) => log.info('leader observed', { leader: identity }),
        onStartedLeading: () => {
          metrics.isLeader.set(1);
          log.info('started leading');
          startController().catch((err: unknown) => {
            log.error('controller failed to start', { error: String(err) });
            process.exit(1);
          });
        },
        onStoppedLeading: () => {
          metrics.isLeader.set(0);
          if (shuttingDown) return;
          // Another process may already be reconciling: stop at once rather than race it.
          log.error('stopped leading; exiting');
          process.exit(1);
        },
      })
    : undefined;

  if (elector) elector.start();
  else await startController();

  const shutdown = async (signal: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info('shutting down', { signal });
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    await autoscaler?.stop();
    await weightCache?.stop();
    await controller?.stop();
    await elector?.release();
    metrics.isLeader.set(0);
    server.close();
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

main().catch((err: unknown) => {
  process.stderr.write(`operator: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
