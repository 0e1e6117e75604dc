// One pod bound to a node of the agent: its containers as local processes, probes, restarts and status.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import type {
  CoreV1Api,
  V1Container,
  V1ContainerStatus,
  V1Pod,
  V1Probe,
  V1ResourceFieldSelector,
} from '@kubernetes/client-node';
import { parseBytes } from '../../operator/src/weightcache/keys.js';

import { localCommand, type ImageMapping } from './image-map.js';

export interface PodRunnerDeps {
  core: CoreV1Api;
  mappings: ImageMapping[];
  podDir: string;
  podIP: string;
  hostIP: string;
  /** Where a hostPath volume lives on this machine (each fake node may keep its own copy of node-local paths). */
  hostPath?: (p: string) => string;
  /** Runs a command inside the pod's network (see pod-network.ts). */
  wrap: (command: string, args: string[]) => [string, string[]];
  log: (msg: string, fields?: Record<string, unknown>) => void;
}

interface ContainerState {
  spec: V1Container;
  child?: ChildProcess;
  ready: boolean;
  restarts: number;
  startedAt?: string;
  waiting?: { reason: string; message: string };
  terminated?: { exitCode: number; reason: string; finishedAt: string; message?: string };
  probeFailures: number;
  livenessFailures: number;
  /** The startup probe has passed (or there is none): liveness probing may begin. */
  started: boolean;
  startupFailures: number;
  /** Date.now() of the last startup/liveness probe, to honour their periodSeconds. */
  lastProbeMs: { startup?: number; liveness?: number };
  restartTimer?: NodeJS.Timeout;
}

const MAX_BACKOFF_MS = 30_000;

export class PodRunner {
  private containers: ContainerState[] = [];
  private timers: NodeJS.Timeout[] = [];
  private stopping = false;
  private statusDirty = true;
  private statusWriting = false;
  /** The init container running now (terminate() stops it too). */
  private initChild?: ChildProcess;
  readonly key: string;

  constructor(
    private pod: V1Pod,
    private readonly deps: PodRunnerDeps,
  ) {
    this.key = `${pod.metadata?.namespace}/${pod.metadata?.name}`;
  }

  get uid(): string | undefined {
    return this.pod.metadata?.uid;
  }

  /** Pids of the running containers (for failure tests that kill one). */
  get pids(): number[] {
    return this.containers.flatMap((c) => (c.child?.pid ? [c.child.pid] : []));
  }

  async start(): Promise<void> {
    fs.mkdirSync(this.deps.podDir, { recursive: true });
    const mounts = await this.materializeVolumes();
    for (const init of this.pod.spec?.initContainers ?? []) {
      if (this.stopping) return;
      const code = await this.runToCompletion(init, mounts);
      // Deleted while an init container ran (a download, say): start nothing, and no probe or status timers that
      // terminate() could no longer clear.
      if (this.stopping) return;
      if (code !== 0) {
        this.deps.log('init container failed', { pod: this.key, container: init.name, code });
        this.containers = (this.pod.spec?.containers ?? []).map((spec) => ({
          spec,
          ready: false,
          restarts: 0,
          probeFailures: 0,
          livenessFailures: 0,
          started: false,
          startupFailures: 0,
          lastProbeMs: {},
          waiting: { reason: 'Init:Error', message: `init container ${init.name} exited ${code}` },
        }));
        this.markDirty();
        return;
      }
    }
    if (this.stopping) return;
    this.containers = (this.pod.spec?.containers ?? []).map((spec) => ({
      spec,
      ready: false,
      restarts: 0,
      probeFailures: 0,
      livenessFailures: 0,
      started: false,
      startupFailures: 0,
      lastProbeMs: {},
    }));
    for (const c of this.containers) this.launch(c, mounts);
    this.timers.push(setInterval(() => void this.probeAll(), 1000));
    this.timers.push(setInterval(() => void this.flushStatus(), 500));
    this.markDirty();
    await this.flushStatus();
  }

