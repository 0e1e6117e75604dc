// The node-local weight cache end to end on a real control plane: the operator (under its own ServiceAccount) runs
// stager Jobs on two node-agent GPU nodes, whose pods run the stager as local processes against a real HTTP server
// serving Hub API paths. Each fake node keeps its own cache directory (nodeLocalHostPaths).
import fs from 'node:fs';
import path from 'node:path';

import type { V1Deployment, V1Job, V1Node, V1Pod } from '@kubernetes/client-node';

import { NodeAgent } from '../../hack/node-agent/agent.js';
import { startControlPlane, type ControlPlane } from '../../test/support/controlPlane.js';
import { waitFor } from '../../test/support/wait.js';
import type { ModelDeployment } from '../src/api/modelDeployment.js';
import { collectionPath, objectPath, resources } from '../src/k8s/resources.js';
import type { KubeClient } from '../src/k8s/rest.js';
import { cacheKey, cacheLabel, COMPLETE_MARKER, entryName, type CacheSource } from '../src/weightcache/keys.js';
import {
  adminClient,
  applyManifest,
  installCrd,
  operatorKubeconfig,
  repoRoot,
  startOperator,
  type OperatorProcess,
} from './harness.js';
import { HubServer, makeCheckpoint, sha256 } from '../../test/support/hubServer.js';

const CACHE_DIR = '/var/lib/modelserve/weights';
const BUDGET = 2560 << 10; // 2.5 MiB per node: the wanted entries fit, one more does not
const REV = '1'.repeat(40);
const REV2 = '2'.repeat(40);
const tiny = makeCheckpoint('tiny', 256 << 10); // ~512 KiB
const other = makeCheckpoint('other', 384 << 10); // ~768 KiB
const broken = makeCheckpoint('broken', 128 << 10);
const larger = makeCheckpoint('larger', 640 << 10); // ~1.25 MiB
const slow = makeCheckpoint('slow', 1536 << 10, 1); // ~1.5 MiB, served slowly

let cp: ControlPlane;
let agent: NodeAgent;
let hub: HubServer;
let op: OperatorProcess;
let admin: KubeClient;
let hubUrl: string;
let nodes: string[];

beforeAll(async () => {
  cp = await startControlPlane({ gpuNodes: 0 });
  admin = adminClient(cp);
  hub = new HubServer();
  hub.addRepo('openai/tiny', REV, tiny);
  hub.addRepo('openai/tiny', REV2, other);
  hub.addRepo('openai/broken', REV, broken);
  hub.addRepo('openai/larger', REV, larger);
  hub.addRepo('openai/slow', REV, slow);
  await hub.start('0.0.0.0');
  agent = new NodeAgent({
    kubeConfig: cp.kubeConfig,
    stateDir: path.join(cp.dir, 'pods'),
    repoRoot,
    nodes: 2,
    gpusPerNode: 1,
    nodeLocalHostPaths: [CACHE_DIR],
    log: (msg, fields) =>
      fs.appendFileSync(path.join(cp.dir, 'node-agent.log'), `${JSON.stringify({ msg, ...fields })}\n`),
  });
  await agent.start();
  nodes = agent.nodes.map((n) => n.name);
  // Pods reach this machine through their bridge's gateway (network namespaces) or on loopback.
  const hostIP = agent.nodes[0]!.hostIP;
  const fromPods = agent.networkMode === 'netns' ? hostIP.replace(/^(\d+\.\d+)\..*$/, '$1.0.1') : hostIP;
  hubUrl = `http://${fromPods}:${hub.port}`;
  await installCrd(cp);
  const kubeconfig = await operatorKubeconfig(cp);
  op = await startOperator(cp, kubeconfig, [
    '--leader-elect=false',
    `--weight-cache-dir=${CACHE_DIR}`,
    `--weight-cache-budget=${BUDGET}`,
    '--weight-cache-retries=0',
    '--stager-image=ghcr.io/modelserve/weight-stager:test',
    `--hf-endpoint=${hubUrl}`,
  ]);
}, 180_000);

afterAll(async () => {
  await op?.stop();
  await agent?.stop(2);
  await hub?.stop();
  admin?.close();
  await cp?.stop();
}, 60_000);

