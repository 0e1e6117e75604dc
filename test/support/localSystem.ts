// The whole modelserve system on this machine, for `make demo` and the end-to-end tests: a real control plane, a real
// redis-server, the local node agent (GPU nodes whose pods run as local processes), the CRD, the operator and the
// gateway as processes. Worker pods the operator creates run `worker/src/main.ts` through the node agent.
import fs from 'node:fs';
import path from 'node:path';

import { execFileSync } from 'node:child_process';

import { NodeAgent } from '../../hack/node-agent/agent.js';
import { startControlPlane, type ControlPlane } from './controlPlane.js';
import { repoRoot } from './paths.js';
import { freePort, isListening } from './ports.js';
import { ManagedProcess } from './process.js';
import { startRedis, type RedisServer } from './redis.js';
import { waitFor } from './wait.js';

export interface LocalSystemOptions {
  name?: string;
  nodes?: number;
  gpusPerNode?: number;
  /** Operator processes (leader election picks one). Default 1. */
  operators?: number;
  /** Gateway port; a free one when unset. */
  gatewayPort?: number;
  /** Require API keys (Secrets labelled serving.modelserve.dev/api-key=true, any namespace). Default false. */
  gatewayAuth?: boolean;
  /** More gateway flags (--name=value), after the defaults. */
  gatewayFlags?: string[];
}

export interface LocalSystem {
  cp: ControlPlane;
  redis: RedisServer;
  agent: NodeAgent;
  operators: ManagedProcess[];
  gateway: ManagedProcess;
  gatewayUrl: string;
  stop(): Promise<void>;
}

/**
 * The node-local weight cache root (spec.prewarm.nodeCache): each fake node keeps its own copy under the run folder
 * (NodeAgent nodeLocalHostPaths), and the stager Jobs run operator/src/weightcache/stager.ts (image-map.ts).
 */
export const LOCAL_WEIGHT_CACHE_DIR = '/var/lib/modelserve/weights';
const LOCAL_STAGER_IMAGE = 'ghcr.io/modelserve/weight-stager:dev';

const tsx = (entry: string) => ['--import', 'tsx', path.join(repoRoot, entry)];

/** Starts one operator process against the system (for failover tests, several). */
export async function startOperator(
  cp: ControlPlane,
  redisUrl: string,
  dir: string,
  id: string,
): Promise<ManagedProcess> {
  const port = await freePort();
  const proc = new ManagedProcess(
    `operator-${id}`,
    process.execPath,
    [
      ...tsx('operator/src/main.ts'),
      `--kubeconfig=${cp.kubeconfigPath}`,
      `--http-port=${port}`,
      '--http-host=127.0.0.1',
      '--lease-namespace=default',
      `--identity=operator-${id}`,
      `--weight-cache-dir=${LOCAL_WEIGHT_CACHE_DIR}`,
      `--stager-image=${LOCAL_STAGER_IMAGE}`,
    ],
    { dir, env: { ...cp.env, MODELSERVE_REDIS_URL: redisUrl, MODELSERVE_LOG_LEVEL: 'info' }, cwd: repoRoot },
  ).start();
  await waitFor(async () => (proc.assertRunning(), isListening(port)), {
    timeoutMs: 60_000,
    description: `operator-${id} /healthz`,
  });
  return proc;
}

