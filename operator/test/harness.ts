// Integration-test harness for the operator: install the CRD and RBAC into a real control plane, mint a token for the
// operator's ServiceAccount (TokenRequest API) so RBAC is exercised, and run operator processes as children.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { KubeConfig } from '@kubernetes/client-node';
import yaml from 'js-yaml';
import { startControlPlane, type ControlPlane } from '../../test/support/controlPlane.js';
import { waitFor } from '../../test/support/wait.js';
import type { ModelDeployment } from '../src/api/modelDeployment.js';
import { objectPath, resources } from '../src/k8s/resources.js';
import { KubeClient } from '../src/k8s/rest.js';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
export const crdFile = path.join(repoRoot, 'crds/serving.modelserve.dev_modeldeployments.yaml');
export const rbacDir = path.join(repoRoot, 'config/rbac');
export const OPERATOR_NAMESPACE = 'modelserve-system';

async function kubectlOk(cp: ControlPlane, args: string[], input?: string): Promise<string> {
  const r = await cp.kubectl(args, input === undefined ? {} : { input });
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** Installs the CRD and waits until the API server serves it. */
export async function installCrd(cp: ControlPlane): Promise<void> {
  await kubectlOk(cp, ['apply', '--server-side', '-f', crdFile]);
  await kubectlOk(cp, [
    'wait',
    '--for=condition=Established',
    '--timeout=60s',
    'crd/modeldeployments.serving.modelserve.dev',
  ]);
}

/** Applies config/rbac and returns a kubeconfig file that authenticates as the operator's ServiceAccount. */
export async function operatorKubeconfig(cp: ControlPlane): Promise<string> {
  await kubectlOk(cp, ['create', 'namespace', OPERATOR_NAMESPACE]).catch((e: Error) => {
    if (!/AlreadyExists/.test(e.message)) throw e;
  });
  await kubectlOk(cp, ['apply', '-f', rbacDir]);
  const token = (
    await kubectlOk(cp, ['create', 'token', 'modelserve-operator', '-n', OPERATOR_NAMESPACE, '--duration=2h'])
  ).trim();
  const admin = yaml.load(readFileSync(cp.kubeconfigPath, 'utf8')) as {
    clusters: { name: string; cluster: Record<string, string> }[];
  };
  const cluster = admin.clusters[0]!.cluster;
  const kubeconfig = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'test', cluster }],
    users: [{ name: 'modelserve-operator', user: { token } }],
    contexts: [{ name: 'operator', context: { cluster: 'test', user: 'modelserve-operator' } }],
    'current-context': 'operator',
  };
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'modelserve-op-')), 'kubeconfig');
  writeFileSync(file, yaml.dump(kubeconfig), { mode: 0o600 });
  return file;
}

export function adminClient(cp: ControlPlane): KubeClient {
  return new KubeClient(cp.kubeConfig);
}

export function clientFor(kubeconfigPath: string): KubeClient {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  return new KubeClient(kc);
}

export interface LogLine {
  level: string;
  msg: string;
  [k: string]: unknown;
}

/** An operator process (`node --import tsx operator/src/main.ts`), its parsed JSON log lines and its HTTP port. */
export class OperatorProcess {
  readonly logs: LogLine[] = [];
  readonly stderr: string[] = [];
  port = 0;
  exitCode: number | null = null;
  exitSignal: NodeJS.Signals | null = null;
  private readonly exited: Promise<void>;

