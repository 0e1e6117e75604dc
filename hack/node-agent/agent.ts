// The local node agent: a development stand-in for the kubelet on a machine without containers or GPUs. It registers
// fake GPU nodes and runs the pods bound to them as local processes, each with its own loopback address as pod IP.
// Used by `make demo` and the end-to-end tests; not for production.
import path from 'node:path';

import {
  CoordinationV1Api,
  CoreV1Api,
  KubeConfig,
  makeInformer,
  type Informer,
  type V1Pod,
} from '@kubernetes/client-node';

import { defaultImageMappings, type ImageMapping } from './image-map.js';
import { NodeRegistrar, type LocalNode } from './node-registrar.js';
import { createPodNetwork, type PodNetwork } from './pod-network.js';
import { PodRunner } from './pod-runner.js';

export interface NodeAgentOptions {
  kubeConfig: KubeConfig;
  /** Folder for per-pod logs and materialised volumes. */
  stateDir: string;
  repoRoot: string;
  nodes?: number;
  gpusPerNode?: number;
  namePrefix?: string;
  mappings?: ImageMapping[];
  /**
   * hostPath prefixes that are node-local (a node cache such as /var/lib/modelserve/weights): each fake node keeps its
   * own copy under stateDir/nodes/<node>/, as separate machines would. Other hostPaths are this machine's paths.
   */
  nodeLocalHostPaths?: string[];
  log?: (msg: string, fields?: Record<string, unknown>) => void;
}

export class NodeAgent {
  readonly nodes: LocalNode[];
  private readonly core: CoreV1Api;
  private readonly registrar: NodeRegistrar;
  private readonly runners = new Map<string, PodRunner>(); // by pod uid
  private readonly terminating = new Set<string>();
  private informer: Informer<V1Pod> | undefined;
  private readonly log: (msg: string, fields?: Record<string, unknown>) => void;
  private readonly network: PodNetwork;
  private readonly usedIPs = new Map<string, string>(); // uid → ip
  private stopped = false;

  constructor(private readonly opts: NodeAgentOptions) {
    this.log =
      opts.log ??
      ((msg, fields) =>
        process.stdout.write(
          `${JSON.stringify({ time: new Date().toISOString(), component: 'node-agent', msg, ...fields })}\n`,
        ));
    this.network = createPodNetwork();
    const prefix = opts.namePrefix ?? 'local-gpu';
    this.nodes = Array.from({ length: opts.nodes ?? 2 }, (_, i) => ({
      name: `${prefix}-${i}`,
      hostIP: this.network.hostIP(i),
      gpus: opts.gpusPerNode ?? 1,
    }));
    this.core = opts.kubeConfig.makeApiClient(CoreV1Api);
    this.registrar = new NodeRegistrar(
      this.core,
      opts.kubeConfig.makeApiClient(CoordinationV1Api),
      this.nodes,
      this.log,
    );
  }

  /** Pod IP → pod key of the running pods, for tests and the demo display. */
  podIPs(): Map<string, string> {
    return new Map([...this.runners.values()].map((r) => [this.usedIPs.get(r.uid ?? '') ?? '', r.key]));
  }

  /** Pod IP → pids of its running containers. */
  podPids(): Map<string, number[]> {
    return new Map([...this.runners.values()].map((r) => [this.usedIPs.get(r.uid ?? '') ?? '', r.pids]));
  }

  async start(): Promise<void> {
    await this.registrar.register();
    const names = new Set(this.nodes.map((n) => n.name));
    this.informer = makeInformer(this.opts.kubeConfig, '/api/v1/pods', () => this.core.listPodForAllNamespaces());
    const onPod = (pod: V1Pod) => {
      if (!names.has(pod.spec?.nodeName ?? '')) return;
      void this.sync(pod).catch((err: unknown) =>
        this.log('pod sync failed', { pod: pod.metadata?.name, error: (err as Error).message }),
      );
    };
    this.informer.on('add', onPod);
    this.informer.on('update', onPod);
    this.informer.on('delete', (pod) => {
      const uid = pod.metadata?.uid ?? '';
      const runner = this.runners.get(uid);
      if (runner) void this.finish(uid, runner, 0, false);
    });
    // The informer reports a broken watch as an error and stops; restart it unless we are the ones stopping.
    this.informer.on('error', () => setTimeout(() => void (this.stopped ? undefined : this.informer?.start()), 1000));
    await this.informer.start();
  }

