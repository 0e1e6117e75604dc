// The node cache's desired state, computed purely from ModelDeployments, Nodes and stager Jobs: which Jobs must
// exist (one per cache entry and node: the one writer of that path), which node labels must be set or removed, and
// what each ModelDeployment's WeightsCached condition says. The controller only applies the differences.
import type { V1Job, V1Node, V1Pod, V1Toleration } from '@kubernetes/client-node';

import {
  LABEL_COMPONENT,
  LABEL_MANAGED_BY,
  LABEL_PART_OF,
  MANAGED_BY,
  type ModelDeployment,
} from '../api/modelDeployment.js';
import { labelValue, ownerReference } from '../controller/plan.js';
import { BUDGET_FAILURE } from './evict.js';
import {
  ANNOTATION_CACHE_ENTRY,
  ANNOTATION_CACHE_KEEP,
  ANNOTATION_CACHE_NODE,
  cacheKey,
  cacheLabel,
  CACHE_READY,
  cacheSourceOf,
  entryName,
  keepHash,
  LABEL_CACHE_KEY,
  LABEL_CACHE_NODE,
  nodeHash,
  readyKeys,
  stagerJobName,
  WEIGHT_CACHE_COMPONENT,
} from './keys.js';

export interface WeightCacheConfig {
  /** Cache root on every node (a hostPath). */
  hostPath: string;
  /** Disk budget of the cache root per node, as a Kubernetes quantity; unlimited when unset. */
  budget?: string;
  stagerImage: string;
  stagerCommand: string[];
  /** Hub endpoint for hf:// sources (HF_ENDPOINT of the stager); the stager's default when unset. */
  hfEndpoint?: string;
  /** Secret (in the ModelDeployment's namespace, key `token`) whose value the stager sends as HF_TOKEN. */
  hfTokenSecret?: string;
  /** Job backoffLimit: new pods after a failed one (each resumes from the partial files). */
  jobRetries: number;
}

export const defaultWeightCacheConfig: WeightCacheConfig = {
  hostPath: '/var/lib/modelserve/weights',
  stagerImage: 'ghcr.io/modelserve/modelserve:latest',
  stagerCommand: ['node', 'operator/dist/weightcache/stager.js'],
  jobRetries: 2,
};

export const wantsNodeCache = (mdep: ModelDeployment): boolean =>
  mdep.spec.prewarm?.nodeCache === true && !mdep.metadata.deletionTimestamp;

function tolerates(tolerations: V1Toleration[], taint: { key: string; value?: string; effect: string }): boolean {
  return tolerations.some(
    (t) =>
      (!t.effect || t.effect === taint.effect) &&
      (t.operator === 'Exists'
        ? !t.key || t.key === taint.key
        : t.key === taint.key && (t.value ?? '') === (taint.value ?? '')),
  );
}

/** GPU nodes a worker of `mdep` could run on, narrowed by spec.prewarm.nodeCacheSelector: where to stage. */
export function matchingNodes(mdep: ModelDeployment, nodes: V1Node[]): V1Node[] {
  const selector = { ...(mdep.spec.resources.nodeSelector ?? {}), ...(mdep.spec.prewarm.nodeCacheSelector ?? {}) };
  const tolerations = (mdep.spec.resources.tolerations ?? []) as V1Toleration[];
  return nodes
    .filter((n) => {
      if (n.spec?.unschedulable || n.metadata?.deletionTimestamp) return false;
      const labels = n.metadata?.labels ?? {};
      if (!Object.entries(selector).every(([k, v]) => labels[k] === v)) return false;
      const gpus = Number(n.status?.allocatable?.['nvidia.com/gpu'] ?? 0);
      if (mdep.spec.resources.gpus > 0 && gpus < mdep.spec.resources.gpus) return false;
      return (n.spec?.taints ?? [])
        .filter((t) => t.effect === 'NoSchedule' || t.effect === 'NoExecute')
        .every((t) => tolerates(tolerations, t));
    })
    .sort((a, b) => ((a.metadata?.name ?? '') < (b.metadata?.name ?? '') ? -1 : 1));
}

export interface DesiredStage {
  namespace: string;
  jobName: string;
  key: string;
  entry: string;
  node: string;
  /** The ModelDeployment the Job is made from (the first by name when several share the entry). */
  mdep: ModelDeployment;
}

export interface DesiredState {
  stages: Map<string, DesiredStage>; // by namespace/jobName
  /** Keys wanted on each node (what its stager must never evict). */
  keysByNode: Map<string, Set<string>>;
  /** Per ModelDeployment (namespace/name) with nodeCache on: its key and the nodes it stages on. */
  byMdep: Map<string, { key: string; entry: string; nodes: string[] }>;
}

