// plan(): the pure heart of the reconciler. From a ModelDeployment (as served, defaults filled) and the operator's
// configuration it produces the four objects the operator owns — engine ConfigMap, Deployment, Service,
// PodDisruptionBudget — as complete server-side-apply documents. No I/O here, so every rule is unit-tested.
import { createHash } from 'node:crypto';
import type {
  V1ConfigMap,
  V1Container,
  V1Deployment,
  V1EnvVar,
  V1OwnerReference,
  V1PodDisruptionBudget,
  V1Service,
  V1Volume,
  V1VolumeMount,
} from '@kubernetes/client-node';
import {
  ANNOTATION_CONFIG_HASH,
  ANNOTATION_SPEC_HASH,
  API_VERSION,
  KIND,
  LABEL_COMPONENT,
  LABEL_INSTANCE,
  LABEL_MANAGED_BY,
  LABEL_MODEL,
  LABEL_NAME,
  LABEL_PART_OF,
  MANAGED_BY,
  WORKER_APP_NAME,
  type ModelDeployment,
} from '../api/modelDeployment.js';
import { ANNOTATION_TEMPLATE_HASH, LABEL_ROLE, ROLE_SERVING, standbyReplicas } from './standby.js';
import { cacheTemplate } from '../weightcache/podTemplate.js';

export interface PlanConfig {
  /** Worker image when spec.worker.image is unset. */
  workerImage: string;
  /** Entry point of the worker container (the image's own when empty). */
  workerCommand: string[];
  /** Entry point of the init container that downloads http(s):// and hf:// sources into the weights volume. */
  fetchCommand: string[];
  /** DNS suffix of Services, for status.endpoint. */
  clusterDomain: string;
  /** Node-local weight cache root (spec.prewarm.nodeCache); the cache is off when unset. */
  weightCacheDir?: string;
  /** HF_ENDPOINT for the fetch init container of hf:// sources (the operator's --hf-endpoint, as for stagers). */
  hfEndpoint?: string;
  /** Secret (key `token`, optional) whose value the fetch init container of hf:// sources gets as HF_TOKEN. */
  hfTokenSecret?: string;
}

export const defaultPlanConfig: PlanConfig = {
  workerImage: 'ghcr.io/modelserve/worker:latest',
  // V8 heap flags: worker/src/gc.ts (a young generation and no memory reducer for a streaming server; a worker test
  // checks that they are the same as there).
  workerCommand: [
    'node',
    '--min-semi-space-size=16',
    '--max-semi-space-size=16',
    '--no-memory-reducer',
    'worker/dist/main.js',
  ],
  fetchCommand: ['node', 'worker/dist/fetch.js'],
  clusterDomain: 'cluster.local',
};

export interface Plan {
  configMap: V1ConfigMap;
  deployment: V1Deployment;
  service: V1Service;
  podDisruptionBudget: V1PodDisruptionBudget;
  /** Labels that select exactly this ModelDeployment's worker pods (serving and standby): the Deployment's selector. */
  selector: Record<string, string>;
  /** The serving pods only: the Service's selector, published as status.selector (scale subresource, HPA). */
  servingSelector: Record<string, string>;
  /** Standby pods kept beside spec.replicas (./standby.ts), and how many the maxGPUs budget dropped. */
  standby: { count: number; limited: number };
  endpoint: string;
}

export const WEIGHTS_PATH = '/models';
export const WORKER_CONTAINER = 'worker';
export const CONFIG_DIR = '/etc/modelserve';
export const ENGINE_CONFIG_FILE = 'engine.json';
export const SHA256_FILE = 'sha256.json';

export const configMapName = (mdepName: string): string => `${mdepName}-engine`;

/** Stable short hash of a JSON value (keys sorted), for change detection. */
export function hashOf(value: unknown): string {
  return createHash('sha256').update(stableStringify(value)).digest('hex').slice(0, 16);
}

function stableStringify(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableStringify).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableStringify(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** A label value (63 chars of [A-Za-z0-9._-], alphanumeric at both ends) standing for a model id such as org/name. */
export function labelValue(text: string): string {
  const cleaned = text
    .replace(/[^A-Za-z0-9._-]/g, '-')
    .slice(0, 63)
    .replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '');
  return cleaned;
}

export function selectorLabels(mdep: ModelDeployment): Record<string, string> {
  return { [LABEL_NAME]: WORKER_APP_NAME, [LABEL_INSTANCE]: mdep.metadata.name ?? '' };
}

