import { execFile } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { KubeConfig, CoreV1Api, type V1Node } from '@kubernetes/client-node';

import { controlPlaneBinDir, repoRoot, runDir } from './paths.js';
import { makePki, writeKubeconfig, type Pki } from './pki.js';
import { freePort } from './ports.js';
import { ManagedProcess } from './process.js';
import { waitFor } from './wait.js';

export interface ControlPlaneOptions {
  /** Fake GPU nodes to create once the API server is up (default 2). */
  gpuNodes?: number;
  /** `nvidia.com/gpu` capacity of each (default 8). */
  gpusPerNode?: number;
  /** Names the run folder under .tmp/runs (default: the jest test file's name, else "cp"). */
  name?: string;
}

export interface CommandResult {
  stdout: string;
  stderr: string;
  code: number;
}

/**
 * A real Kubernetes control plane for one test suite: etcd, kube-apiserver (RBAC on), kube-controller-manager,
 * kube-scheduler and kwok (which keeps fake nodes Ready and marks pods bound to them Running), on free ports, with
 * logs and kubeconfig in its own folder under .tmp/runs/. Suites can run side by side.
 */
export class ControlPlane {
  readonly kubeconfigPath: string;
  readonly kubeConfig: KubeConfig;
  readonly server: string;
  private stopped = false;

  constructor(
    readonly dir: string,
    readonly binDir: string,
    readonly pki: Pki,
    readonly apiPort: number,
    private readonly processes: ManagedProcess[],
  ) {
    this.kubeconfigPath = path.join(dir, 'kubeconfig');
    this.server = `https://127.0.0.1:${apiPort}`;
    this.kubeConfig = new KubeConfig();
    this.kubeConfig.loadFromFile(this.kubeconfigPath);
  }

  /** Environment for child processes (operator, kubectl, helm) pointing at this control plane. */
  get env(): NodeJS.ProcessEnv {
    return { ...process.env, KUBECONFIG: this.kubeconfigPath, PATH: `${this.binDir}:${process.env.PATH ?? ''}` };
  }

  process(name: string): ManagedProcess {
    const p = this.processes.find((x) => x.name === name);
    if (!p) throw new Error(`no process ${name}`);
    return p;
  }

  /** Runs the cached kubectl against this control plane. Never throws on a non-zero exit: check `code`. */
  kubectl(args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<CommandResult> {
    return run(path.join(this.binDir, 'kubectl'), ['--kubeconfig', this.kubeconfigPath, ...args], this.env, opts);
  }

  /** Runs the cached helm against this control plane. */
  helm(args: string[], opts: { timeoutMs?: number } = {}): Promise<CommandResult> {
    return run(path.join(this.binDir, 'helm'), ['--kubeconfig', this.kubeconfigPath, ...args], this.env, opts);
  }

  /** Creates fake nodes managed by kwok with `nvidia.com/gpu` capacity, and waits until they are Ready. */
  async addGpuNodes(count: number, gpusPerNode: number, namePrefix = 'gpu-node'): Promise<string[]> {
    const core = this.kubeConfig.makeApiClient(CoreV1Api);
    const names: string[] = [];
    const existing = new Set((await core.listNode()).items.map((n) => n.metadata?.name));
    for (let i = 0; names.length < count; i++) {
      const name = `${namePrefix}-${i}`;
      if (existing.has(name)) continue;
      await core.createNode({ body: fakeGpuNode(name, gpusPerNode) });
      names.push(name);
    }
    await waitFor(
      async () => {
        const nodes = (await core.listNode()).items.filter((n) => names.includes(n.metadata?.name ?? ''));
        // Ready, and the node lifecycle controller has lifted the not-ready taint it puts on new nodes.
        return (
          nodes.length === names.length &&
          nodes.every(
            (n) =>
              n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') && !n.spec?.taints?.length,
          )
        );
      },
      { timeoutMs: 60_000, description: `fake GPU nodes ${names.join(', ')} Ready and untainted` },
    );
    return names;
  }

  /** Stops every process (reverse start order) and removes etcd's data; logs stay in `dir`. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const p of [...this.processes].reverse()) await p.stop();
    fs.rmSync(path.join(this.dir, 'etcd-data'), { recursive: true, force: true });
  }
}

export function fakeGpuNode(name: string, gpus: number): V1Node {
  const resources = {
    cpu: '64',
    memory: '512Gi',
    pods: '110',
    'nvidia.com/gpu': String(gpus),
    'ephemeral-storage': '1Ti',
  };
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      annotations: { 'kwok.x-k8s.io/node': 'fake', 'node.alpha.kubernetes.io/ttl': '0' },
      labels: {
        'kubernetes.io/hostname': name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        'node.kubernetes.io/instance-type': 'fake-gpu',
        'nvidia.com/gpu.present': 'true',
        type: 'kwok',
      },
    },
    status: { capacity: resources, allocatable: resources },
  };
}

/**
 * Starts a control plane. The ports come from freePort(), free a moment before the processes bind them; meanwhile
 * another suite's outgoing connection can take one as its ephemeral port (seen in CI: kube-apiserver "bind: address
 * already in use"). Such a start is retried with fresh ports, up to three attempts; any other failure is thrown at once.
 */
export async function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startControlPlaneOnce(opts);
    } catch (err) {
      if (attempt >= 3 || !/address already in use/.test((err as Error).message)) throw err;
    }
  }
}