export function desiredState(mdeps: ModelDeployment[], nodes: V1Node[]): DesiredState {
  const stages = new Map<string, DesiredStage>();
  const keysByNode = new Map<string, Set<string>>();
  const byMdep = new Map<string, { key: string; entry: string; nodes: string[] }>();
  const sorted = mdeps
    .filter(wantsNodeCache)
    .sort((a, b) =>
      `${a.metadata.namespace}/${a.metadata.name}` < `${b.metadata.namespace}/${b.metadata.name}` ? -1 : 1,
    );
  for (const mdep of sorted) {
    const src = cacheSourceOf(mdep);
    const key = cacheKey(src);
    const entry = entryName(src);
    const names = matchingNodes(mdep, nodes).map((n) => n.metadata?.name ?? '');
    byMdep.set(`${mdep.metadata.namespace}/${mdep.metadata.name}`, { key, entry, nodes: names });
    for (const node of names) {
      if (!keysByNode.has(node)) keysByNode.set(node, new Set());
      keysByNode.get(node)!.add(key);
      const jobName = stagerJobName(key, node);
      const id = `${src.namespace}/${jobName}`;
      if (!stages.has(id)) stages.set(id, { namespace: src.namespace, jobName, key, entry, node, mdep });
    }
  }
  return { stages, keysByNode, byMdep };
}

export const jobSucceeded = (job: V1Job | undefined): boolean =>
  !!job?.status?.conditions?.some((c) => c.type === 'Complete' && c.status === 'True');
export const jobFailed = (job: V1Job | undefined): boolean =>
  !!job?.status?.conditions?.some((c) => c.type === 'Failed' && c.status === 'True');

/** Label changes per node: key → 'ready' to add, null to remove. Only labels of our prefix are ever touched. */
export function labelChanges(
  nodes: V1Node[],
  desired: DesiredState,
  jobs: Map<string, V1Job>,
): Map<string, Record<string, string | null>> {
  const out = new Map<string, Record<string, string | null>>();
  for (const n of nodes) {
    const name = n.metadata?.name ?? '';
    const wanted = desired.keysByNode.get(name) ?? new Set<string>();
    const have = new Set(readyKeys(n.metadata?.labels));
    const patch: Record<string, string | null> = {};
    for (const k of have) if (!wanted.has(k)) patch[cacheLabel(k)] = null;
    for (const k of wanted) {
      if (have.has(k)) continue;
      const stage = [...desired.stages.values()].find((s) => s.key === k && s.node === name);
      if (stage && jobSucceeded(jobs.get(`${stage.namespace}/${stage.jobName}`))) patch[cacheLabel(k)] = CACHE_READY;
    }
    if (Object.keys(patch).length > 0) out.set(name, patch);
  }
  return out;
}

/** The stager Job of one entry on one node. Pinned by node name (as a DaemonSet pins its pods), never retried in a loop. */
export function stagerJob(stage: DesiredStage, keep: Set<string>, config: WeightCacheConfig): V1Job {
  const { mdep } = stage;
  const source = mdep.spec.model.source;
  const labels = {
    [LABEL_COMPONENT]: WEIGHT_CACHE_COMPONENT,
    [LABEL_PART_OF]: 'modelserve',
    [LABEL_MANAGED_BY]: MANAGED_BY,
    [LABEL_CACHE_KEY]: stage.key,
    [LABEL_CACHE_NODE]: nodeHash(stage.node),
  };
  const local = /^file:\/\/(\/.*)$/.exec(source)?.[1];
  const pvc = /^pvc:\/\/([^/]+)\/?(.*)$/.exec(source);
  const sourceVolume = local
    ? [{ name: 'source', hostPath: { path: local, type: 'Directory' } }]
    : pvc
      ? [{ name: 'source', persistentVolumeClaim: { claimName: pvc[1] as string, readOnly: true } }]
      : [];
  const sourceMount =
    local || pvc
      ? [
          {
            name: 'source',
            mountPath: '/source',
            readOnly: true,
            ...(pvc?.[2] ? { subPath: pvc[2].replace(/\/+$/, '') } : {}),
          },
        ]
      : [];
  const env = [
    ...(mdep.spec.model.sha256
      ? [{ name: 'MODELSERVE_STAGE_SHA256', value: JSON.stringify(mdep.spec.model.sha256) }]
      : []),
    ...(config.hfEndpoint ? [{ name: 'HF_ENDPOINT', value: config.hfEndpoint }] : []),
    // Optional: a namespace without the Secret still stages public repositories.
    ...(config.hfTokenSecret && source.startsWith('hf://')
      ? [
          {
            name: 'HF_TOKEN',
            valueFrom: { secretKeyRef: { name: config.hfTokenSecret, key: 'token', optional: true } },
          },
        ]
      : []),
  ];
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: {
      name: stage.jobName,
      namespace: stage.namespace,
      labels,
      annotations: {
        [ANNOTATION_CACHE_NODE]: stage.node,
        [ANNOTATION_CACHE_ENTRY]: stage.entry,
        [ANNOTATION_CACHE_KEEP]: keepHash(keep),
        'serving.modelserve.dev/model': labelValue(mdep.spec.model.name),
      },
      ownerReferences: [{ ...ownerReference(mdep), blockOwnerDeletion: false }],
    },
    spec: {
      backoffLimit: config.jobRetries,
      template: {
        metadata: { labels },
        spec: {
          restartPolicy: 'Never',
          enableServiceLinks: false,
          automountServiceAccountToken: false,
          affinity: {
            nodeAffinity: {
              requiredDuringSchedulingIgnoredDuringExecution: {
                nodeSelectorTerms: [{ matchFields: [{ key: 'metadata.name', operator: 'In', values: [stage.node] }] }],
              },
            },
          },
          ...(mdep.spec.resources.tolerations
            ? { tolerations: mdep.spec.resources.tolerations as V1Toleration[] }
            : {}),
          containers: [
            {
              name: 'stage',
              image: config.stagerImage,
              command: config.stagerCommand,
              args: [
                `--source=${source}`,
                ...(mdep.spec.model.revision ? [`--revision=${mdep.spec.model.revision}`] : []),
                '--root=/cache',
                `--entry=${stage.entry}`,
                `--key=${stage.key}`,
                ...(config.budget ? [`--budget=${config.budget}`] : []),
                `--keep=${[...keep].sort().join(',')}`,
                ...(sourceMount.length ? ['--local-root=/source'] : []),
              ],
              env,
              terminationMessagePolicy: 'FallbackToLogsOnError',
              resources: { requests: { cpu: '100m', memory: '128Mi' } },
              volumeMounts: [{ name: 'cache', mountPath: '/cache' }, ...sourceMount],
            },
          ],
          volumes: [{ name: 'cache', hostPath: { path: config.hostPath, type: 'DirectoryOrCreate' } }, ...sourceVolume],
        },
      },
    },
  };
}