function manifest(name: string, model: Record<string, unknown>, prewarm: Record<string, unknown> = {}, replicas = 0) {
  return {
    apiVersion: 'serving.modelserve.dev/v1alpha1',
    kind: 'ModelDeployment',
    metadata: { name, namespace: 'default' },
    spec: { model: { name, ...model }, replicas, resources: { gpus: 1 }, prewarm: { nodeCache: true, ...prewarm } },
  };
}

async function apply(obj: unknown): Promise<void> {
  const r = await applyManifest(cp, obj);
  expect(r.stderr).toBe('');
}

const getMdep = (name: string) =>
  admin.get<ModelDeployment>(objectPath(resources.modelDeployments, 'default', name)).catch(() => undefined);
const listNodes = async () => (await admin.get<{ items: V1Node[] }>(collectionPath(resources.nodes))).items;
const listJobs = async () =>
  (
    await admin.get<{ items: V1Job[] }>(collectionPath(resources.jobs, 'default'), {
      labelSelector: 'app.kubernetes.io/component=weight-cache',
    })
  ).items;

const hfSrc = (repo: string, revision: string): CacheSource => ({
  namespace: 'default',
  source: `hf://${repo}`,
  revision,
});
const entryDir = (node: string, src: CacheSource) => path.join(agent.nodeHostPath(node, CACHE_DIR), entryName(src));

/** The operator's weight-cache log lines (jobs, labels, failed syncs and watches), for failure messages. */
function cacheLog(): string {
  const lines = op.logs.filter((l) => /stager|cache|watch|sync/.test(String(l.msg)));
  return `${op.describe()}\nweight-cache log:\n${lines
    .slice(-80)
    .map((l) => JSON.stringify(l))
    .join('\n')}`;
}

async function waitCached(name: string, ready: number, total: number): Promise<ModelDeployment> {
  let last: ModelDeployment | undefined;
  await waitFor(
    async () => {
      last = await getMdep(name);
      const c = last?.status?.conditions?.find((x) => x.type === 'WeightsCached');
      return (
        last?.status?.nodeCache?.readyNodes === ready &&
        last.status.nodeCache.nodes === total &&
        c?.status === (ready === total ? 'True' : 'False')
      );
    },
    { timeoutMs: 120_000, intervalMs: 500, description: `${name}: WeightsCached ${ready}/${total}` },
  ).catch((err: Error) => {
    throw new Error(`${err.message}\nstatus: ${JSON.stringify(last?.status)}\n${cacheLog()}`);
  });
  return last!;
}

const httpSrc = (): CacheSource => ({
  namespace: 'default',
  source: `${hubUrl}/plain/openai/tiny/${REV2}`,
  sha256: Object.fromEntries(other.map((f) => [f.path, sha256(f.data)])),
});

test('the API server rejects a nodeCache without a file list for http(s), and a nodeCacheSelector without nodeCache', async () => {
  const noList = await applyManifest(cp, manifest('no-list', { source: 'https://weights.example/gpt' }));
  expect(noList.code).not.toBe(0);
  expect(noList.stderr).toContain('spec.model.sha256: Required value: spec.model.sha256 must list the checkpoint');
  const selectorOnly = await applyManifest(cp, {
    ...manifest('selector-only', { source: 'file:///models/x' }),
    spec: { model: { name: 'x', source: 'file:///models/x' }, prewarm: { nodeCacheSelector: { pool: 'a' } } },
  });
  expect(selectorOnly.code).not.toBe(0);
  expect(selectorOnly.stderr).toContain('spec.prewarm.nodeCacheSelector needs spec.prewarm.nodeCache set to true');
});