export async function startLocalSystem(opts: LocalSystemOptions = {}): Promise<LocalSystem> {
  const cp = await startControlPlane({ name: opts.name ?? 'local', gpuNodes: 0 });
  const started: { stop(): Promise<void> }[] = [cp];
  try {
    const redis = await startRedis(`${opts.name ?? 'local'}-redis`);
    started.unshift(redis);
    const agentLog = path.join(cp.dir, 'node-agent.log');
    const agent = new NodeAgent({
      kubeConfig: cp.kubeConfig,
      stateDir: path.join(cp.dir, 'pods'),
      repoRoot,
      nodeLocalHostPaths: [LOCAL_WEIGHT_CACHE_DIR],
      nodes: opts.nodes ?? 2,
      gpusPerNode: opts.gpusPerNode ?? 1,
      log: (msg, fields) =>
        fs.appendFileSync(agentLog, `${JSON.stringify({ time: new Date().toISOString(), msg, ...fields })}\n`),
    });
    await agent.start();
    started.unshift({ stop: () => agent.stop(5) });

    for (const f of fs.readdirSync(path.join(repoRoot, 'crds'))) {
      const res = await cp.kubectl(['apply', '--server-side', '-f', path.join(repoRoot, 'crds', f)]);
      if (res.code !== 0) throw new Error(`installing ${f}: ${res.stderr}`);
    }
    await cp.kubectl(['wait', '--for=condition=Established', 'crd', '--all', '--timeout=60s']);

    const operators: ManagedProcess[] = [];
    for (let i = 0; i < (opts.operators ?? 1); i++)
      operators.push(await startOperator(cp, redis.url, cp.dir, String(i)));
    started.unshift(...operators.map((o) => ({ stop: () => o.stop() })));

    const gatewayPort = opts.gatewayPort ?? (await freePort());
    const gateway = new ManagedProcess(
      'gateway',
      process.execPath,
      [
        ...tsx('operator/src/gateway/main.ts'),
        `--kubeconfig=${cp.kubeconfigPath}`,
        `--port=${gatewayPort}`,
        '--host=127.0.0.1',
        `--auth=${opts.gatewayAuth ? 'true' : 'false'}`,
        `--redis-url=${redis.url}`,
        // A cold start on a loaded 2-core machine (pod start, tsx, model load) can take tens of seconds.
        '--queue-timeout-seconds=180',
        ...(opts.gatewayFlags ?? []),
      ],
      { dir: cp.dir, env: cp.env, cwd: repoRoot },
    ).start();
    started.unshift(gateway);
    await waitFor(async () => (gateway.assertRunning(), isListening(gatewayPort)), {
      timeoutMs: 60_000,
      description: 'gateway listening',
    });

    const stop = async () => {
      for (const s of started) await s.stop();
    };
    return { cp, redis, agent, operators, gateway, gatewayUrl: `http://127.0.0.1:${gatewayPort}`, stop };
  } catch (err) {
    for (const s of started) await s.stop().catch(() => undefined);
    throw err;
  }
}

/**
 * A small generated gpt-oss checkpoint with the harmony vocabulary (random weights), cached outside the repository.
 * Needs `make native` (worker/native/build/make_checkpoint).
 */
export function tinyHarmonyCheckpoint(seed = 1): string {
  const cache = process.env.MODELSERVE_CACHE ?? path.join(process.env.HOME ?? '/tmp', '.cache', 'modelserve');
  const dir = path.join(cache, 'models', `tiny-harmony-seed${seed}`);
  if (!fs.existsSync(path.join(dir, 'config.json'))) {
    const tool = path.join(repoRoot, 'worker/native/build/make_checkpoint');
    if (!fs.existsSync(tool)) throw new Error(`${tool} not found: run \`make native\``);
    const tmp = `${dir}.tmp-${process.pid}`;
    fs.mkdirSync(path.dirname(dir), { recursive: true });
    execFileSync(tool, ['--preset', 'tiny-harmony', '--seed', String(seed), '--out', tmp], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
  }
  return dir;
}

/**
 * A ModelDeployment of the tiny-harmony checkpoint named `name` (also its model id) in `default`, with `spec` the
 * rest of its spec as YAML lines indented by two spaces (engine, replicas, autoscaling, drain, resources, ...).
 */
export function tinyModelDeployment(name: string, spec: string): string {
  return [
    'apiVersion: serving.modelserve.dev/v1alpha1',
    'kind: ModelDeployment',
    'metadata:',
    `  name: ${name}`,
    '  namespace: default',
    'spec:',
    '  model:',
    `    name: ${name}`,
    `    source: file://${tinyHarmonyCheckpoint()}`,
    // One GPU per replica unless `spec` sets its own resources.
    ...(/^ {2}resources:/m.test(spec) ? [] : ['  resources:', '    gpus: 1']),
    spec.replace(/^\n+|\s+$/g, ''),
    '',
  ].join('\n');
}

/** Starts the local system before a suite's tests and stops it after them, even when they fail. */
export function useLocalSystem(opts: LocalSystemOptions): { readonly sys: LocalSystem } {
  const holder: { sys?: LocalSystem } = {};
  beforeAll(async () => {
    tinyHarmonyCheckpoint();
    holder.sys = await startLocalSystem(opts);
  }, 240_000);
  afterAll(async () => {
    await holder.sys?.stop();
  });
  return {
    get sys(): LocalSystem {
      if (!holder.sys) throw new Error('the local system did not start (see beforeAll)');
      return holder.sys;
    },
  };
}
