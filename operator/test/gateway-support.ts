// Integration-test support for the gateway: real worker processes on a generated tiny-harmony checkpoint, gateway
// processes, and the Kubernetes objects that tell the gateway where workers are (ModelDeployment, Service,
// EndpointSlice). The API server refuses loopback addresses in EndpointSlices, so each worker runs in its own network
// namespace with an address on a private bridge of this machine (hack/node-agent/pod-network.ts), as pods do in the
// end-to-end tests.
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createPodNetwork, type PodNetwork } from '../../hack/node-agent/pod-network.js';
import type { ControlPlane } from '../../test/support/controlPlane.js';
import { tinyHarmonyCheckpoint } from '../../test/support/localSystem.js';
import { repoRoot } from '../../test/support/paths.js';
import { freePort } from '../../test/support/ports.js';
import { ManagedProcess } from '../../test/support/process.js';
import { waitFor } from '../../test/support/wait.js';

export const NATIVE_BUILD = path.join(repoRoot, 'worker/native/build');

let network: PodNetwork | undefined;

/** Pod-like networking for test workers: one network namespace each, on a bridge only this machine has. */
function workerNetwork(): PodNetwork {
  if (!network) {
    const created = createPodNetwork();
    if (created.mode !== 'netns') {
      throw new Error('gateway tests need root and iproute2: EndpointSlices cannot point at loopback workers');
    }
    network = created;
    process.once('exit', () => created.close());
  }
  return network;
}

/** Removes the workers' network namespaces and bridge; call in afterAll once the workers are stopped. */
export function closeWorkerNetwork(): void {
  network?.close();
  network = undefined;
}

/** The tiny-harmony checkpoint (seed 1), generated once into the cache by the native tool. */
export const tinyCheckpoint = (): string => tinyHarmonyCheckpoint(1);

const tsxNode = (script: string, args: string[]): [string, string[]] => [
  process.execPath,
  ['--import', 'tsx', path.join(repoRoot, script), ...args],
];

export interface Worker {
  proc: ManagedProcess;
  host: string;
  port: number;
  url: string;
  model: string;
}

/** Starts a worker serving the tiny checkpoint as `model` and waits for /ready. */
export async function startWorker(dir: string, name: string, model: string, extra: string[] = []): Promise<Worker> {
  const { podIP: host, wrap } = workerNetwork().attach(randomUUID(), 0);
  const port = await freePort();
  const [cmd, args] = tsxNode('worker/src/main.ts', [
    '--model',
    tinyCheckpoint(),
    '--served-model-name',
    model,
    '--host',
    host,
    '--port',
    String(port),
    '--backend',
    'cpu',
    '--threads',
    '1',
    '--date',
    '2026-01-01',
    ...extra,
  ]);
  const proc = new ManagedProcess(name, ...wrap(cmd, args), { dir, cwd: repoRoot }).start();
  const url = `http://${host}:${port}`;
  await waitFor(
    async () => {
      proc.assertRunning();
      return (await fetch(`${url}/ready`)).status === 200;
    },
    { timeoutMs: 120_000, intervalMs: 200, description: `worker ${name} /ready` },
  );
  return { proc, host, port, url, model };
}

export interface AuditLine {
  msg: string;
  audit?: boolean;
  key_id: string | null;
  model: string | null;
  status: number;
  worker: string | null;
  attempts: number;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  [k: string]: unknown;
}

export class GatewayProcess {
  constructor(
    readonly proc: ManagedProcess,
    readonly port: number,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Every JSON line the gateway logged so far. */
  lines(): Record<string, unknown>[] {
    const text = fs.existsSync(this.proc.logFile) ? fs.readFileSync(this.proc.logFile, 'utf8') : '';
    return text
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  audits(): AuditLine[] {
    return this.lines().filter((l) => l.audit === true) as unknown as AuditLine[];
  }

  /**
   * The audit lines after the first `skip`, once there are `count` of them: a line is written when the request's
   * handler finishes, which can be just after the client has read the response.
   */
  async auditsAfter(skip: number, count: number): Promise<AuditLine[]> {
    return waitFor(
      () => {
        const lines = this.audits().slice(skip);
        return lines.length >= count ? lines : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 50, description: `${count} audit lines after ${skip}` },
    );
  }

  logText(): string {
    return fs.readFileSync(this.proc.logFile, 'utf8');
  }

  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const text = await (await fetch(`${this.url}/metrics`)).text();
    let sum = 0;
    for (const line of text.split('\n')) {
      if (!line.startsWith(name)) continue;
      const m = /^([a-zA-Z_:]+)(\{[^}]*\})? (\S+)$/.exec(line);
      if (!m || m[1] !== name) continue;
      const set = m[2] ?? '';
      if (Object.entries(labels).every(([k, v]) => set.includes(`${k}="${v}"`))) sum += Number(m[3]);
    }
    return sum;
  }
}