  constructor(readonly child: ChildProcess) {
    let buffered = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk;
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) {
        try {
          const entry = JSON.parse(line) as LogLine;
          if (entry.msg === 'http listening') this.port = entry.port as number;
          this.logs.push(entry);
        } catch {
          this.stderr.push(line);
        }
      }
    });
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => this.stderr.push(chunk));
    this.exited = new Promise((resolve) =>
      child.on('exit', (code, signal) => {
        this.exitCode = code;
        this.exitSignal = signal;
        resolve();
      }),
    );
  }

  get running(): boolean {
    return this.exitCode === null && this.exitSignal === null;
  }

  hasLogged(msg: string): boolean {
    return this.logs.some((l) => l.msg === msg);
  }

  async metrics(): Promise<string> {
    const res = await fetch(`http://127.0.0.1:${this.port}/metrics`);
    return res.text();
  }

  /** SIGTERM (graceful: informers stop, lease released), or SIGKILL; waits for the exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (!this.running) return;
    this.child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.exited, new Promise((r) => (timer = setTimeout(r, 15_000)))]);
    clearTimeout(timer);
    if (this.running) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }

  describe(): string {
    return `exit=${this.exitCode}/${this.exitSignal}\nstderr:\n${this.stderr.join('').slice(-3000)}\nlogs:\n${this.logs
      .slice(-30)
      .map((l) => JSON.stringify(l))
      .join('\n')}`;
  }
}

export async function startOperator(
  cp: ControlPlane,
  kubeconfigPath: string,
  extraArgs: string[] = [],
): Promise<OperatorProcess> {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      path.join(repoRoot, 'operator/src/main.ts'),
      '--kubeconfig',
      kubeconfigPath,
      '--http-port',
      '0',
      '--http-host',
      '127.0.0.1',
      '--lease-namespace',
      OPERATOR_NAMESPACE,
      '--worker-image',
      'modelserve/worker:test',
      ...extraArgs,
    ],
    { cwd: repoRoot, env: { ...cp.env, KUBECONFIG: kubeconfigPath }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const op = new OperatorProcess(child);
  await waitFor(
    () => {
      if (!op.running) throw new Error(`operator exited early: ${op.describe()}`);
      return op.port > 0;
    },
    { timeoutMs: 60_000, description: 'operator HTTP port' },
  );
  return op;
}

/** Applies a manifest given as an object through kubectl (as a user would). */
export async function applyManifest(
  cp: ControlPlane,
  obj: unknown,
): Promise<{ code: number; stderr: string; stdout: string }> {
  return cp.kubectl(['apply', '-f', '-'], { input: yaml.dump(obj) });
}

export function modelDeploymentManifest(name: string, spec: Record<string, unknown>, namespace = 'default') {
  return {
    apiVersion: 'serving.modelserve.dev/v1alpha1',
    kind: 'ModelDeployment',
    metadata: { name, namespace },
    spec: { model: { name: `${name}-model`, source: 'file:///models/gpt-oss-20b' }, ...spec },
  };
}

export interface Stack {
  cp: ControlPlane;
  api: KubeClient;
  operatorKubeconfig: string;
  operators: OperatorProcess[];
  stop(): Promise<void>;
}

/** A control plane with the CRD, the operator's RBAC, and `operators` operator processes (0 to start none). */
export async function startStack(
  opts: { gpuNodes?: number; gpusPerNode?: number; operators?: number } = {},
): Promise<Stack> {
  const cp = await startControlPlane({ gpuNodes: opts.gpuNodes ?? 2, gpusPerNode: opts.gpusPerNode ?? 8 });
  const stack: Stack = {
    cp,
    api: adminClient(cp),
    operatorKubeconfig: '',
    operators: [],
    async stop() {
      stack.api.close();
      for (const op of stack.operators) await op.stop();
      await cp.stop();
    },
  };
  try {
    await installCrd(cp);
    stack.operatorKubeconfig = await operatorKubeconfig(cp);
    for (let i = 0; i < (opts.operators ?? 1); i++) {
      stack.operators.push(await startOperator(cp, stack.operatorKubeconfig));
    }
    return stack;
  } catch (err) {
    await stack.stop();
    throw err;
  }
}

/** The ModelDeployment's status once `predicate` holds for it. */
export async function waitForStatus(
  stack: Stack,
  name: string,
  predicate: (s: NonNullable<ModelDeployment['status']>) => boolean,
  description: string,
  timeoutMs = 90_000,
): Promise<NonNullable<ModelDeployment['status']>> {
  return waitFor(
    async () => {
      const s = (await stack.api.get<ModelDeployment>(objectPath(resources.modelDeployments, 'default', name))).status;
      return s && predicate(s) ? s : undefined;
    },
    { timeoutMs, description: `${name}: ${description}` },
  );
}

export const condition = (s: NonNullable<ModelDeployment['status']>, type: string) =>
  s.conditions?.find((c) => c.type === type);

/** Events about an object (core/v1 view, which includes events.k8s.io/v1 Events). */
export async function eventsFor(
  cp: ControlPlane,
  name: string,
): Promise<{ reason: string; message?: string; note?: string; type: string }[]> {
  const r = await cp.kubectl(['get', 'events', '--field-selector', `involvedObject.name=${name}`, '-o', 'json']);
  return JSON.parse(r.stdout).items;
}