async function startControlPlaneOnce(opts: ControlPlaneOptions): Promise<ControlPlane> {
  const binDir = controlPlaneBinDir();
  const name = opts.name ?? suiteName();
  const dir = runDir(name);
  const pki = makePki(path.join(dir, 'pki'));
  const [etcdPort, etcdPeerPort, apiPort, kcmPort, schedPort, kwokPort] = (await Promise.all(
    Array.from({ length: 6 }, freePort),
  )) as [number, number, number, number, number, number];
  const server = `https://127.0.0.1:${apiPort}`;
  const kubeconfig = path.join(dir, 'kubeconfig');
  writeKubeconfig(kubeconfig, server, pki.caCert, pki.adminCert, pki.adminKey);

  const bin = (b: string) => path.join(binDir, b);
  const env = { ...process.env, KUBECONFIG: kubeconfig };
  const processes: ManagedProcess[] = [];
  const started = (p: ManagedProcess) => (processes.push(p.start()), p);

  try {
    const etcd = started(
      new ManagedProcess(
        'etcd',
        bin('etcd'),
        [
          '--name=default',
          `--data-dir=${path.join(dir, 'etcd-data')}`,
          `--listen-client-urls=http://127.0.0.1:${etcdPort}`,
          `--advertise-client-urls=http://127.0.0.1:${etcdPort}`,
          `--listen-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
          `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
          `--initial-cluster=default=http://127.0.0.1:${etcdPeerPort}`,
          '--unsafe-no-fsync',
          '--log-level=warn',
        ],
        { dir },
      ),
    );
    await waitFor(async () => (etcd.assertRunning(), (await fetch(`http://127.0.0.1:${etcdPort}/health`)).ok), {
      timeoutMs: 30_000,
      description: 'etcd /health',
    });

    const apiserver = started(
      new ManagedProcess(
        'kube-apiserver',
        bin('kube-apiserver'),
        [
          `--etcd-servers=http://127.0.0.1:${etcdPort}`,
          `--secure-port=${apiPort}`,
          '--bind-address=127.0.0.1',
          '--advertise-address=127.0.0.1',
          `--tls-cert-file=${pki.serverCert}`,
          `--tls-private-key-file=${pki.serverKey}`,
          `--client-ca-file=${pki.caCert}`,
          '--authorization-mode=Node,RBAC',
          '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
          `--service-account-key-file=${pki.saPub}`,
          `--service-account-signing-key-file=${pki.saKey}`,
          '--service-cluster-ip-range=10.0.0.0/24',
          '--endpoint-reconciler-type=none',
          '--allow-privileged=true',
          `--cert-dir=${path.join(dir, 'apiserver-certs')}`,
          '--v=1',
        ],
        { dir },
      ),
    );
    await waitFor(async () => (apiserver.assertRunning(), (await httpsGet(`${server}/readyz`, pki)) === 200), {
      timeoutMs: 90_000,
      intervalMs: 500,
      description: 'kube-apiserver /readyz',
    });

    started(
      new ManagedProcess(
        'kube-controller-manager',
        bin('kube-controller-manager'),
        [
          `--kubeconfig=${kubeconfig}`,
          `--authentication-kubeconfig=${kubeconfig}`,
          `--authorization-kubeconfig=${kubeconfig}`,
          '--leader-elect=false',
          `--secure-port=${kcmPort}`,
          '--bind-address=127.0.0.1',
          `--service-account-private-key-file=${pki.saKey}`,
          `--root-ca-file=${pki.caCert}`,
          `--cluster-signing-cert-file=${pki.caCert}`,
          `--cluster-signing-key-file=${pki.caKey}`,
          '--use-service-account-credentials=true',
          '--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle,-route',
          '--concurrent-deployment-syncs=10',
          '--concurrent-replicaset-syncs=10',
          '--v=1',
        ],
        { dir, env },
      ),
    );
    started(
      new ManagedProcess(
        'kube-scheduler',
        bin('kube-scheduler'),
        [
          `--kubeconfig=${kubeconfig}`,
          `--authentication-kubeconfig=${kubeconfig}`,
          `--authorization-kubeconfig=${kubeconfig}`,
          '--leader-elect=false',
          `--secure-port=${schedPort}`,
          '--bind-address=127.0.0.1',
          '--v=1',
        ],
        { dir, env },
      ),
    );
    started(
      new ManagedProcess(
        'kwok',
        bin('kwok'),
        [
          `--kubeconfig=${kubeconfig}`,
          '--manage-all-nodes=false',
          '--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake',
          `--config=${path.join(repoRoot, 'hack/kwok/stages.yaml')}`,
          '--node-lease-duration-seconds=40',
          '--cidr=10.244.0.0/16',
          '--node-ip=127.0.0.1',
          `--server-address=127.0.0.1:${kwokPort}`,
        ],
        { dir, env },
      ),
    );

    const cp = new ControlPlane(dir, binDir, pki, apiPort, processes);
    // The default ServiceAccount appears once kcm's controllers run; pods cannot be created before it does.
    const core = cp.kubeConfig.makeApiClient(CoreV1Api);
    await waitFor(
      async () => {
        for (const p of processes) p.assertRunning();
        return (await core.readNamespacedServiceAccount({ name: 'default', namespace: 'default' })).metadata?.name;
      },
      { timeoutMs: 60_000, description: 'kube-controller-manager to create the default ServiceAccount' },
    );
    const gpuNodes = opts.gpuNodes ?? 2;
    if (gpuNodes > 0) await cp.addGpuNodes(gpuNodes, opts.gpusPerNode ?? 8);
    return cp;
  } catch (err) {
    for (const p of processes.reverse()) await p.stop();
    throw new Error(`control plane failed to start (logs in ${dir}): ${(err as Error).message}`);
  }
}

function suiteName(): string {
  const testPath = (globalThis as { expect?: { getState?: () => { testPath?: string } } }).expect?.getState?.()
    .testPath;
  return testPath
    ? path
        .basename(testPath)
        .replace(/\.(int|e2e)?\.?test\.ts$/, '')
        .replace(/[^a-zA-Z0-9-]/g, '-')
    : 'cp';
}

function httpsGet(url: string, pki: Pki): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = https.get(
      url,
      {
        ca: fs.readFileSync(pki.caCert),
        cert: fs.readFileSync(pki.adminCert),
        key: fs.readFileSync(pki.adminKey),
        timeout: 5_000,
      },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

function run(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  opts: { input?: string; timeoutMs?: number },
): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      { env, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err
          ? typeof (err as { code?: unknown }).code === 'number'
            ? (err as { code: number }).code
            : 1
          : 0;
        resolve({ stdout, stderr, code });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}
