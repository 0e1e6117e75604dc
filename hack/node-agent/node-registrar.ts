// Registers the agent's nodes and keeps them alive the way a kubelet does: a Lease in kube-node-lease renewed every
// few seconds, and the Ready condition refreshed now and then.
import { CoordinationV1Api, CoreV1Api, V1MicroTime, type V1Node } from '@kubernetes/client-node';

export interface LocalNode {
  name: string;
  hostIP: string;
  gpus: number;
}

export function localNodeObject(n: LocalNode): V1Node {
  const capacity = {
    cpu: '32',
    memory: '128Gi',
    pods: '64',
    'nvidia.com/gpu': String(n.gpus),
    'ephemeral-storage': '100Gi',
  };
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: n.name,
      labels: {
        'kubernetes.io/hostname': n.name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        'nvidia.com/gpu.present': 'true',
        'modelserve.dev/local-node-agent': 'true',
      },
    },
    status: { capacity, allocatable: capacity },
  };
}

export class NodeRegistrar {
  private timer: NodeJS.Timeout | undefined;
  private ticks = 0;

  constructor(
    private readonly core: CoreV1Api,
    private readonly coordination: CoordinationV1Api,
    readonly nodes: LocalNode[],
    private readonly log: (msg: string, fields?: Record<string, unknown>) => void,
  ) {}

  async register(): Promise<void> {
    for (const n of this.nodes) {
      try {
        await this.core.createNode({ body: localNodeObject(n) });
      } catch (err) {
        if ((err as { code?: number }).code !== 409) throw err;
      }
      await this.renewLease(n);
      await this.updateStatus(n);
    }
    this.timer = setInterval(() => void this.heartbeat(), 5_000);
  }

  private async heartbeat(): Promise<void> {
    this.ticks += 1;
    for (const n of this.nodes) {
      try {
        await this.renewLease(n);
        if (this.ticks % 4 === 0) await this.updateStatus(n);
      } catch (err) {
        this.log('node heartbeat failed', { node: n.name, error: (err as Error).message });
      }
    }
  }

  private async renewLease(n: LocalNode): Promise<void> {
    const now = new V1MicroTime();
    try {
      const lease = await this.coordination.readNamespacedLease({ name: n.name, namespace: 'kube-node-lease' });
      lease.spec = { ...lease.spec, holderIdentity: n.name, leaseDurationSeconds: 40, renewTime: now };
      await this.coordination.replaceNamespacedLease({ name: n.name, namespace: 'kube-node-lease', body: lease });
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
      await this.coordination.createNamespacedLease({
        namespace: 'kube-node-lease',
        body: {
          metadata: { name: n.name },
          spec: { holderIdentity: n.name, leaseDurationSeconds: 40, renewTime: now },
        },
      });
    }
  }

  /** Read-modify-write of the node status; the node lifecycle controller writes the same object (taints), so a
   * conflict is normal and retried with a fresh read. */
  private async updateStatus(n: LocalNode): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.writeStatus(n);
      } catch (err) {
        if ((err as { code?: number }).code !== 409 || attempt >= 10) throw err;
        await new Promise((r) => setTimeout(r, 50 * attempt));
      }
    }
  }

  private async writeStatus(n: LocalNode): Promise<void> {
    const node = await this.core.readNode({ name: n.name });
    const now = new Date();
    const since = node.metadata?.creationTimestamp ?? now;
    const condition = (type: string, status: string, reason: string, message: string) => ({
      type,
      status,
      reason,
      message,
      lastHeartbeatTime: now,
      lastTransitionTime: since,
    });
    node.status = {
      ...node.status,
      phase: 'Running',
      conditions: [
        condition('Ready', 'True', 'LocalNodeAgentReady', 'pods run as local processes by hack/node-agent'),
        condition('MemoryPressure', 'False', 'LocalNodeAgentReady', ''),
        condition('DiskPressure', 'False', 'LocalNodeAgentReady', ''),
        condition('PIDPressure', 'False', 'LocalNodeAgentReady', ''),
        condition('NetworkUnavailable', 'False', 'LocalNodeAgentReady', ''),
      ],
      addresses: [
        { type: 'InternalIP', address: n.hostIP },
        { type: 'Hostname', address: n.name },
      ],
      nodeInfo: {
        architecture: 'amd64',
        operatingSystem: 'linux',
        kubeletVersion: 'modelserve-node-agent',
        kubeProxyVersion: '',
        containerRuntimeVersion: 'local-process://1',
        kernelVersion: '',
        osImage: 'local',
        machineID: '',
        bootID: '',
        systemUUID: '',
      },
    };
    await this.core.replaceNodeStatus({ name: n.name, body: node });
  }

  async unregister(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    for (const n of this.nodes) {
      await this.core.deleteNode({ name: n.name }).catch(() => undefined);
      await this.coordination
        .deleteNamespacedLease({ name: n.name, namespace: 'kube-node-lease' })
        .catch(() => undefined);
    }
  }
}