  private async sync(pod: V1Pod): Promise<void> {
    const uid = pod.metadata?.uid ?? '';
    const runner = this.runners.get(uid);
    if (pod.metadata?.deletionTimestamp) {
      if (runner)
        await this.finish(
          uid,
          runner,
          pod.metadata.deletionGracePeriodSeconds ?? pod.spec?.terminationGracePeriodSeconds ?? 30,
          true,
        );
      else if (!this.terminating.has(uid)) await this.forceDelete(pod);
      return;
    }
    if (runner || this.terminating.has(uid) || pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed')
      return;
    const node = this.nodes.find((n) => n.name === pod.spec?.nodeName);
    if (!node) return;
    const { podIP, wrap } = this.network.attach(uid, this.nodes.indexOf(node));
    this.usedIPs.set(uid, podIP);
    const created = new PodRunner(pod, {
      core: this.core,
      mappings: this.opts.mappings ?? defaultImageMappings(this.opts.repoRoot),
      podDir: path.join(this.opts.stateDir, `${pod.metadata?.namespace}_${pod.metadata?.name}_${uid.slice(0, 8)}`),
      podIP,
      hostIP: node.hostIP,
      hostPath: (p) => this.nodeHostPath(node.name, p),
      wrap,
      log: this.log,
    });
    this.runners.set(uid, created);
    await created.start();
  }

  private async finish(uid: string, runner: PodRunner, graceSeconds: number, deleteObject: boolean): Promise<void> {
    if (this.terminating.has(uid)) return;
    this.terminating.add(uid);
    this.log('terminating pod', { pod: runner.key, graceSeconds });
    await runner.terminate(graceSeconds);
    this.log('pod terminated', { pod: runner.key, deleteObject });
    this.runners.delete(uid);
    this.usedIPs.delete(uid);
    this.network.detach(uid);
    if (deleteObject) {
      const [namespace, name] = runner.key.split('/') as [string, string];
      await this.core
        .deleteNamespacedPod({
          name,
          namespace,
          gracePeriodSeconds: 0,
          body: { gracePeriodSeconds: 0, preconditions: { uid } },
        })
        .then(() => this.log('pod deleted', { pod: runner.key }))
        .catch((err: unknown) => this.log('pod delete failed', { pod: runner.key, error: (err as Error).message }));
    }
    this.terminating.delete(uid);
  }

  private async forceDelete(pod: V1Pod): Promise<void> {
    const name = pod.metadata?.name as string;
    const namespace = pod.metadata?.namespace as string;
    await this.core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 }).catch(() => undefined);
  }

  /** Terminates every pod (honouring grace periods up to `maxGraceSeconds`) and unregisters the nodes. */
  async stop(maxGraceSeconds = 10): Promise<void> {
    this.stopped = true;
    await this.informer?.stop();
    await Promise.all([...this.runners.entries()].map(([uid, r]) => this.finish(uid, r, maxGraceSeconds, false)));
    await this.registrar.unregister();
    this.network.close();
  }

  /** Where hostPath `p` of pods on `node` lives on this machine (see nodeLocalHostPaths). */
  nodeHostPath(node: string, p: string): string {
    const local = (this.opts.nodeLocalHostPaths ?? []).some((prefix) => p === prefix || p.startsWith(`${prefix}/`));
    return local ? path.join(this.opts.stateDir, 'nodes', node, p) : p;
  }

  /** 'netns' (each pod its own network namespace and address) or 'loopback' (no root: 127.x pod IPs). */
  get networkMode(): string {
    return this.network.mode;
  }
}