export function selectorString(labels: Record<string, string>): string {
  return Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}

function commonLabels(mdep: ModelDeployment): Record<string, string> {
  return {
    ...selectorLabels(mdep),
    [LABEL_COMPONENT]: 'worker',
    [LABEL_PART_OF]: 'modelserve',
    [LABEL_MANAGED_BY]: MANAGED_BY,
    [LABEL_MODEL]: labelValue(mdep.spec.model.name),
  };
}

export function ownerReference(mdep: ModelDeployment): V1OwnerReference {
  return {
    apiVersion: API_VERSION,
    kind: KIND,
    name: mdep.metadata.name ?? '',
    uid: mdep.metadata.uid ?? '',
    controller: true,
    blockOwnerDeletion: true,
  };
}

/** How the weights reach the worker: volumes, where they mount, and an init container for remote sources. */
export interface WeightsPlan {
  volumes: V1Volume[];
  mount: V1VolumeMount;
  /** True when an init container must download the weights first. */
  fetch: boolean;
}

export function planWeights(source: string): WeightsPlan {
  const url = /^([a-z][a-z0-9+.-]*):\/\/(.*)$/.exec(source);
  if (!url) throw new Error(`spec.model.source: unsupported source ${JSON.stringify(source)}`);
  const [, scheme, rest] = url as unknown as [string, string, string];
  const mount: V1VolumeMount = { name: 'weights', mountPath: WEIGHTS_PATH, readOnly: true };
  switch (scheme) {
    case 'file':
      return { volumes: [{ name: 'weights', hostPath: { path: rest, type: 'Directory' } }], mount, fetch: false };
    case 'pvc': {
      const slash = rest.indexOf('/');
      const claimName = slash < 0 ? rest : rest.slice(0, slash);
      const subPath = slash < 0 ? '' : rest.slice(slash + 1).replace(/\/+$/, '');
      return {
        volumes: [{ name: 'weights', persistentVolumeClaim: { claimName, readOnly: true } }],
        mount: subPath ? { ...mount, subPath } : mount,
        fetch: false,
      };
    }
    case 'http':
    case 'https':
    case 'hf':
      return { volumes: [{ name: 'weights', emptyDir: {} }], mount, fetch: true };
    default:
      throw new Error(`spec.model.source: unsupported scheme ${scheme}:// (allowed: file, pvc, http, https, hf)`);
  }
}

/** The engine configuration the worker reads from CONFIG_DIR/engine.json. */
export function engineConfig(mdep: ModelDeployment): Record<string, unknown> {
  const { model, engine } = mdep.spec;
  return {
    model: { name: model.name, source: model.source, revision: model.revision, architecture: model.architecture },
    engine,
  };
}

