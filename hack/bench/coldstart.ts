// Cold-start benchmark on the local cluster (test/support/localSystem.ts: real control plane, node agent running worker
// pods as local processes, operator, gateway). For each path a model sits at 0 serving replicas; the benchmark writes
// spec.replicas=1 through the /scale subresource (what the autoscaler and `kubectl scale` do) and, at the same instant,
// sends a streaming request through the gateway, which holds it until a replica is routable. Measured from the /scale
// write:
//   ready     a pod labelled role=serving is Ready (pod watch, event time)
//   routable  the gateway's discovery code (KubeDiscovery over the EndpointSlices) lists a ready endpoint
//   token     the first content token of the held request reaches the client
// Paths:
//   download   spec.model.source is http:// on a real HTTP server in this process (test/support/hubServer.ts), with
//              spec.model.sha256: the pod's fetch-weights init container (worker/src/fetch.ts) downloads and verifies
//              the checkpoint into its emptyDir, then the worker loads it
//   nodecache  the same source with spec.prewarm.nodeCache: true: once WeightsCached=True (the stager Jobs filled every
//              node's cache), the init container finds the entry and the worker loads the node's copy, evicted from the
//              page cache first (an entry staged long before the scale-up)
//   nodecache-warm  the same with the entry in the page cache as the stager left it
//   standby    the same source with spec.prewarm.standbyReplicas: 1 — the loaded standby is promoted
//   standby-warm  the same with the workers' --warmup-tokens 8 (a short generation before they report ready)
//   cold       a new pod loads the weights from a file:// source (hostPath), evicted from the page cache first
//   cold-warm  the same with the checkpoint in the page cache (what a second start on the same node sees)
// Beside them, the physical floor of the cold path: reading the checkpoint from disk (page cache evicted), same run.
// Prints a table of medians with the ratios to the download and cold paths, and writes every run as JSON (--out).
//   npx tsx hack/bench/coldstart.ts [--runs 3] [--paths download,nodecache,standby,cold] [--model 1g|tiny] [--out FILE]
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { V1Pod } from '@kubernetes/client-node';
import { LABEL_ROLE } from '../../operator/src/controller/standby.js';
import { KubeDiscovery } from '../../operator/src/gateway/discovery.js';
import { Informer } from '../../operator/src/k8s/informer.js';
import { objectPath, resources } from '../../operator/src/k8s/resources.js';
import { KubeClient } from '../../operator/src/k8s/rest.js';
import { fileSha256, HubServer, hostAddressForPods, type HubFile } from '../../test/support/hubServer.js';
import { LOCAL_WEIGHT_CACHE_DIR, startLocalSystem, tinyHarmonyCheckpoint } from '../../test/support/localSystem.js';
import { repoRoot } from '../../test/support/paths.js';
import { waitFor } from '../../test/support/wait.js';

const PATHS = ['download', 'nodecache', 'nodecache-warm', 'standby', 'standby-warm', 'cold', 'cold-warm'] as const;
type PathName = (typeof PATHS)[number];

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    paths: { type: 'string', default: 'download,nodecache,nodecache-warm,standby,standby-warm,cold,cold-warm' },
    model: { type: 'string', default: '1g' },
    out: { type: 'string' },
  },
});
const runs = Number(values.runs);
if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be an integer ≥ 1, got '${values.runs}'`);
const paths = (values.paths ?? '').split(',').filter(Boolean) as PathName[];
for (const p of paths) if (!PATHS.includes(p)) throw new Error(`--paths: unknown path '${p}' (${PATHS.join(', ')})`);
if (values.model !== '1g' && values.model !== 'tiny')
  throw new Error(`--model must be 1g or tiny, got '${values.model}'`);

/**
 * The checkpoint: the tiny-harmony test model (51 MB), or the same architecture widened to about 1 GB (the harmony
 * vocabulary's embeddings at hidden 1024 are most of it), generated once into the model cache.
 */
function checkpoint(): string {
  if (values.model === 'tiny') return tinyHarmonyCheckpoint();
  const cache = process.env.MODELSERVE_CACHE ?? path.join(process.env.HOME ?? '/tmp', '.cache', 'modelserve');
  const dir = path.join(cache, 'models', 'coldstart-1g-seed7');
  if (!fs.existsSync(path.join(dir, 'config.json'))) {
    const tool = path.join(repoRoot, 'worker/native/build/make_checkpoint');
    if (!fs.existsSync(tool)) throw new Error(`${tool} not found: run \`make native\``);
    const tmp = `${dir}.tmp-${process.pid}`;
    execFileSync(tool, [
      ...['--preset', 'tiny-harmony', '--seed', '7', '--layers', '4', '--hidden', '1024'],
      ...['--intermediate', '1024', '--experts', '32', '--out', tmp],
    ]);
    fs.renameSync(tmp, dir);
  }
  return dir;
}

