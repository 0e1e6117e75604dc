// Standby replicas (spec.prewarm.standbyReplicas): worker pods that load the weights and pass readiness but are left
// out of the model's Service, so the gateway (which routes from the Service's EndpointSlices) sends them nothing.
// Every worker pod carries the role label; the Service selects role=serving only. The Deployment runs
// spec.replicas + standbys pods, all created as serving (so with no standbys, or with the operator down, new pods
// serve as before); the operator then relabels pods so that exactly spec.replicas of them serve, preferring ready
// pods. A scale-up therefore promotes ready standbys at once — a label patch, no restart — and the Deployment tops the
// pool back up with new pods, which join as standbys while they load. Everything here is pure and unit-tested.
import type { V1Pod } from '@kubernetes/client-node';
import { ANNOTATION_DELETION_COST, type ModelDeployment } from '../api/modelDeployment.js';
import { rankForRemoval, VICTIM_COST } from './scaleDown.js';
import { isPodReady } from './status.js';

export const LABEL_ROLE = 'serving.modelserve.dev/role';
/** Hash of the pod template (set by plan()): pods carrying the current one are preferred for serving. */
export const ANNOTATION_TEMPLATE_HASH = 'serving.modelserve.dev/template-hash';
export type Role = 'serving' | 'standby';
export const ROLE_SERVING: Role = 'serving';
export const ROLE_STANDBY: Role = 'standby';

/** The pod's role label; undefined for pods created before roles existed (they are labelled on the next pass). */
export function roleOf(pod: V1Pod): Role | undefined {
  const role = pod.metadata?.labels?.[LABEL_ROLE];
  return role === ROLE_SERVING || role === ROLE_STANDBY ? role : undefined;
}

/**
 * Standbys the operator keeps: spec.prewarm.standbyReplicas, lowered so that serving plus standby pods fit the
 * maxGPUs budget (standbys hold GPUs like any replica). `limited` says how many were dropped for the budget.
 */
export function standbyReplicas(mdep: ModelDeployment): { count: number; limited: number } {
  const wanted = Math.max(0, mdep.spec.prewarm?.standbyReplicas ?? 0);
  const budget = mdep.spec.autoscaling?.maxGPUs;
  const gpus = mdep.spec.resources.gpus;
  if (budget === undefined || gpus <= 0) return { count: wanted, limited: 0 };
  const room = Math.max(0, Math.floor(budget / gpus) - mdep.spec.replicas);
  const count = Math.min(wanted, room);
  return { count, limited: wanted - count };
}

const alive = (p: V1Pod): boolean =>
  !p.metadata?.deletionTimestamp && p.status?.phase !== 'Failed' && p.status?.phase !== 'Succeeded';
const isVictim = (p: V1Pod): boolean => p.metadata?.annotations?.[ANNOTATION_DELETION_COST] === VICTIM_COST;

/**
 * Live pods from best to worst candidate for a serving slot: not marked for scale-down removal, ready, of the current
 * template (`templateHash`; during a rollout a ready new pod takes over before the old serving one is removed, so the
 * Service never goes empty), already serving (so ready pods keep their role and nothing flaps), older (further along
 * loading), then by name.
 */
