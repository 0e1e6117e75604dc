// The local node agent runs pods bound to its nodes as processes: pod IP on loopback, readiness from the probe,
// SIGTERM with the grace period on deletion, restarts with back-off.
import fs from 'node:fs';
import path from 'node:path';

import { AppsV1Api, CoreV1Api, type V1Pod } from '@kubernetes/client-node';

import { startControlPlane, type ControlPlane } from '../../../test/support/controlPlane.js';
import { repoRoot } from '../../../test/support/paths.js';
import { waitFor } from '../../../test/support/wait.js';
import { NodeAgent } from '../agent.js';

let cp: ControlPlane;
let agent: NodeAgent;
let stateDir: string;

// A small HTTP server: /ready answers 200, SIGTERM writes a marker after a short drain and exits 0.
const serverScript = `
const http = require('http'); const fs = require('fs');
const s = http.createServer((q, r) => r.end(process.env.HOSTNAME + ' ' + (q.url === '/ready' ? 'ok' : 'hi')));
s.listen(8080, process.env.POD_IP);
process.on('SIGTERM', () => setTimeout(() => { fs.writeFileSync(process.env.MARKER_DIR + '/' + process.env.HOSTNAME + '.terminated', 'ok'); process.exit(0); }, 300));
`;

beforeAll(async () => {
  cp = await startControlPlane({ gpuNodes: 0 });
  stateDir = path.join(cp.dir, 'node-agent');
  fs.mkdirSync(path.join(stateDir, 'markers'), { recursive: true });
  agent = new NodeAgent({
    kubeConfig: cp.kubeConfig,
    stateDir,
    repoRoot,
    nodes: 2,
    gpusPerNode: 1,
    log: (m, f) => fs.appendFileSync(path.join(cp.dir, 'node-agent.log'), JSON.stringify({ m, ...f }) + '\n'),
  });
  await agent.start();
}, 180_000);

afterAll(async () => {
  await agent?.stop(2);
  await cp?.stop();
});

function podsOf(app: string): Promise<V1Pod[]> {
  return cp.kubeConfig
    .makeApiClient(CoreV1Api)
    .listNamespacedPod({ namespace: 'default', labelSelector: `app=${app}` })
    .then((l) => l.items);
}

test('pods of a GPU Deployment run as local processes, become Ready, and get SIGTERM on deletion', async () => {
  const apps = cp.kubeConfig.makeApiClient(AppsV1Api);
  const labels = { app: 'echo' };
  await apps.createNamespacedDeployment({
    namespace: 'default',
    body: {
      metadata: { name: 'echo' },
      spec: {
        replicas: 2,
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            terminationGracePeriodSeconds: 5,
            containers: [
              {
                name: 'main',
                image: 'example.invalid/echo:1',
                command: [process.execPath, '-e', serverScript],
                env: [{ name: 'MARKER_DIR', value: path.join(stateDir, 'markers') }],
                ports: [{ name: 'http', containerPort: 8080 }],
                readinessProbe: { httpGet: { path: '/ready', port: 'http' }, periodSeconds: 1 },
                resources: { limits: { 'nvidia.com/gpu': '1' } },
              },
            ],
          },
        },
      },
    },
  });

  const ready = await waitFor(
    async () => {
      const pods = await podsOf('echo');
      const r = pods.filter((p) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
      return r.length === 2 ? r : undefined;
    },
    { timeoutMs: 60_000, description: 'two echo pods Ready' },
  );
  expect(new Set(ready.map((p) => p.spec?.nodeName))).toEqual(new Set(agent.nodes.map((n) => n.name)));
  for (const pod of ready) {
    expect(pod.status?.podIP).toMatch(agent.networkMode === 'netns' ? /^10\./ : /^127\./);
    const body = await (await fetch(`http://${pod.status?.podIP}:8080/`)).text();
    expect(body).toBe(`${pod.metadata?.name} hi`);
  }

  await apps.deleteNamespacedDeployment({ name: 'echo', namespace: 'default' });
  await waitFor(
    async () => {
      const left = await podsOf('echo');
      if (left.length)
        throw new Error(
          left
            .map(
              (p) =>
                `${p.metadata?.name} ${p.status?.phase} node=${p.spec?.nodeName} del=${String(p.metadata?.deletionTimestamp)} fin=${p.metadata?.finalizers}`,
            )
            .join('; '),
        );
      return true;
    },
    { timeoutMs: 60_000, description: 'echo pods gone' },
  );
  for (const pod of ready) {
    expect(fs.existsSync(path.join(stateDir, 'markers', `${pod.metadata?.name}.terminated`))).toBe(true);
    await expect(fetch(`http://${pod.status?.podIP}:8080/`, { signal: AbortSignal.timeout(2000) })).rejects.toThrow();
  }
}, 150_000);