const weightFiles = (dir: string) =>
  fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.safetensors'))
    .map((f) => path.join(dir, f));

/** Drops the files from the page cache (posix_fadvise DONTNEED through dd; no privileges needed). */
function evict(dir: string): void {
  evictFiles(weightFiles(dir));
}

function evictFiles(files: string[]): void {
  for (const f of files) {
    execFileSync('sync', [f]);
    execFileSync('dd', [`if=${f}`, 'iflag=nocache', 'count=0', 'status=none']);
  }
}

/** Seconds to read every weight file once, sequentially in 8 MiB reads. */
function readSeconds(dir: string): { seconds: number; bytes: number } {
  const buf = Buffer.allocUnsafe(8 << 20);
  let bytes = 0;
  const t0 = performance.now();
  for (const f of weightFiles(dir)) {
    const fd = fs.openSync(f, 'r');
    for (let n = fs.readSync(fd, buf); n > 0; n = fs.readSync(fd, buf)) bytes += n;
    fs.closeSync(fd);
  }
  return { seconds: (performance.now() - t0) / 1000, bytes };
}

const NS = 'default';
/** The repository and revision under which the HTTP server serves the checkpoint (`/plain/{repo}/{revision}/{file}`). */
const HTTP_REPO = 'bench/coldstart';
const HTTP_REVISION = 'main';
/** Paths that read the checkpoint from the HTTP server; the others (cold, cold-warm) from a file:// hostPath. */
const usesHttp = (p: PathName) => p !== 'cold' && p !== 'cold-warm';

/** Every file of the checkpoint directory (relative paths, '/' separators), for the HTTP server. */
function checkpointFiles(dir: string, rel = ''): HubFile[] {
  return fs.readdirSync(path.join(dir, rel), { withFileTypes: true }).flatMap((e) => {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.name.startsWith('.')) return [];
    if (e.isDirectory()) return checkpointFiles(dir, r);
    return e.isFile() ? [{ path: r, data: fs.readFileSync(path.join(dir, r)), lfs: r.endsWith('.safetensors') }] : [];
  });
}

interface Source {
  url: string;
  /** spec.model.sha256: an http(s):// source lists its files by it (HTTP has no listing; the CRD demands it). */
  sha256?: Record<string, string>;
}

const prewarm: Record<PathName, string[]> = {
  download: [],
  cold: [],
  'cold-warm': [],
  standby: ['  prewarm:', '    standbyReplicas: 1'],
  'standby-warm': [
    '  prewarm:',
    '    standbyReplicas: 1',
    '  worker:',
    '    env: [{ name: MODELSERVE_WARMUP_TOKENS, value: "8" }]',
  ],
  nodecache: ['  prewarm:', '    nodeCache: true'],
  'nodecache-warm': ['  prewarm:', '    nodeCache: true'],
};
const manifest = (name: string, source: Source, p: PathName) =>
  [
    'apiVersion: serving.modelserve.dev/v1alpha1',
    'kind: ModelDeployment',
    `metadata: { name: ${name}, namespace: ${NS} }`,
    'spec:',
    // JSON is YAML: the sha256 map's file names need no quoting rules of their own.
    `  model: ${JSON.stringify({ name, source: source.url, ...(source.sha256 ? { sha256: source.sha256 } : {}) })}`,
    '  resources: { gpus: 1 }',
    '  engine: { maxContext: 1024, maxSeqs: 8 }',
    '  replicas: 0',
    '  drain: { maxSeconds: 5 }',
    ...prewarm[p],
    '',
  ].join('\n');

interface Run {
  path: PathName;
  run: number;
  readyMs: number;
  routableMs: number;
  tokenMs: number;
  /** First token of a second request to the same replica, from its own send: the engine warm, no start-up at all. */
  nextTokenMs: number;
  /** The new pod's own figures (not for standby): process start → ready, the weight load and its throughput. */
  worker?: { startupSeconds: number; loadSeconds: number; loadBytesPerSecond: number };
  /** http paths, new pods: what the fetch-weights init container did (its log), and its time from its own log. */
  fetch?: { from: 'source' | 'cache'; seconds: number; bytes: number };
  /** http paths: GET requests the server answered between the /scale write and the first token. */
  httpGets?: number;
}