export function rankForServing(pods: V1Pod[], templateHash?: string, removing = new Set<string>()): V1Pod[] {
  const created = (p: V1Pod): number => new Date(p.metadata?.creationTimestamp ?? 0).getTime();
  const outdated = (p: V1Pod): boolean =>
    templateHash !== undefined && p.metadata?.annotations?.[ANNOTATION_TEMPLATE_HASH] !== templateHash;
  const key = (p: V1Pod): number[] => [
    Number(isVictim(p) || removing.has(p.metadata?.name ?? '')),
    Number(!isPodReady(p)),
    Number(outdated(p)),
    Number(roleOf(p) !== ROLE_SERVING),
    created(p),
  ];
  return pods.filter(alive).sort((a, b) => {
    const ka = key(a);
    const kb = key(b);
    for (let i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return ka[i]! - kb[i]!;
    return (a.metadata?.name ?? '').localeCompare(b.metadata?.name ?? '');
  });
}

export interface RoleChange {
  pod: string;
  from: Role | undefined;
  to: Role;
  /** The pod was Ready when promoted: it serves at once, without a cold start. */
  ready: boolean;
}

/** The relabelling that leaves exactly `serving` live pods serving (fewer when fewer exist) and the rest standby. */
export function planRoles(
  pods: V1Pod[],
  serving: number,
  templateHash?: string,
  /** Pods the coming scale-down will remove (`scaleDownVictims`): never kept serving while others could. */
  removing?: Set<string>,
): RoleChange[] {
  const ranked = rankForServing(pods, templateHash, removing);
  const changes: RoleChange[] = [];
  ranked.forEach((pod, i) => {
    const to = i < serving ? ROLE_SERVING : ROLE_STANDBY;
    const from = roleOf(pod);
    if (from !== to) changes.push({ pod: pod.metadata?.name ?? '', from, to, ready: isPodReady(pod) });
  });
  // Promotions first: the pod that takes traffic should be in the Service before the one leaving it goes.
  return changes.sort((a, b) => Number(a.to !== ROLE_SERVING) - Number(b.to !== ROLE_SERVING));
}

/**
 * The pods the operator is about to mark for removal when the Deployment goes down to `total` pods — the same choice
 * as scaleDown.ts makes — so that the roles are planned around them in the same pass (otherwise a tie in the two
 * rankings could demote one pod and delete the other, leaving nothing serving until the next pass).
 */
export function scaleDownVictims(pods: V1Pod[], total: number): Set<string> {
  const ranked = rankForRemoval(pods);
  return new Set(ranked.slice(0, Math.max(0, ranked.length - total)).map((p) => p.metadata?.name ?? ''));
}

export interface StandbyCounts {
  /** Standbys the operator keeps (after the maxGPUs budget), and how many the budget dropped. */
  wanted: number;
  limited: number;
  /** Live pods labelled standby, and those of them that are Ready. */
  pods: number;
  ready: number;
}

export function standbyCounts(pods: V1Pod[], kept: { count: number; limited: number }): StandbyCounts {
  const standby = pods.filter((p) => alive(p) && roleOf(p) === ROLE_STANDBY);
  return { wanted: kept.count, limited: kept.limited, pods: standby.length, ready: standby.filter(isPodReady).length };
}

/**
 * controller.kubernetes.io/pod-deletion-cost of a serving pod while the model has standbys. The ReplicaSet controller
 * removes the cheapest pods first whenever it scales down — including the old ReplicaSet during a rolling update,
 * which acts on its own schedule, not the operator's. Without a cost it may delete the old serving pod the moment a
 * new pod is ready, before the operator has promoted that pod, and the Service is empty until it does. With serving
 * pods dearer, it takes an old standby first. Scale-down victims (VICTIM_COST) stay cheapest.
 */
export const SERVING_COST = '1000';

/**
 * The deletion-cost changes that go with `roles` (pod name → role after this pass's relabelling): serving pods get
 * SERVING_COST, others lose it; a pod marked as a scale-down victim keeps its mark. Pod name → cost, or null to
 * remove. Only for models with standbys (`standbys` > 0); with none, every pod serves and costs change nothing.
 */
export function servingCostChanges(
  pods: V1Pod[],
  roles: Map<string, Role | undefined>,
  standbys: number,
): Map<string, string | null> {
  const changes = new Map<string, string | null>();
  for (const pod of pods.filter(alive)) {
    const name = pod.metadata?.name ?? '';
    const current = pod.metadata?.annotations?.[ANNOTATION_DELETION_COST];
    if (current === VICTIM_COST) continue;
    const want = standbys > 0 && (roles.get(name) ?? roleOf(pod)) === ROLE_SERVING ? SERVING_COST : undefined;
    if (want !== undefined && current !== want) changes.set(name, want);
    else if (want === undefined && current === SERVING_COST) changes.set(name, null);
  }
  return changes;
}
