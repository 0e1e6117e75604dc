// `make demo`: brings up the local system and keeps it running until Ctrl-C, then tears everything down.
// Today that is a real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok with two
// fake 8-GPU nodes), a real redis-server, and the ModelDeployment CRD when present; the operator, gateway and a served
// model join as they land (see README).
import fs from 'node:fs';
import path from 'node:path';

import { startControlPlane } from '../test/support/controlPlane.js';
import { repoRoot } from '../test/support/paths.js';
import { startRedis } from '../test/support/redis.js';

async function main(): Promise<void> {
  const log = (msg: string) => process.stdout.write(`[demo] ${msg}\n`);
  log('starting the control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)…');
  const cp = await startControlPlane({ name: 'demo', gpuNodes: 2, gpusPerNode: 8 });
  const redis = await startRedis('demo-redis');
  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    log('tearing down…');
    await redis.stop();
    await cp.stop();
    log('stopped cleanly');
    process.exit(code);
  };
  process.on('SIGINT', () => void stop(0));
  process.on('SIGTERM', () => void stop(0));

  const crdDir = path.join(repoRoot, 'crds');
  const crds = fs.existsSync(crdDir) ? fs.readdirSync(crdDir).filter((f) => f.endsWith('.yaml')) : [];
  for (const f of crds) {
    const res = await cp.kubectl(['apply', '--server-side', '-f', path.join(crdDir, f)]);
    log(res.code === 0 ? `installed ${f}` : `could not install ${f}: ${res.stderr.trim()}`);
  }

  const nodes = await cp.kubectl([
    'get',
    'nodes',
    '-o',
    'custom-columns=NAME:.metadata.name,GPUS:.status.capacity.nvidia\\.com/gpu,READY:.status.conditions[?(@.type=="Ready")].status',
  ]);
  process.stdout.write(nodes.stdout);
  log(`API server: ${cp.server}`);
  log(`Redis:      ${redis.url}`);
  log('Try:');
  log(`  export KUBECONFIG=${cp.kubeconfigPath} PATH=${cp.binDir}:$PATH`);
  log('  kubectl get nodes; kubectl api-resources | grep modelserve');
  log(`Logs of every component: ${cp.dir}`);
  log('Ctrl-C stops everything.');
  await new Promise(() => undefined);
}

main().catch((err: unknown) => {
  process.stderr.write(`[demo] failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