// Timestamps arrive as RFC 3339 strings from the API server, typed as Date by the client library.
const created = (p: V1Pod): number => new Date(p.metadata?.creationTimestamp ?? 0).getTime();

/** The last line a failed stager pod left (its termination message), for the WeightsCached message. */
export function failureMessage(pods: V1Pod[]): string | undefined {
  const failed = pods.filter((p) => p.status?.phase === 'Failed').sort((a, b) => created(b) - created(a));
  for (const p of failed) {
    for (const cs of p.status?.containerStatuses ?? []) {
      const terminated = cs.state?.terminated;
      if (!terminated) continue;
      const lines = (terminated.message ?? '').split('\n').filter((l) => l.trim());
      const said = lines.reverse().find((l) => l.startsWith('stager: '));
      if (said) return said.slice('stager: '.length);
      // Killed or crashed before it could say why: the exit code, and the last thing it logged.
      const last = lines[0] ? `; last log line: ${lines[0].slice(0, 300)}` : '';
      return `stager pod ${p.metadata?.name} exited with code ${terminated.exitCode}${last}`;
    }
  }
  return undefined;
}

/**
 * A Job that failed because the disk budget was full of wanted entries is worth one more try once the set of wanted
 * entries on its node changed (one was deleted): the new Job's stager may evict it. Any other failure stays failed
 * until someone deletes the Job, so nothing retries in a loop.
 */
export function retryAfterKeepChange(job: V1Job, failure: string | undefined, keepNow: Set<string>): boolean {
  return (
    jobFailed(job) &&
    !!failure?.startsWith(BUDGET_FAILURE) &&
    job.metadata?.annotations?.[ANNOTATION_CACHE_KEEP] !== keepHash(keepNow)
  );
}

export interface CacheCondition {
  status: 'True' | 'False';
  reason: string;
  message: string;
  readyNodes: number;
  nodes: number;
}

/** WeightsCached for one ModelDeployment: True once every matching node holds the entry. */
export function cacheCondition(
  want: { key: string; entry: string; nodes: string[] },
  readyOn: (node: string) => boolean,
  failures: { node: string; message: string }[],
): CacheCondition {
  const ready = want.nodes.filter(readyOn).length;
  const total = want.nodes.length;
  const base = { readyNodes: ready, nodes: total };
  if (total === 0) {
    return {
      ...base,
      status: 'False',
      reason: 'NoMatchingNodes',
      message: 'no schedulable GPU node matches this deployment',
    };
  }
  if (failures.length > 0) {
    const f = failures[0]!;
    return {
      ...base,
      status: 'False',
      reason: 'StagingFailed',
      message: `${ready} of ${total} nodes ready; staging ${want.entry} on ${f.node} failed: ${f.message} (delete its stager Job to retry)`,
    };
  }
  if (ready < total) {
    return {
      ...base,
      status: 'False',
      reason: 'Staging',
      message: `${ready} of ${total} nodes ready; staging ${want.entry}`,
    };
  }
  return { ...base, status: 'True', reason: 'Cached', message: `${ready} of ${total} nodes ready with ${want.entry}` };
}
