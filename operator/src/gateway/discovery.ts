// Where each model's workers are. A ModelDeployment names the model (spec.model.name) and owns a Service of its own
// name (see ../controller/plan.ts); the Service's EndpointSlices list the worker pods with their readiness. The
// gateway watches both and routes only to endpoints that are ready and not terminating, so a pod being removed takes
// no new requests while its streams finish. A static map (--static-models) replaces all this for local use.
import type { V1EndpointSlice } from '@kubernetes/client-node';
import type { ModelDeployment } from '../api/modelDeployment.js';
import { Informer } from '../k8s/informer.js';
import type { Resource } from '../k8s/resources.js';
import type { KubeClient } from '../k8s/rest.js';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

export interface ModelTarget {
  model: string;
  /** Namespace of the (first) ModelDeployment serving the model: the autoscaler's queue key uses it. */
  namespace: string;
  /** Ready, non-terminating endpoints as host:port. */
  endpoints: string[];
}

export interface Discovery {
  /** Resolves once the first lists are in. */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Every model that is deployed (possibly with zero ready endpoints), sorted by id. */
  targets(): ModelTarget[];
  target(model: string): ModelTarget | undefined;
  /** Called after any change of models or endpoints. */
  onChange(listener: () => void): void;
}

const endpointSlices: Resource = {
  group: 'discovery.k8s.io',
  version: 'v1',
  plural: 'endpointslices',
  kind: 'EndpointSlice',
};
const modelDeployments: Resource = {
  group: 'serving.modelserve.dev',
  version: 'v1alpha1',
  plural: 'modeldeployments',
  kind: 'ModelDeployment',
};

const hostPort = (host: string, port: number): string => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);

/** Routable endpoints of one Service's slices: ready (unset counts as ready), serving, not terminating. */
export function routableEndpoints(slices: readonly V1EndpointSlice[], portName = 'http'): string[] {
  const out = new Set<string>();
  for (const slice of slices) {
    const port =
      slice.ports?.find((p) => p.name === portName) ?? (slice.ports?.length === 1 ? slice.ports[0] : undefined);
    if (!port?.port) continue;
    for (const ep of slice.endpoints ?? []) {
      const c = ep.conditions ?? {};
      if (c.ready === false || c.serving === false || c.terminating === true) continue;
      const address = ep.addresses[0];
      if (address) out.add(hostPort(address, port.port));
    }
  }
  return [...out].sort();
}

/** model id → the ModelDeployments (namespace/name = their Services) serving it. */
export function servicesByModel(mdeps: readonly ModelDeployment[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const md of mdeps) {
    const model = md.spec?.model?.name;
    if (!model || md.metadata?.deletionTimestamp) continue;
    const svc = `${md.metadata.namespace ?? ''}/${md.metadata.name ?? ''}`;
    out.set(model, [...(out.get(model) ?? []), svc].sort());
  }
  return out;
}

export class KubeDiscovery implements Discovery {
  private readonly mdeps: Informer<ModelDeployment>;
  private readonly slices: Informer<V1EndpointSlice>;
  private readonly listeners: (() => void)[] = [];
  private snapshot = new Map<string, ModelTarget>();

  constructor(client: KubeClient, opts: { namespace?: string; resyncMs: number; onError: (err: unknown) => void }) {
    const common = { namespace: opts.namespace, resyncMs: opts.resyncMs, onError: opts.onError };
    this.mdeps = new Informer<ModelDeployment>(client, modelDeployments, common);
    this.slices = new Informer<V1EndpointSlice>(client, endpointSlices, {
      ...common,
      labelSelector: SERVICE_NAME_LABEL,
    });
    const changed = (event: string) => {
      if (event === 'resync') return;
      this.rebuild();
    };
    this.mdeps.on(changed);
    this.slices.on(changed);
  }

  async start(): Promise<void> {
    this.mdeps.start();
    this.slices.start();
    await Promise.all([this.mdeps.waitForSync(), this.slices.waitForSync()]);
    this.rebuild();
  }

  async stop(): Promise<void> {
    await Promise.all([this.mdeps.stop(), this.slices.stop()]);
  }

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  targets(): ModelTarget[] {
    return [...this.snapshot.values()].sort((a, b) => (a.model < b.model ? -1 : a.model > b.model ? 1 : 0));
  }

  target(model: string): ModelTarget | undefined {
    return this.snapshot.get(model);
  }

  private rebuild(): void {
    if (!this.mdeps.hasSynced() || !this.slices.hasSynced()) return;
    const slicesByService = new Map<string, V1EndpointSlice[]>();
    for (const s of this.slices.list()) {
      const svc = `${s.metadata?.namespace ?? ''}/${s.metadata?.labels?.[SERVICE_NAME_LABEL] ?? ''}`;
      slicesByService.set(svc, [...(slicesByService.get(svc) ?? []), s]);
    }
    const next = new Map<string, ModelTarget>();
    for (const [model, services] of servicesByModel(this.mdeps.list())) {
      const endpoints = new Set<string>();
      for (const svc of services) for (const e of routableEndpoints(slicesByService.get(svc) ?? [])) endpoints.add(e);
      next.set(model, {
        model,
        namespace: (services[0] as string).split('/')[0] as string,
        endpoints: [...endpoints].sort(),
      });
    }
    this.snapshot = next;
    for (const l of this.listeners) l();
  }
}

/**
 * A fixed model → workers map, `model=http://host:port,http://host:port;model2=...`, for running without Kubernetes
 * (local use, benchmarks). Every listed endpoint is taken as ready.
 */
export class StaticDiscovery implements Discovery {
  private readonly map = new Map<string, ModelTarget>();

  constructor(spec: string, namespace = 'default') {
    for (const part of spec
      .split(';')
      .map((p) => p.trim())
      .filter(Boolean)) {
      const eq = part.indexOf('=');
      if (eq <= 0) throw new Error(`--static-models: expected model=url[,url...], got ${JSON.stringify(part)}`);
      const model = part.slice(0, eq).trim();
      const endpoints = part
        .slice(eq + 1)
        .split(',')
        .map((u) => u.trim())
        .filter(Boolean)
        .map((u) => {
          const url = new URL(u.includes('://') ? u : `http://${u}`);
          if (url.protocol !== 'http:') throw new Error(`--static-models: ${model}: only http:// workers, got ${u}`);
          return url.port ? url.host : `${url.host}:80`;
        });
      this.map.set(model, { model, namespace, endpoints: endpoints.sort() });
    }
  }

  start(): Promise<void> {
    return Promise.resolve();
  }

  stop(): Promise<void> {
    return Promise.resolve();
  }

  onChange(): void {}

  targets(): ModelTarget[] {
    return [...this.map.values()];
  }

  target(model: string): ModelTarget | undefined {
    return this.map.get(model);
  }
}