test('hf:// and http:// sources are staged on both GPU nodes: labelled, WeightsCached 2, files verified', async () => {
  const hf = hfSrc('openai/tiny', REV);
  const http = httpSrc();
  await apply(manifest('hf-model', { source: hf.source, revision: REV }));
  await apply(manifest('http-model', { source: http.source, sha256: http.sha256 }));
  for (const name of ['hf-model', 'http-model']) {
    const m = await waitCached(name, 2, 2);
    expect(m.status?.conditions?.find((c) => c.type === 'WeightsCached')).toMatchObject({
      status: 'True',
      reason: 'Cached',
    });
  }
  const byName = new Map((await listNodes()).map((n) => [n.metadata?.name, n]));
  for (const node of nodes) {
    for (const [src, files] of [
      [hf, tiny],
      [http, other],
    ] as const) {
      expect(byName.get(node)?.metadata?.labels?.[cacheLabel(cacheKey(src))]).toBe('ready');
      for (const f of files)
        expect(sha256(fs.readFileSync(path.join(entryDir(node, src), f.path)))).toBe(sha256(f.data));
      expect(fs.existsSync(path.join(entryDir(node, src), COMPLETE_MARKER))).toBe(true);
    }
  }
  // One Job per entry and node, and each file fetched once per node: nothing re-downloads in a loop.
  const jobs = await listJobs();
  expect(jobs.length).toBe(4);
  const downloads = () => hub.requests.filter((r) => r.method === 'GET' && /\/(resolve|plain)\//.test(r.path)).length;
  expect(downloads()).toBe((tiny.length + other.length) * 2);
  await new Promise((r) => setTimeout(r, 3000));
  expect((await listJobs()).map((j) => j.metadata?.uid).sort()).toEqual(jobs.map((j) => j.metadata?.uid).sort());
  expect(downloads()).toBe((tiny.length + other.length) * 2);
}, 180_000);

test('a corrupted download fails with the checksum message and never labels a node', async () => {
  hub.corrupt.add('model-00001-of-00002.safetensors');
  const src = hfSrc('openai/broken', REV);
  await apply(manifest('broken', { source: src.source, revision: REV }));
  let last: ModelDeployment | undefined;
  await waitFor(
    async () => {
      last = await getMdep('broken');
      const c = last?.status?.conditions?.find((x) => x.type === 'WeightsCached');
      return c?.reason === 'StagingFailed';
    },
    { timeoutMs: 120_000, intervalMs: 500, description: 'broken: StagingFailed' },
  );
  const cond = last!.status!.conditions!.find((x) => x.type === 'WeightsCached')!;
  expect(cond.status).toBe('False');
  expect(cond.message).toMatch(
    /sha256 mismatch for model-00001-of-00002\.safetensors: expected [0-9a-f]{64}, got [0-9a-f]{64}/,
  );
  expect(cond.message).toMatch(/delete its stager Job to retry/);
  expect(last!.status!.nodeCache?.readyNodes).toBe(0);
  await waitFor(
    async () => {
      const ev = await cp.kubectl([
        'get',
        'events',
        '-n',
        'default',
        '--field-selector=reason=StagingFailed,involvedObject.name=broken',
        '-o',
        'jsonpath={.items[*].message}',
      ]);
      return ev.stdout.includes('sha256 mismatch for model-00001-of-00002.safetensors');
    },
    { timeoutMs: 10_000, description: 'a StagingFailed Event on the ModelDeployment' },
  );
  for (const n of await listNodes()) expect(n.metadata?.labels?.[cacheLabel(cacheKey(src))]).toBeUndefined();
  for (const node of nodes) expect(fs.existsSync(entryDir(node, src))).toBe(false);
  hub.corrupt.clear();
}, 180_000);

test('worker pods prefer nodes whose cache is ready and mount the cache read-only', async () => {
  // Only local-gpu-1 gets the cache (nodeCacheSelector); a replica then lands there.
  await admin.mergePatch(`${collectionPath(resources.nodes)}/${nodes[1]}`, { metadata: { labels: { pool: 'cache' } } });
  const src = hfSrc('openai/tiny', REV2);
  await apply(manifest('pinned', { source: src.source, revision: REV2 }, { nodeCacheSelector: { pool: 'cache' } }));
  await waitCached('pinned', 1, 1);
  const deployment = await admin.get<V1Deployment>(objectPath(resources.deployments, 'default', 'pinned'));
  const pod = deployment.spec!.template.spec!;
  expect(pod.affinity?.nodeAffinity?.preferredDuringSchedulingIgnoredDuringExecution).toEqual([
    {
      weight: 100,
      preference: { matchExpressions: [{ key: cacheLabel(cacheKey(src)), operator: 'In', values: ['ready'] }] },
    },
  ]);
  expect(pod.volumes).toContainEqual({
    name: 'weights-cache',
    hostPath: { path: CACHE_DIR, type: 'DirectoryOrCreate' },
  });
  const worker = pod.containers.find((c) => c.name === 'worker')!;
  expect(worker.volumeMounts).toContainEqual({ name: 'weights-cache', mountPath: '/weights-cache', readOnly: true });
  expect(worker.env).toContainEqual({ name: 'MODELSERVE_WEIGHTS_CACHE', value: `/weights-cache/${entryName(src)}` });

  await admin.mergePatch(objectPath(resources.modelDeployments, 'default', 'pinned'), { spec: { replicas: 1 } });
  let scheduled: V1Pod | undefined;
  await waitFor(
    async () => {
      const pods = await admin.get<{ items: V1Pod[] }>(collectionPath(resources.pods, 'default'), {
        labelSelector: 'app.kubernetes.io/instance=pinned',
      });
      scheduled = pods.items.find((p) => p.spec?.nodeName);
      return !!scheduled;
    },
    { timeoutMs: 60_000, description: 'a pinned worker pod scheduled' },
  );
  expect(scheduled!.spec!.nodeName).toBe(nodes[1]);
}, 180_000);

test('deleting ModelDeployments removes their Jobs and node labels; an unused entry is evicted under the budget', async () => {
  const gone = [hfSrc('openai/tiny', REV), httpSrc(), hfSrc('openai/tiny', REV2)];
  for (const name of ['hf-model', 'http-model', 'pinned']) {
    const r = await cp.kubectl(['delete', 'mdep', name, '--wait=true']);
    expect(r.code).toBe(0);
  }
  await waitFor(
    async () => {
      const keys = new Set(gone.map(cacheKey));
      const jobs = (await listJobs()).filter((j) => keys.has(j.metadata?.labels?.['cache.modelserve.dev/key'] ?? ''));
      const labelled = (await listNodes()).filter((n) =>
        gone.some((s) => n.metadata?.labels?.[cacheLabel(cacheKey(s))]),
      );
      return jobs.length === 0 && labelled.length === 0;
    },
    { timeoutMs: 60_000, description: 'Jobs and node labels of deleted ModelDeployments gone' },
  ).catch(async (err: Error) => {
    const keys = new Set(gone.map(cacheKey));
    const jobs = (await listJobs()).filter((j) => keys.has(j.metadata?.labels?.['cache.modelserve.dev/key'] ?? ''));
    const labels = (await listNodes()).map((n) => [n.metadata?.name, n.metadata?.labels]);
    const left = jobs.map((j) => [j.metadata?.name, j.metadata?.deletionTimestamp, j.metadata?.finalizers, j.status]);
    throw new Error(
      `${err.message}\njobs left: ${JSON.stringify(left)}\nnodes: ${JSON.stringify(labels)}\n${cacheLog()}`,
    );
  });
  // The entries stay on disk (a recreated deployment reuses them) until a stager needs the room.
  for (const node of nodes) expect(fs.existsSync(path.join(entryDir(node, gone[0]!), COMPLETE_MARKER))).toBe(true);

  const src = hfSrc('openai/larger', REV);
  await apply(manifest('larger', { source: src.source, revision: REV }));
  await waitCached('larger', 2, 2);
  const brokenStaging = `${entryName(hfSrc('openai/broken', REV))}.staging`;
  for (const node of nodes) {
    const root = agent.nodeHostPath(node, CACHE_DIR);
    const entries = fs.readdirSync(root);
    const bytes = entries.reduce((s, e) => s + dirBytes(path.join(root, e)), 0);
    expect(bytes).toBeLessThanOrEqual(BUDGET);
    // Some unused entry made room; the entry of a deployment that still exists (broken) was kept.
    expect(gone.filter((s) => entries.includes(entryName(s))).length).toBeLessThan(node === nodes[1] ? 3 : 2);
    expect(entries).toContain(entryName(src));
    expect(entries).toContain(brokenStaging);
  }
  for (const name of ['larger', 'broken']) expect((await cp.kubectl(['delete', 'mdep', name])).code).toBe(0);
}, 180_000);

test('a stager killed mid-file fails its Job; deleting the Job resumes the download with an HTTP Range request', async () => {
  const src = hfSrc('openai/slow', REV);
  const shard = slow[2]!;
  hub.slow.set(shard.path, 256 << 10); // ~6 s for the file: time to find and kill the stager
  await apply(manifest('resumed', { source: src.source, revision: REV }, { nodeCacheSelector: { pool: 'cache' } }));
  const partial = path.join(`${entryDir(nodes[1]!, src)}.staging`, `${shard.path}.partial`);
  await waitFor(() => fs.existsSync(partial) && fs.statSync(partial).size > 256 << 10, {
    timeoutMs: 60_000,
    description: 'a partial file over 256 KiB on the node',
  });
  const jobName = (await listJobs()).find((j) => j.metadata?.labels?.['cache.modelserve.dev/key'] === cacheKey(src))!
    .metadata!.name!;
  const pods = await admin.get<{ items: V1Pod[] }>(collectionPath(resources.pods, 'default'), {
    labelSelector: `job-name=${jobName}`,
  });
  const pids = agent.podPids().get(pods.items[0]!.status!.podIP!) ?? [];
  expect(pids.length).toBe(1);
  process.kill(pids[0]!, 'SIGKILL');
  let last: ModelDeployment | undefined;
  await waitFor(
    async () => {
      last = await getMdep('resumed');
      return last?.status?.conditions?.find((c) => c.type === 'WeightsCached')?.reason === 'StagingFailed';
    },
    { timeoutMs: 60_000, intervalMs: 500, description: 'resumed: StagingFailed after the kill' },
  );
  expect(last!.status!.conditions!.find((c) => c.type === 'WeightsCached')!.message).toMatch(/exited with code 137/);
  const kept = fs.statSync(partial).size;
  expect(kept).toBeLessThan(shard.data.length);
  hub.slow.delete(shard.path);

  expect((await cp.kubectl(['delete', 'job', jobName, '--wait=true'])).code).toBe(0);
  await waitCached('resumed', 1, 1);
  const ranges = hub.requests.filter((r) => r.path.endsWith(`/openai/slow/resolve/${REV}/${shard.path}`) && r.range);
  expect(ranges.length).toBe(1);
  expect(Number(/^bytes=(\d+)-$/.exec(ranges[0]!.range!)?.[1])).toBeGreaterThanOrEqual(kept);
  expect(sha256(fs.readFileSync(path.join(entryDir(nodes[1]!, src), shard.path)))).toBe(sha256(shard.data));
}, 180_000);

function dirBytes(p: string): number {
  const st = fs.statSync(p);
  if (!st.isDirectory()) return st.size;
  return fs.readdirSync(p).reduce((s, e) => s + dirBytes(path.join(p, e)), 0);
}

test('file:// source: copied from the node-visible directory, checked against spec.model.sha256 where given', async () => {
  const dir = path.join(cp.dir, 'file-source');
  fs.mkdirSync(path.join(dir, 'original'), { recursive: true });
  const config = Buffer.from('{"architectures":["GptOssForCausalLM"]}');
  const weights = Buffer.alloc(64 << 10, 7);
  fs.writeFileSync(path.join(dir, 'config.json'), config);
  fs.writeFileSync(path.join(dir, 'original', 'model.safetensors'), weights);
  const src: CacheSource = {
    namespace: 'default',
    source: `file://${dir}`,
    sha256: { 'original/model.safetensors': sha256(weights) },
  };
  await apply(manifest('local', { source: src.source, sha256: src.sha256 }));
  await waitCached('local', 2, 2);
  for (const node of nodes) {
    expect(fs.readFileSync(path.join(entryDir(node, src), 'config.json'))).toEqual(config);
    expect(sha256(fs.readFileSync(path.join(entryDir(node, src), 'original/model.safetensors')))).toBe(sha256(weights));
  }
}, 120_000);