export function plan(mdep: ModelDeployment, config: PlanConfig): Plan {
  const name = mdep.metadata.name ?? '';
  const namespace = mdep.metadata.namespace ?? '';
  const { spec } = mdep;
  const labels = commonLabels(mdep);
  const selector = selectorLabels(mdep);
  const servingSelector = { ...selector, [LABEL_ROLE]: ROLE_SERVING };
  const standby = standbyReplicas(mdep);
  const meta = (objectName: string) => ({
    name: objectName,
    namespace,
    labels,
    ownerReferences: [ownerReference(mdep)],
  });
  const port = spec.worker.port;

  const configData: Record<string, string> = {
    [ENGINE_CONFIG_FILE]: JSON.stringify(engineConfig(mdep), null, 2) + '\n',
    [SHA256_FILE]: JSON.stringify(spec.model.sha256 ?? {}, null, 2) + '\n',
  };
  const configHash = hashOf(configData);
  const configMap: V1ConfigMap = {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: meta(configMapName(name)),
    data: configData,
  };

  const weights = planWeights(spec.model.source);
  const cache = cacheTemplate(mdep, config.weightCacheDir);
  const configMount: V1VolumeMount = { name: 'engine-config', mountPath: CONFIG_DIR, readOnly: true };
  // The worker reads its flags from MODELSERVE_* variables (worker/src/main.ts); the full engine settings are also
  // in the ConfigMap's engine.json for what has no flag (kvMemoryFraction, speculative decoding).
  const env: V1EnvVar[] = [
    { name: 'MODELSERVE_MODEL', value: weights.mount.mountPath },
    { name: 'MODELSERVE_SERVED_MODEL_NAME', value: spec.model.name },
    { name: 'MODELSERVE_MODEL_SOURCE', value: spec.model.source },
    { name: 'MODELSERVE_ENGINE_CONFIG', value: `${CONFIG_DIR}/${ENGINE_CONFIG_FILE}` },
    { name: 'MODELSERVE_PORT', value: String(port) },
    { name: 'MODELSERVE_BACKEND', value: spec.resources.gpus > 0 ? 'cuda' : 'cpu' },
    { name: 'MODELSERVE_MAX_CONTEXT', value: String(spec.engine.maxContext) },
    { name: 'MODELSERVE_MAX_SEQS', value: String(spec.engine.maxSeqs) },
    { name: 'MODELSERVE_MAX_BATCHED_TOKENS', value: String(spec.engine.maxBatchedTokens) },
    { name: 'MODELSERVE_KV_BLOCK_SIZE', value: String(spec.engine.kvBlockSize) },
    ...(spec.engine.kvDtype === 'bf16' ? [{ name: 'MODELSERVE_KV_DTYPE', value: 'bfloat16' }] : []),
    { name: 'MODELSERVE_REASONING_EFFORT', value: spec.engine.defaultReasoningEffort },
    { name: 'MODELSERVE_GRACE_SECONDS', value: String(drainSeconds(spec.drain.maxSeconds)) },
    // The CPU backend sizes its KV cache from kvMemoryFraction of the container's memory limit (worker kv-budget.ts).
    ...(spec.resources.memory !== undefined
      ? [
          {
            name: 'MODELSERVE_MEMORY_LIMIT',
            valueFrom: { resourceFieldRef: { containerName: WORKER_CONTAINER, resource: 'limits.memory' } },
          },
        ]
      : []),
    { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
    { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
    ...(cache?.env ?? []),
    ...(spec.worker.env ?? []).map((e) => ({ name: e.name, value: e.value ?? '' })),
  ];

  const requests: Record<string, string> = {};
  const limits: Record<string, string> = {};
  if (spec.resources.gpus > 0) {
    requests['nvidia.com/gpu'] = String(spec.resources.gpus);
    limits['nvidia.com/gpu'] = String(spec.resources.gpus);
  }
  if (spec.resources.cpu !== undefined) requests.cpu = String(spec.resources.cpu);
  if (spec.resources.memory !== undefined) {
    // Memory is both request and limit: a worker that outgrows it should be restarted, not starve its node.
    requests.memory = String(spec.resources.memory);
    limits.memory = String(spec.resources.memory);
  }

  const image = spec.worker.image ?? config.workerImage;
  const worker: V1Container = {
    name: WORKER_CONTAINER,
    image,
    ...(spec.worker.imagePullPolicy ? { imagePullPolicy: spec.worker.imagePullPolicy } : {}),
    ...(config.workerCommand.length ? { command: config.workerCommand } : {}),
    env,
    ports: [{ name: 'http', containerPort: port, protocol: 'TCP' }],
    resources: { requests, limits },
    volumeMounts: [weights.mount, configMount, ...(cache ? [cache.mount] : [])],
    // Loading weights can take minutes: the startup probe holds liveness off until /health first answers.
    startupProbe: { httpGet: { path: '/health', port: 'http' }, periodSeconds: 5, failureThreshold: 360 },
    livenessProbe: { httpGet: { path: '/health', port: 'http' }, periodSeconds: 10, failureThreshold: 6 },
    readinessProbe: { httpGet: { path: '/ready', port: 'http' }, periodSeconds: 2, failureThreshold: 2 },
  };
  const initContainers: V1Container[] = weights.fetch
    ? [
        {
          name: 'fetch-weights',
          image,
          ...(spec.worker.imagePullPolicy ? { imagePullPolicy: spec.worker.imagePullPolicy } : {}),
          command: config.fetchCommand,
          // worker/src/fetch.ts: skips the download when the node cache holds the entry (the cache env and mount).
          env: [
            ...(cache?.env ?? []),
            ...(spec.model.source.startsWith('hf://') && config.hfEndpoint
              ? [{ name: 'HF_ENDPOINT', value: config.hfEndpoint }]
              : []),
            ...(spec.model.source.startsWith('hf://') && config.hfTokenSecret
              ? [
                  {
                    name: 'HF_TOKEN',
                    valueFrom: { secretKeyRef: { name: config.hfTokenSecret, key: 'token', optional: true } },
                  },
                ]
              : []),
          ],
          terminationMessagePolicy: 'FallbackToLogsOnError',
          args: [
            '--source',
            spec.model.source,
            ...(spec.model.revision ? ['--revision', spec.model.revision] : []),
            '--dest',
            WEIGHTS_PATH,
            '--sha256',
            `${CONFIG_DIR}/${SHA256_FILE}`,
          ],
          volumeMounts: [{ ...weights.mount, readOnly: false }, configMount, ...(cache ? [cache.mount] : [])],
        },
      ]
    : [];

  const deployment: V1Deployment = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: meta(name),
    spec: {
      // Standbys are extra pods of the same Deployment; the operator labels which pods serve (./standby.ts).
      replicas: spec.replicas + standby.count,
      selector: { matchLabels: selector },
      revisionHistoryLimit: 3,
      // Model loads are slow; only call a rollout stuck after half an hour.
      progressDeadlineSeconds: 1800,
      // Never drop below the current capacity during a rollout: surge one replica, then retire one.
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
      template: {
        // New pods start serving; with standbys configured the operator demotes the extras (./standby.ts).
        metadata: {
          labels: { ...labels, [LABEL_ROLE]: ROLE_SERVING },
          annotations: { [ANNOTATION_CONFIG_HASH]: configHash },
        },
        spec: {
          terminationGracePeriodSeconds: spec.drain.maxSeconds,
          enableServiceLinks: false,
          ...(spec.resources.nodeSelector ? { nodeSelector: spec.resources.nodeSelector } : {}),
          ...(spec.resources.tolerations ? { tolerations: spec.resources.tolerations } : {}),
          ...(spec.resources.priorityClassName ? { priorityClassName: spec.resources.priorityClassName } : {}),
          ...(cache ? { affinity: cache.affinity } : {}),
          ...(initContainers.length ? { initContainers } : {}),
          containers: [worker],
          volumes: [
            ...weights.volumes,
            { name: 'engine-config', configMap: { name: configMapName(name) } },
            ...(cache ? [cache.volume] : []),
          ],
        },
      },
    },
  };

  // Headless: the gateway routes to individual ready pods itself (from the Service's EndpointSlices), so a virtual
  // IP and a kube-proxy hop would add nothing — and a ClusterIP per model would exhaust small service ranges.
  const service: V1Service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(name),
    spec: {
      type: 'ClusterIP',
      clusterIP: 'None',
      selector: servingSelector,
      ports: [{ name: 'http', port, targetPort: 'http', protocol: 'TCP' }],
    },
  };

  const podDisruptionBudget: V1PodDisruptionBudget = {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: meta(name),
    // One voluntary disruption at a time: node drains proceed, but never take several replicas at once.
    spec: { selector: { matchLabels: selector }, maxUnavailable: 1 },
  };

  // Marks pods of the current template, so that a rollout promotes new pods before old serving ones go.
  const template = deployment.spec!.template;
  template.metadata!.annotations![ANNOTATION_TEMPLATE_HASH] = hashOf(template);

  for (const obj of [configMap, deployment, service, podDisruptionBudget]) {
    obj.metadata = { ...obj.metadata, annotations: { [ANNOTATION_SPEC_HASH]: specHash(obj) } };
  }

  return {
    configMap,
    deployment,
    service,
    podDisruptionBudget,
    selector,
    servingSelector,
    standby,
    endpoint: `http://${name}.${namespace}.svc.${config.clusterDomain}:${port}`,
  };
}

/**
 * The worker's own drain budget: a little under terminationGracePeriodSeconds so that it exits by itself before the
 * kubelet's SIGKILL (10% of the period, at most 5 s).
 */
export function drainSeconds(maxSeconds: number): number {
  return Math.max(0, maxSeconds - Math.min(5, Math.ceil(maxSeconds / 10)));
}

/** Hash of an object's desired content, leaving out Deployment replicas (a scale is not a template change). */
export function specHash(obj: { metadata?: unknown; spec?: unknown; data?: unknown }): string {
  const spec = obj.spec && typeof obj.spec === 'object' ? { ...(obj.spec as Record<string, unknown>) } : obj.spec;
  if (spec && typeof spec === 'object') delete (spec as Record<string, unknown>).replicas;
  const meta = obj.metadata as { labels?: unknown; ownerReferences?: unknown } | undefined;
  return hashOf({ labels: meta?.labels, owners: meta?.ownerReferences, spec, data: obj.data });
}