  /** Kubelet-style termination: SIGTERM, wait up to the grace period, SIGKILL; then the pod object is removed. */
  async terminate(graceSeconds: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const t of this.timers) clearInterval(t);
    for (const c of this.containers) if (c.restartTimer) clearTimeout(c.restartTimer);
    await Promise.all(
      [this.initChild, ...this.containers.map((c) => c.child)].map((child) => stopChild(child, graceSeconds * 1000)),
    );
  }

  private mountMap = new Map<string, string>();

  private async materializeVolumes(): Promise<Map<string, string>> {
    const ns = this.pod.metadata?.namespace ?? 'default';
    const volumeDirs = new Map<string, string>();
    for (const v of this.pod.spec?.volumes ?? []) {
      const dir = path.join(this.deps.podDir, 'volumes', v.name);
      if (v.hostPath) {
        const local = this.deps.hostPath?.(v.hostPath.path) ?? v.hostPath.path;
        if (v.hostPath.type === 'DirectoryOrCreate') fs.mkdirSync(local, { recursive: true });
        volumeDirs.set(v.name, local);
        continue;
      }
      fs.mkdirSync(dir, { recursive: true });
      if (v.configMap) {
        const cm = await this.deps.core.readNamespacedConfigMap({ name: v.configMap.name as string, namespace: ns });
        for (const [k, val] of Object.entries(cm.data ?? {})) fs.writeFileSync(path.join(dir, k), val);
      } else if (v.secret) {
        const s = await this.deps.core.readNamespacedSecret({ name: v.secret.secretName as string, namespace: ns });
        for (const [k, val] of Object.entries(s.data ?? {}))
          fs.writeFileSync(path.join(dir, k), Buffer.from(val, 'base64'));
      }
      volumeDirs.set(v.name, dir);
    }
    return volumeDirs;
  }

  /** Local path for each mountPath of the container: processes cannot mount, so paths in args and env are rewritten. */
  private mountsFor(container: V1Container, volumeDirs: Map<string, string>): [string, string][] {
    const out: [string, string][] = [];
    for (const m of container.volumeMounts ?? []) {
      const dir = volumeDirs.get(m.name);
      if (dir) out.push([m.mountPath, m.subPath ? path.join(dir, m.subPath) : dir]);
    }
    return out.sort((a, b) => b[0].length - a[0].length);
  }

  private rewrite(value: string, mounts: [string, string][]): string {
    for (const [from, to] of mounts) {
      if (value === from || value.startsWith(`${from}/`)) return to + value.slice(from.length);
      value = value.split(`=${from}`).join(`=${to}`);
    }
    return value;
  }

  private async envFor(container: V1Container, mounts: [string, string][]): Promise<NodeJS.ProcessEnv> {
    const ns = this.pod.metadata?.namespace ?? 'default';
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      NODE_PATH: process.env.NODE_PATH,
      HOSTNAME: this.pod.metadata?.name,
      POD_IP: this.deps.podIP,
      // Pods share this machine's network namespace: our own processes bind to their pod IP, not 0.0.0.0.
      MODELSERVE_HOST: this.deps.podIP,
      MODELSERVE_LOCAL_NODE_AGENT: '1',
    };
    const field = (p: string | undefined): string | undefined =>
      ({
        'status.podIP': this.deps.podIP,
        'status.hostIP': this.deps.hostIP,
        'metadata.name': this.pod.metadata?.name,
        'metadata.namespace': ns,
        'metadata.uid': this.pod.metadata?.uid,
        'spec.nodeName': this.pod.spec?.nodeName,
        'spec.serviceAccountName': this.pod.spec?.serviceAccountName,
      })[p ?? ''];
    for (const e of container.env ?? []) {
      let value = e.value;
      const from = e.valueFrom;
      if (from?.fieldRef) value = field(from.fieldRef.fieldPath);
      else if (from?.resourceFieldRef) value = this.resourceField(from.resourceFieldRef);
      else if (from?.configMapKeyRef) {
        const cm = await this.deps.core.readNamespacedConfigMap({
          name: from.configMapKeyRef.name as string,
          namespace: ns,
        });
        value = cm.data?.[from.configMapKeyRef.key];
      } else if (from?.secretKeyRef) {
        const s = await this.deps.core.readNamespacedSecret({ name: from.secretKeyRef.name as string, namespace: ns });
        const raw = s.data?.[from.secretKeyRef.key];
        value = raw === undefined ? undefined : Buffer.from(raw, 'base64').toString();
      }
      if (value !== undefined) env[e.name] = this.rewrite(value, mounts);
    }
    // The GPUs of these nodes are fake: the engine runs on its CPU backend whatever backend the pod asks for.
    env.MODELSERVE_BACKEND = 'cpu';
    return env;
  }

  /** A container's memory request/limit in bytes (divisor 1), as the kubelet fills `resourceFieldRef`; unset → absent
   * (the kubelet would give the node's allocatable, which for these fake nodes means nothing). */
  private resourceField(ref: V1ResourceFieldSelector): string | undefined {
    const container = this.pod.spec?.containers.find((c) => c.name === (ref.containerName ?? c.name));
    const [kind, resource] = ref.resource.split('.') as ['limits' | 'requests', string];
    const quantity = container?.resources?.[kind]?.[resource];
    if (quantity === undefined || resource !== 'memory') return undefined;
    return String(parseBytes(quantity, `resourceFieldRef ${ref.resource}`));
  }

  private async runToCompletion(container: V1Container, volumeDirs: Map<string, string>): Promise<number> {
    const mounts = this.mountsFor(container, volumeDirs);
    const cmd = localCommand(container, this.deps.mappings);
    if ('error' in cmd) return 127;
    const env = await this.envFor(container, mounts);
    const logFile = path.join(this.deps.podDir, `${container.name}.log`);
    const out = fs.openSync(logFile, 'a');
    const [command, args] = this.deps.wrap(
      cmd.command,
      cmd.args.map((a) => this.rewrite(a, mounts)),
    );
    const child = spawn(command, args, { env, stdio: ['ignore', out, out] });
    fs.closeSync(out);
    this.initChild = child;
    return new Promise((resolve) =>
      child.once('exit', (code) => {
        this.initChild = undefined;
        resolve(code ?? 1);
      }),
    );
  }

  private launch(c: ContainerState, volumeDirs: Map<string, string>): void {
    if (this.stopping) return;
    void (async () => {
      const mounts = this.mountsFor(c.spec, volumeDirs);
      const cmd = localCommand(c.spec, this.deps.mappings);
      if ('error' in cmd) {
        c.waiting = { reason: 'ErrImageNeverPull', message: cmd.error };
        this.markDirty();
        return;
      }
      const env = await this.envFor(c.spec, mounts);
      const logFile = path.join(this.deps.podDir, `${c.spec.name}.log`);
      const out = fs.openSync(logFile, 'a');
      fs.writeSync(out, `# ${new Date().toISOString()} start #${c.restarts}: ${cmd.command} ${cmd.args.join(' ')}\n`);
      const [command, args] = this.deps.wrap(
        cmd.command,
        cmd.args.map((a) => this.rewrite(a, mounts)),
      );
      const child = spawn(command, args, { env, stdio: ['ignore', out, out], cwd: this.deps.podDir });
      fs.closeSync(out);
      c.child = child;
      c.startedAt = new Date().toISOString();
      c.waiting = undefined;
      c.terminated = undefined;
      c.ready = !c.spec.readinessProbe;
      c.probeFailures = 0;
      c.livenessFailures = 0;
      c.started = !c.spec.startupProbe;
      c.startupFailures = 0;
      c.lastProbeMs = {};
      this.markDirty();
      this.deps.log('container started', {
        pod: this.key,
        container: c.spec.name,
        pid: child.pid,
        ip: this.deps.podIP,
      });
      child.once('exit', (code, signal) => {
        c.child = undefined;
        c.ready = false;
        const exitCode = code ?? (signal ? 137 : 1);
        c.terminated = {
          exitCode,
          reason: exitCode === 0 ? 'Completed' : 'Error',
          finishedAt: new Date().toISOString(),
          // As the kubelet: with FallbackToLogsOnError a failed container's last log lines become its message.
          ...(exitCode !== 0 && c.spec.terminationMessagePolicy === 'FallbackToLogsOnError'
            ? { message: logTail(logFile) }
            : {}),
        };
        this.deps.log('container exited', { pod: this.key, container: c.spec.name, code: exitCode, signal });
        this.markDirty();
        if (this.stopping) return;
        const policy = this.pod.spec?.restartPolicy ?? 'Always';
        if (policy === 'Never' || (policy === 'OnFailure' && exitCode === 0)) return;
        const backoff = Math.min(1000 * 2 ** c.restarts, MAX_BACKOFF_MS);
        c.restarts += 1;
        c.waiting = {
          reason: c.restarts > 1 ? 'CrashLoopBackOff' : 'ContainerCreating',
          message: `back-off ${backoff / 1000}s restarting failed container ${c.spec.name}`,
        };
        c.restartTimer = setTimeout(() => this.launch(c, volumeDirs), backoff);
      });
    })().catch((err: unknown) => {
      c.waiting = { reason: 'CreateContainerError', message: (err as Error).message };
      this.markDirty();
    });
  }

  private async probeAll(): Promise<void> {
    for (const c of this.containers) {
      if (!c.child) continue;
      if (c.spec.readinessProbe) {
        const ok = await this.probe(c.spec.readinessProbe, c.spec);
        const threshold = c.spec.readinessProbe.failureThreshold ?? 3;
        c.probeFailures = ok ? 0 : c.probeFailures + 1;
        const ready = ok ? true : c.probeFailures >= threshold ? false : c.ready;
        if (ready !== c.ready) {
          c.ready = ready;
          this.markDirty();
        }
      }
      // As the kubelet: liveness waits for the startup probe to pass (a slow start on a loaded machine is not a hang),
      // and each of the two probes runs every periodSeconds, so failureThreshold x periodSeconds is the allowance.
      if (!c.started && c.spec.startupProbe) {
        if (!this.due(c, 'startup', c.spec.startupProbe)) continue;
        const ok = await this.probe(c.spec.startupProbe, c.spec);
        c.startupFailures = ok ? 0 : c.startupFailures + 1;
        if (ok) c.started = true;
        else if (c.startupFailures >= (c.spec.startupProbe.failureThreshold ?? 3)) {
          this.deps.log('startup probe failed; restarting', { pod: this.key, container: c.spec.name });
          c.startupFailures = 0;
          c.child.kill('SIGKILL');
        }
        continue;
      }
      if (c.spec.livenessProbe && c.startedAt) {
        const initial = (c.spec.livenessProbe.initialDelaySeconds ?? 0) * 1000;
        if (Date.now() - Date.parse(c.startedAt) < initial) continue;
        if (!this.due(c, 'liveness', c.spec.livenessProbe)) continue;
        const ok = await this.probe(c.spec.livenessProbe, c.spec);
        c.livenessFailures = ok ? 0 : c.livenessFailures + 1;
        if (c.livenessFailures >= (c.spec.livenessProbe.failureThreshold ?? 3)) {
          this.deps.log('liveness probe failed; restarting', { pod: this.key, container: c.spec.name });
          c.livenessFailures = 0;
          c.child.kill('SIGKILL');
        }
      }
    }
  }

  /** True (and the time noted) when the probe's periodSeconds have passed since it last ran. */
  private due(c: ContainerState, kind: 'startup' | 'liveness', probe: V1Probe): boolean {
    const now = Date.now();
    if (now - (c.lastProbeMs[kind] ?? 0) < (probe.periodSeconds ?? 10) * 1000) return false;
    c.lastProbeMs[kind] = now;
    return true;
  }

  private async probe(probe: V1Probe, container: V1Container): Promise<boolean> {
    const get = probe.httpGet;
    if (!get) return true;
    let port = get.port as number | string;
    if (typeof port === 'string' && !/^\d+$/.test(port))
      port = container.ports?.find((p) => p.name === port)?.containerPort ?? 0;
    const url = `http://${this.deps.podIP}:${port}${get.path ?? '/'}`;
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout((probe.timeoutSeconds ?? 1) * 1000) });
      await res.arrayBuffer();
      return res.status >= 200 && res.status < 400;
    } catch {
      return false;
    }
  }

  /** Succeeded or Failed once no container will run again (restartPolicy Never, or OnFailure after success): Jobs. */
  private terminalPhase(): 'Succeeded' | 'Failed' | undefined {
    const policy = this.pod.spec?.restartPolicy ?? 'Always';
    if (policy === 'Always' || this.containers.length === 0) return undefined;
    if (policy === 'Never' && this.containers.every((c) => c.waiting?.reason === 'Init:Error')) return 'Failed';
    const finished = this.containers.every(
      (c) => !c.child && c.terminated && (policy === 'Never' || c.terminated.exitCode === 0),
    );
    if (!finished) return undefined;
    return this.containers.every((c) => c.terminated?.exitCode === 0) ? 'Succeeded' : 'Failed';
  }

  private markDirty(): void {
    this.statusDirty = true;
  }

  private containerStatus(c: ContainerState): V1ContainerStatus {
    const state = c.child
      ? { running: { startedAt: c.startedAt as unknown as Date } }
      : c.waiting
        ? { waiting: c.waiting }
        : c.terminated
          ? { terminated: { ...c.terminated, finishedAt: c.terminated.finishedAt as unknown as Date } }
          : { waiting: { reason: 'ContainerCreating' } };
    return {
      name: c.spec.name,
      image: c.spec.image ?? '',
      imageID: '',
      ready: c.ready,
      started: c.child !== undefined,
      restartCount: c.restarts,
      state,
      lastState:
        c.terminated && c.child
          ? { terminated: { ...c.terminated, finishedAt: c.terminated.finishedAt as unknown as Date } }
          : {},
    };
  }

  /** Writes the pod status when something changed (read-modify-write, retried on conflict). */
  async flushStatus(): Promise<void> {
    if (!this.statusDirty || this.statusWriting || this.stopping) return;
    this.statusWriting = true;
    this.statusDirty = false;
    try {
      const name = this.pod.metadata?.name as string;
      const namespace = this.pod.metadata?.namespace as string;
      const current = await this.deps.core.readNamespacedPod({ name, namespace });
      if (current.metadata?.uid !== this.uid || current.metadata?.deletionTimestamp) return;
      const now = new Date();
      const allReady = this.containers.length > 0 && this.containers.every((c) => c.ready);
      const anyRunning = this.containers.some((c) => c.child);
      const prev = new Map((current.status?.conditions ?? []).map((c) => [c.type, c]));
      const cond = (type: string, ok: boolean) => ({
        type,
        status: ok ? 'True' : 'False',
        lastTransitionTime: (prev.get(type)?.status === (ok ? 'True' : 'False')
          ? prev.get(type)?.lastTransitionTime
          : now) as Date,
      });
      current.status = {
        ...current.status,
        phase:
          this.terminalPhase() ?? (anyRunning || this.containers.some((c) => c.restarts > 0) ? 'Running' : 'Pending'),
        hostIP: this.deps.hostIP,
        hostIPs: [{ ip: this.deps.hostIP }],
        podIP: this.deps.podIP,
        podIPs: [{ ip: this.deps.podIP }],
        startTime: current.status?.startTime ?? now,
        conditions: [
          prev.get('PodScheduled') ?? { type: 'PodScheduled', status: 'True', lastTransitionTime: now },
          cond('Initialized', !this.containers.some((c) => c.waiting?.reason === 'Init:Error')),
          cond('ContainersReady', allReady),
          cond('Ready', allReady),
        ],
        containerStatuses: this.containers.map((c) => this.containerStatus(c)),
      };
      await this.deps.core.replaceNamespacedPodStatus({ name, namespace, body: current });
      this.pod = current;
    } catch (err) {
      this.statusDirty = true;
      const code = (err as { code?: number }).code;
      if (code !== 409 && code !== 404)
        this.deps.log('status update failed', { pod: this.key, error: (err as Error).message });
    } finally {
      this.statusWriting = false;
    }
  }
}

/** The last 80 lines (at most 2 KiB) of a log file, as the kubelet's FallbackToLogsOnError takes them. */
function logTail(file: string): string {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.split('\n').slice(-81).join('\n').slice(-2048).trim();
  } catch {
    return '';
  }
}

async function stopChild(child: ChildProcess | undefined, graceMs: number): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}