/** Starts a gateway process (flags appended) on a free loopback port and waits for /readyz. */
export async function startGateway(dir: string, name: string, flags: string[]): Promise<GatewayProcess> {
  const port = await freePort();
  const [cmd, args] = tsxNode('operator/src/gateway/main.ts', [
    '--host',
    '127.0.0.1',
    '--port',
    String(port),
    ...flags,
  ]);
  const proc = new ManagedProcess(name, cmd, args, { dir, cwd: repoRoot }).start();
  const gw = new GatewayProcess(proc, port);
  await waitFor(
    async () => {
      proc.assertRunning();
      return (await fetch(`${gw.url}/readyz`)).status === 200;
    },
    { timeoutMs: 60_000, intervalMs: 200, description: `gateway ${name} /readyz` },
  );
  return gw;
}

async function kubectlApply(cp: ControlPlane, obj: unknown): Promise<void> {
  const r = await cp.kubectl(['apply', '-f', '-'], { input: JSON.stringify(obj) });
  if (r.code !== 0) throw new Error(`kubectl apply failed: ${r.stderr}`);
}

export async function kubectlOk(cp: ControlPlane, args: string[], input?: string): Promise<string> {
  const r = await cp.kubectl(args, input === undefined ? {} : { input });
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

export async function installCrdAndNamespace(cp: ControlPlane, namespace: string): Promise<void> {
  await kubectlOk(cp, [
    'apply',
    '--server-side',
    '-f',
    path.join(repoRoot, 'crds/serving.modelserve.dev_modeldeployments.yaml'),
  ]);
  await kubectlOk(cp, [
    'wait',
    '--for=condition=Established',
    '--timeout=60s',
    'crd/modeldeployments.serving.modelserve.dev',
  ]);
  await kubectlOk(cp, ['create', 'namespace', namespace]);
}

/** A ModelDeployment for `model` and the Service the operator would create for it (same name). */
export async function deployModel(cp: ControlPlane, namespace: string, name: string, model: string): Promise<void> {
  await kubectlApply(cp, {
    apiVersion: 'serving.modelserve.dev/v1alpha1',
    kind: 'ModelDeployment',
    metadata: { name, namespace },
    spec: { model: { name: model, source: 'file:///models/tiny' }, replicas: 0 },
  });
  await kubectlApply(cp, {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace },
    spec: { selector: { 'app.kubernetes.io/instance': name }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] },
  });
}

export interface SliceEndpoint {
  worker: Worker;
  ready?: boolean;
  terminating?: boolean;
}

/**
 * The EndpointSlice of one worker of a Service (one slice per worker, since a slice's port applies to all of its
 * endpoints and test workers differ by port). Applying again updates its conditions.
 */
export async function setWorkerSlice(
  cp: ControlPlane,
  namespace: string,
  service: string,
  ep: SliceEndpoint,
): Promise<void> {
  const terminating = ep.terminating ?? false;
  const ready = ep.ready ?? !terminating;
  await kubectlApply(cp, {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${service}-${ep.worker.port}`, namespace, labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: ep.worker.port, protocol: 'TCP' }],
    endpoints: [{ addresses: [ep.worker.host], conditions: { ready, serving: !terminating || ready, terminating } }],
  });
}

export async function deleteWorkerSlice(
  cp: ControlPlane,
  namespace: string,
  service: string,
  worker: Worker,
): Promise<void> {
  await kubectlOk(cp, ['delete', 'endpointslice', '-n', namespace, `${service}-${worker.port}`]);
}

/** A chat request body for the tiny model: short, deterministic (greedy), with a system prompt. */
export function chatBody(
  model: string,
  opts: { system?: string; user?: string; stream?: boolean; maxTokens?: number } = {},
): Record<string, unknown> {
  return {
    model,
    messages: [
      { role: 'system', content: opts.system ?? 'You are a test.' },
      { role: 'user', content: opts.user ?? 'Say something.' },
    ],
    max_tokens: opts.maxTokens ?? 8,
    temperature: 0,
    ...(opts.stream ? { stream: true } : {}),
  };
}

export async function postJson(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; json: Record<string, unknown> }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = { raw: text };
  }
  return { status: res.status, headers: res.headers, json };
}
