// `make bench-operator`: N ModelDeployments (default 500) against a local control plane with enough fake GPU
// capacity. Reports the time from `kubectl apply` to all-Ready and the operator's resident memory, next to a peer
// measured in the same run on the same control plane: the same N worker Deployments applied directly (no operator),
// timed to all-ready. The ratio is the operator's own cost on top of what Kubernetes needs anyway.
// Usage: npx tsx operator/test/bench-operator.ts [--count 500] [--concurrency 4]
import { readFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import yaml from 'js-yaml';
import { startControlPlane } from '../../test/support/controlPlane.js';
import { waitFor } from '../../test/support/wait.js';
import { LABEL_MANAGED_BY, type ModelDeployment } from '../src/api/modelDeployment.js';
import { defaultPlanConfig, plan } from '../src/controller/plan.js';
import { collectionPath, resources } from '../src/k8s/resources.js';
import { adminClient, installCrd, modelDeploymentManifest, operatorKubeconfig, startOperator } from './harness.js';
import { applyDefaults, crdSchema } from './fixtures.js';

const arg = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const count = arg('count', 500);
const concurrency = arg('concurrency', 4);
const gpusPerNode = 100; // one GPU per pod: every pod that fits the node's 110-pod limit gets a GPU
const nodes = Math.ceil((2 * count) / 100) + 1; // both phases' pods fit under the 110 pods per node

const rssMiB = (pid: number): number => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
};

async function applyAll(cp: Awaited<ReturnType<typeof startControlPlane>>, docs: unknown[]): Promise<void> {
  // kubectl apply in chunks keeps each call's memory and argument size small.
  for (let i = 0; i < docs.length; i += 100) {
    const r = await cp.kubectl(['apply', '--server-side', '-f', '-'], {
      input: docs
        .slice(i, i + 100)
        .map((d) => yaml.dump(d))
        .join('---\n'),
      timeoutMs: 300_000,
    });
    if (r.code !== 0) throw new Error(`kubectl apply failed: ${r.stderr}`);
  }
}

async function main(): Promise<void> {
  const cp = await startControlPlane({ gpuNodes: nodes, gpusPerNode, name: 'bench-operator' });
  try {
    await installCrd(cp);
    const api = adminClient(cp);
    if ((await cp.kubectl(['create', 'namespace', 'peer'])).code !== 0) throw new Error('namespace peer');

    // Peer: the same worker Deployments, applied directly.
    const peerDocs = Array.from({ length: count }, (_, i) => {
      const mdep = applyDefaults(crdSchema, {
        metadata: { name: `m${i}`, namespace: 'peer', uid: 'none', generation: 1 },
        spec: modelDeploymentManifest(`m${i}`, {}).spec,
      }) as ModelDeployment;
      const d = plan(mdep, defaultPlanConfig).deployment;
      delete d.metadata!.ownerReferences;
      // Not managed-by the operator: its label-selected informers must not see the peer's objects.
      const relabel = (labels?: Record<string, string>) => ({ ...labels, [LABEL_MANAGED_BY]: 'bench-peer' });
      d.metadata!.labels = relabel(d.metadata!.labels);
      d.spec!.template.metadata!.labels = relabel(d.spec!.template.metadata!.labels);
      // The peer has no engine ConfigMap; mount nothing from it.
      d.spec!.template.spec!.volumes = d.spec!.template.spec!.volumes!.filter((v) => !v.configMap);
      d.spec!.template.spec!.containers[0]!.volumeMounts = [d.spec!.template.spec!.containers[0]!.volumeMounts![0]!];
      return d;
    });
    const peerStart = Date.now();
    await applyAll(cp, peerDocs);
    await waitFor(
      async () => {
        const list = await api.get<{ items: { status?: { readyReplicas?: number } }[] }>(
          collectionPath(resources.deployments, 'peer'),
        );
        return list.items.filter((d) => d.status?.readyReplicas === 1).length === count;
      },
      { timeoutMs: 1_800_000, intervalMs: 1000, description: `${count} peer Deployments ready` },
    );
    const peerMs = Date.now() - peerStart;

    const op = await startOperator(cp, await operatorKubeconfig(cp), ['--concurrency', String(concurrency)]);
    const pid = op.child.pid!;
    await waitFor(() => op.hasLogged('caches synced'), { timeoutMs: 60_000, description: 'operator caches synced' });
    await new Promise((r) => setTimeout(r, 2000));
    const idleRss = rssMiB(pid);
    const heapMiB = async () =>
      Number(/^modelserve_operator_process_nodejs_heap_size_used_bytes (\S+)$/m.exec(await op.metrics())?.[1]) /
      2 ** 20;
    const idleHeap = await heapMiB();

    let peakRss = idleRss;
    const sampler = setInterval(() => (peakRss = Math.max(peakRss, rssMiB(pid))), 250);
    const start = Date.now();
    await applyAll(
      cp,
      Array.from({ length: count }, (_, i) => modelDeploymentManifest(`m${i}`, {})),
    );
    const appliedMs = Date.now() - start;
    await waitFor(
      async () => {
        const list = await api.get<{ items: ModelDeployment[] }>(collectionPath(resources.modelDeployments, 'default'));
        const ready = list.items.filter((m) =>
          m.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
        ).length;
        return ready === count;
      },
      { timeoutMs: 1_800_000, intervalMs: 1000, description: `${count} ModelDeployments Ready` },
    );
    const readyMs = Date.now() - start;
    clearInterval(sampler);
    const steadyRss = rssMiB(pid);
    const steadyHeap = await heapMiB();
    const metrics = await op.metrics();
    const reconciles = [...metrics.matchAll(/modelserve_operator_reconcile_total\{result="(\w+)"\} (\d+)/g)]
      .map((m) => `${m[1]}=${m[2]}`)
      .join(' ');
    const errors = [...metrics.matchAll(/^modelserve_operator_reconcile_errors_total\{[^}]*\} (\d+)$/gm)].reduce(
      (sum, m) => sum + Number(m[1]),
      0,
    );
    await op.stop();
    api.close();

    const lines = [
      `date: ${new Date().toISOString()}`,
      `machine: ${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`,
      `control plane: ${nodes} kwok nodes x ${gpusPerNode} GPUs; operator concurrency ${concurrency}`,
      `ModelDeployments: ${count}`,
      `kubectl apply of all ModelDeployments: ${(appliedMs / 1000).toFixed(1)} s`,
      `apply -> all ModelDeployments Ready (operator): ${(readyMs / 1000).toFixed(1)} s`,
      `apply -> all Deployments ready (peer, no operator): ${(peerMs / 1000).toFixed(1)} s`,
      `ratio operator / peer: ${(readyMs / peerMs).toFixed(2)}`,
      `operator RSS: idle ${idleRss.toFixed(0)} MiB (peer objects not watched), peak ${peakRss.toFixed(0)} MiB, ` +
        `steady ${steadyRss.toFixed(0)} MiB`,
      `operator JS heap used: idle ${idleHeap.toFixed(1)} MiB, steady ${steadyHeap.toFixed(1)} MiB`,
      `reconciles: ${reconciles}; errors: ${errors}`,
      `load average at the end (1/5/15 min): ${loadavg()
        .map((l) => l.toFixed(1))
        .join(' / ')}`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    await cp.stop();
  }
}

await main();