const isNodeCachePath = (p: PathName) => p === 'nodecache' || p === 'nodecache-warm';
const isStandbyPath = (p: PathName) => p === 'standby' || p === 'standby-warm';
const isReady = (p: V1Pod) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;
const isServing = (p: V1Pod) => p.metadata?.labels?.[LABEL_ROLE] === 'serving';

async function firstToken(gatewayUrl: string, model: string, t0: number): Promise<number> {
  const res = await fetch(`${gatewayUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'Say hi.' }], max_tokens: 4, stream: true }),
  });
  if (res.status !== 200 || !res.body) throw new Error(`${model}: status ${res.status}: ${await res.text()}`);
  let at: number | undefined;
  let buffer = '';
  const decoder = new TextDecoder();
  for await (const bytes of res.body) {
    buffer += decoder.decode(bytes as Uint8Array, { stream: true });
    if (at === undefined && /"(content|reasoning_content)":"[^"]/.test(buffer)) at = performance.now() - t0;
  }
  if (at === undefined) throw new Error(`${model}: the stream carried no token: ${buffer.slice(0, 300)}`);
  return at;
}

/** The new pod's fetch-weights log (the node agent keeps each pod's container logs in its pod directory). */
function fetchLog(stateDir: string, pod: V1Pod): Run['fetch'] {
  const dir = `${pod.metadata?.namespace}_${pod.metadata?.name}_${pod.metadata?.uid?.slice(0, 8)}`;
  const file = path.join(stateDir, dir, 'fetch-weights.log');
  if (!fs.existsSync(file)) throw new Error(`${file}: no fetch-weights log (did the init container run?)`);
  const lines = fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { time: string; msg: string; seconds?: number; bytes?: number });
  const first = lines[0];
  const cached = lines.find((l) => l.msg === 'node cache holds the weights; nothing to fetch');
  if (cached && first)
    return { from: 'cache', seconds: (Date.parse(cached.time) - Date.parse(first.time)) / 1000, bytes: 0 };
  const done = lines.find((l) => l.msg === 'fetched');
  if (!done) throw new Error(`${file}: neither fetched nor found in the node cache`);
  return { from: 'source', seconds: done.seconds ?? NaN, bytes: done.bytes ?? NaN };
}

async function scrape(ip: string): Promise<Run['worker']> {
  const text = await (await fetch(`http://${ip}:8000/metrics`)).text();
  const value = (name: string) => Number(new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return {
    startupSeconds: value('modelserve_worker_startup_seconds'),
    loadSeconds: value('modelserve_worker_load_seconds'),
    loadBytesPerSecond: value('modelserve_worker_load_bytes_per_second'),
  };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function measure(
  sys: Awaited<ReturnType<typeof startLocalSystem>>,
  hub: HubServer,
  api: KubeClient,
  discovery: KubeDiscovery,
  pods: Informer<V1Pod>,
  name: string,
  p: PathName,
  run: number,
  source: string,
): Promise<Run> {
  const all = () => pods.list().filter((x) => x.metadata?.labels?.['app.kubernetes.io/instance'] === name);
  const live = () => all().filter((x) => !x.metadata?.deletionTimestamp);
  // At rest: no serving pod, and for the standby path exactly one loaded standby; no pod of the last run still
  // terminating (it would hold the GPU a new pod needs).
  await waitFor(
    () => {
      const l = all();
      return l.length === (isStandbyPath(p) ? 1 : 0) && l.every((x) => !isServing(x) && isReady(x));
    },
    { timeoutMs: 300_000, intervalMs: 100, description: `${name} at rest before run ${run}` },
  );
  if (p === 'cold') evict(source);
  if (p === 'nodecache') {
    // Every node's cache entries (the pod may land on either node).
    const root = (node: string) => sys.agent.nodeHostPath(node, LOCAL_WEIGHT_CACHE_DIR);
    const files = sys.agent.nodes.flatMap((n) =>
      fs.existsSync(root(n.name))
        ? (fs.readdirSync(root(n.name), { recursive: true }) as string[])
            .filter((f) => f.endsWith('.safetensors'))
            .map((f) => path.join(root(n.name), f))
        : [],
    );
    if (files.length === 0) throw new Error(`${name}: no cached .safetensors under the nodes' cache roots`);
    evictFiles(files);
  }
  if (p === 'cold-warm') readSeconds(source);

  const t0 = performance.now();
  let readyMs: number | undefined;
  let readyPod: V1Pod | undefined;
  let routableMs: number | undefined;
  const check = () => {
    const now = performance.now() - t0;
    if (routableMs === undefined && (discovery.target(name)?.endpoints.length ?? 0) > 0) routableMs = now;
    const serving = live().find((x) => isServing(x) && isReady(x));
    if (readyMs === undefined && serving) [readyMs, readyPod] = [now, serving];
  };
  const active = { on: true };
  discovery.onChange(() => active.on && check());
  pods.on(() => active.on && check());
  const served = hub.requests.length;
  const token = firstToken(sys.gatewayUrl, name, t0);
  await api.mergePatch(objectPath(resources.modelDeployments, NS, name, 'scale'), { spec: { replicas: 1 } });
  const tokenMs = await token;
  const httpGets = hub.requests.slice(served).filter((x) => x.method === 'GET').length;
  await waitFor(() => (check(), readyMs !== undefined && routableMs !== undefined), {
    timeoutMs: 30_000,
    description: `${name}: ready and routable`,
  });
  active.on = false;
  const t1 = performance.now();
  const nextTokenMs = await firstToken(sys.gatewayUrl, name, t1);
  const r: Run = { path: p, run, readyMs: readyMs!, routableMs: routableMs!, tokenMs, nextTokenMs };
  if (!isStandbyPath(p)) r.worker = await scrape(readyPod!.status?.podIP ?? '');
  if (usesHttp(p)) r.httpGets = httpGets;
  if (usesHttp(p) && !isStandbyPath(p)) r.fetch = fetchLog(path.join(sys.cp.dir, 'pods'), readyPod!);
  await api.mergePatch(objectPath(resources.modelDeployments, NS, name, 'scale'), { spec: { replicas: 0 } });
  return r;
}

async function main(): Promise<void> {
  const source = checkpoint();
  // The download source: the checkpoint in this process's memory, served over HTTP on every address (pods in network
  // namespaces reach it through their bridge's gateway).
  const hub = new HubServer();
  let http: Source | undefined;
  if (paths.some(usesHttp)) {
    const files = checkpointFiles(source);
    hub.addRepo(HTTP_REPO, HTTP_REVISION, files);
    await hub.start('0.0.0.0');
    http = { url: '', sha256: Object.fromEntries(files.map((f) => [f.path, fileSha256(f)])) };
  }
  const sys = await startLocalSystem({ name: 'bench-coldstart', nodes: 2, gpusPerNode: 1 }).catch(async (err) => {
    await hub.stop();
    throw err;
  });
  if (http) http.url = `http://${hostAddressForPods(sys.agent)}:${hub.port}/plain/${HTTP_REPO}/${HTTP_REVISION}`;
  const api = new KubeClient(sys.cp.kubeConfig);
  const discovery = new KubeDiscovery(api, { namespace: NS, resyncMs: 600_000, onError: () => undefined });
  const pods = new Informer<V1Pod>(api, resources.pods, {
    namespace: NS,
    labelSelector: 'app.kubernetes.io/managed-by=modelserve-operator',
    resyncMs: 600_000,
  });
  const results: Run[] = [];
  const failed: string[] = [];
  let disk: { seconds: number; bytes: number } | undefined;
  let pageCache: { seconds: number; bytes: number } | undefined;
  try {
    pods.start();
    await Promise.all([discovery.start(), pods.waitForSync()]);
    evict(source);
    disk = readSeconds(source);
    pageCache = readSeconds(source);
    for (const p of paths) {
      const name = `cs-${p}`;
      try {
        const src: Source = usesHttp(p) ? http! : { url: `file://${source}` };
        const applied = await sys.cp.kubectl(['apply', '-f', '-'], { input: manifest(name, src, p) });
        if (applied.code !== 0) throw new Error(`apply ${name}: ${applied.stderr}`);
        if (isNodeCachePath(p)) {
          // The stager Jobs must have filled the nodes' caches first, or the pods would read the source after all.
          await waitFor(
            async () =>
              (
                await sys.cp.kubectl([
                  'get',
                  'mdep',
                  name,
                  '-o',
                  'jsonpath={.status.conditions[?(@.type=="WeightsCached")].status}',
                ])
              ).stdout === 'True',
            { timeoutMs: 300_000, intervalMs: 1000, description: `${name}: WeightsCached=True` },
          );
        }
        for (let run = 1; run <= runs; run++) {
          const r = await measure(sys, hub, api, discovery, pods, name, p, run, source);
          results.push(r);
          console.log(JSON.stringify(r));
        }
      } catch (err) {
        // One path failing (say, the node cache never became ready) leaves the others' figures standing.
        failed.push(`${p}: ${(err as Error).message}`);
        console.log(`path ${p} failed: ${(err as Error).message}`);
      }
      await sys.cp.kubectl(['delete', 'mdep', name, '--wait=false']);
    }
  } finally {
    await discovery.stop();
    await pods.stop();
    api.close();
    await sys.stop();
    await hub.stop();
  }

  const rows = paths
    .filter((p) => results.some((r) => r.path === p))
    .map((p) => {
      const rs = results.filter((r) => r.path === p);
      const m = (k: 'readyMs' | 'routableMs' | 'tokenMs' | 'nextTokenMs') => median(rs.map((r) => r[k]));
      return {
        path: p,
        runs: rs.length,
        ready: m('readyMs'),
        routable: m('routableMs'),
        token: m('tokenMs'),
        next: m('nextTokenMs'),
      };
    });
  const cold = rows.find((r) => r.path === 'cold');
  const download = rows.find((r) => r.path === 'download');
  const s = (ms: number) => `${(ms / 1000).toFixed(3)} s`;
  const gb = (x: { seconds: number; bytes: number }) => `${(x.bytes / 1e9 / x.seconds).toFixed(2)} GB/s`;
  console.log(`\ncheckpoint ${source}: ${(disk!.bytes / 1e9).toFixed(2)} GB`);
  console.log(
    `physical floor, reading it once: ${s(disk!.seconds * 1000)} from disk (${gb(disk!)}), ` +
      `${s(pageCache!.seconds * 1000)} from the page cache (${gb(pageCache!)})`,
  );
  console.log(
    '\n| path | source | runs | /scale → serving pod Ready | → routable (gateway discovery) | → first token | download ÷ path (Ready / first token) | cold ÷ path (first token) | next request: first token |',
  );
  console.log('|---|---|---|---|---|---|---|---|---|');
  const x = (a: number, b: number) => `${(a / b).toFixed(1)}×`;
  for (const r of rows) {
    const vsDownload = download ? `${x(download.ready, r.ready)} / ${x(download.token, r.token)}` : 'n/a';
    const vsCold = cold ? x(cold.token, r.token) : 'n/a';
    console.log(
      `| ${r.path} | ${usesHttp(r.path) ? 'http://' : 'file://'} | ${r.runs} | ${s(r.ready)} | ${s(r.routable)} | ` +
        `${s(r.token)} | ${vsDownload} | ${vsCold} | ${s(r.next)} |`,
    );
  }
  const nodecache = rows.find((r) => r.path === 'nodecache');
  const standby = rows.find((r) => r.path === 'standby');
  if (download && nodecache && standby) {
    for (const k of ['ready', 'routable', 'token'] as const) {
      console.log(
        `${k}: download ÷ nodecache ${x(download[k], nodecache[k])}, nodecache ÷ standby ${x(nodecache[k], standby[k])}, ` +
          `download ÷ standby ${x(download[k], standby[k])}`,
      );
    }
  }
  console.log('\nNew pods, worker metrics (startup = process start → ready; load = weights):');
  for (const r of results.filter((x) => x.worker)) {
    const w = r.worker!;
    console.log(
      `  ${r.path} #${r.run}: startup ${w.startupSeconds.toFixed(2)} s, load ${w.loadSeconds.toFixed(3)} s ` +
        `at ${(w.loadBytesPerSecond / 1e9).toFixed(2)} GB/s` +
        (r.fetch
          ? `; fetch-weights: ${r.fetch.from === 'cache' ? 'node cache, nothing fetched' : `${(r.fetch.bytes / 1e9).toFixed(2)} GB downloaded and verified`} in ${r.fetch.seconds.toFixed(2)} s`
          : '') +
        (r.httpGets !== undefined ? `; ${r.httpGets} GETs to the source until the first token` : ''),
    );
  }
  for (const r of results.filter((y) => !y.worker && y.httpGets !== undefined))
    console.log(`  ${r.path} #${r.run}: ${r.httpGets} GETs to the source until the first token`);
  for (const f of failed) console.log(`not measured: ${f}`);
  if (values.out) {
    fs.mkdirSync(path.dirname(values.out), { recursive: true });
    fs.writeFileSync(
      values.out,
      JSON.stringify({ source, disk, pageCache, runs: results, medians: rows, failed }, null, 2) + '\n',
    );
  }
}

await main();