test('a crashing container is restarted with back-off and reported as CrashLoopBackOff', async () => {
  const core = cp.kubeConfig.makeApiClient(CoreV1Api);
  await core.createNamespacedPod({
    namespace: 'default',
    body: {
      metadata: { name: 'crasher', labels: { app: 'crasher' } },
      spec: {
        nodeName: agent.nodes[0]?.name,
        containers: [
          { name: 'main', image: 'example.invalid/crash:1', command: [process.execPath, '-e', 'process.exit(3)'] },
        ],
      },
    },
  });
  const status = await waitFor(
    async () => {
      const pod = await core.readNamespacedPod({ name: 'crasher', namespace: 'default' });
      const cs = pod.status?.containerStatuses?.[0];
      return cs && cs.restartCount >= 2 && cs.state?.waiting?.reason === 'CrashLoopBackOff' ? cs : undefined;
    },
    { timeoutMs: 30_000, description: 'crasher in CrashLoopBackOff' },
  );
  expect(status.ready).toBe(false);
  await core.deleteNamespacedPod({ name: 'crasher', namespace: 'default' });
  await waitFor(async () => (await podsOf('crasher')).length === 0, { timeoutMs: 30_000, description: 'crasher gone' });
}, 60_000);

test('liveness waits for the startup probe and runs every periodSeconds: a slow start is not killed', async () => {
  const core = cp.kubeConfig.makeApiClient(CoreV1Api);
  // Listens only after 4 s (a loaded machine, a model load); liveness alone (2 failures, 1 s apart) would kill it first.
  const slowStart = `setTimeout(() => require('http').createServer((q, r) => r.end('ok')).listen(8080, process.env.POD_IP), 4000);`;
  const probe = { httpGet: { path: '/', port: 'http' }, periodSeconds: 1 };
  await core.createNamespacedPod({
    namespace: 'default',
    body: {
      metadata: { name: 'slow-start', labels: { app: 'slow-start' } },
      spec: {
        nodeName: agent.nodes[0]?.name,
        terminationGracePeriodSeconds: 2,
        containers: [
          {
            name: 'main',
            image: 'example.invalid/slow:1',
            command: [process.execPath, '-e', slowStart],
            ports: [{ name: 'http', containerPort: 8080 }],
            startupProbe: { ...probe, failureThreshold: 60 },
            livenessProbe: { ...probe, failureThreshold: 2 },
            readinessProbe: probe,
          },
        ],
      },
    },
  });
  const status = await waitFor(
    async () => {
      const pod = await core.readNamespacedPod({ name: 'slow-start', namespace: 'default' });
      const cs = pod.status?.containerStatuses?.[0];
      return cs?.ready ? cs : undefined;
    },
    { timeoutMs: 60_000, description: 'slow-start Ready' },
  );
  expect(status.restartCount).toBe(0);
  await core.deleteNamespacedPod({ name: 'slow-start', namespace: 'default' });
  await waitFor(async () => (await podsOf('slow-start')).length === 0, {
    timeoutMs: 30_000,
    description: 'slow-start gone',
  });
}, 90_000);

test('a pod deleted while its init container runs: the init process is stopped and the containers never start', async () => {
  const core = cp.kubeConfig.makeApiClient(CoreV1Api);
  const markers = path.join(stateDir, 'markers-init');
  fs.mkdirSync(markers, { recursive: true });
  // A long init container (a weights download): records its pid, and that it got SIGTERM.
  const initScript = `
const fs = require('fs'); const d = process.env.MARKER_DIR;
fs.writeFileSync(d + '/init.pid', String(process.pid));
process.on('SIGTERM', () => { fs.writeFileSync(d + '/init.terminated', 'ok'); process.exit(143); });
setTimeout(() => process.exit(0), 60_000);
`;
  const env = [{ name: 'MARKER_DIR', value: markers }];
  await core.createNamespacedPod({
    namespace: 'default',
    body: {
      metadata: { name: 'slow-init', labels: { app: 'slow-init' } },
      spec: {
        nodeName: agent.nodes[1]?.name,
        terminationGracePeriodSeconds: 2,
        initContainers: [
          { name: 'fetch', image: 'example.invalid/fetch:1', command: [process.execPath, '-e', initScript], env },
        ],
        containers: [
          {
            name: 'main',
            image: 'example.invalid/main:1',
            command: [process.execPath, '-e', `require('fs').writeFileSync('${markers}/main.started', 'x')`],
          },
        ],
      },
    },
  });
  await waitFor(() => fs.existsSync(path.join(markers, 'init.pid')), {
    timeoutMs: 30_000,
    description: 'the init container running',
  });
  const pid = Number(fs.readFileSync(path.join(markers, 'init.pid'), 'utf8'));
  await core.deleteNamespacedPod({ name: 'slow-init', namespace: 'default' });
  await waitFor(async () => (await podsOf('slow-init')).length === 0, {
    timeoutMs: 30_000,
    description: 'slow-init gone',
  });
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  await waitFor(() => !alive(), { timeoutMs: 10_000, description: `init process ${pid} stopped` });
  expect(fs.existsSync(path.join(markers, 'init.terminated'))).toBe(true);
  // Had the runner carried on after its init container, the main container would start at once.
  await new Promise((r) => setTimeout(r, 1500));
  expect(fs.existsSync(path.join(markers, 'main.started'))).toBe(false);
}, 60_000);
