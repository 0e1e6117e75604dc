// Which pods go first when replicas drop. The ReplicaSet controller removes pods with the lowest
// controller.kubernetes.io/pod-deletion-cost first (after unscheduled, pending and not-ready ones), so before lowering
// a Deployment's replicas the operator marks the least useful pods with a low cost and clears stale marks.
// "Least useful" is: not ready first, then the newest (least warmed-up caches). A later signal — fewest in-flight
// requests from the workers' metrics — slots in as another sort key here.
import type { V1Pod } from '@kubernetes/client-node';
import { ANNOTATION_DELETION_COST } from '../api/modelDeployment.js';
import { isPodReady } from './status.js';

export const VICTIM_COST = '-1000';

/** Pods ordered from least to most useful. */
export function rankForRemoval(pods: V1Pod[]): V1Pod[] {
  const created = (p: V1Pod): number => new Date(p.metadata?.creationTimestamp ?? 0).getTime();
  return pods
    .filter((p) => !p.metadata?.deletionTimestamp)
    .slice()
    .sort((a, b) => {
      const ready = Number(isPodReady(a)) - Number(isPodReady(b));
      if (ready !== 0) return ready;
      const age = created(b) - created(a); // newest first
      if (age !== 0) return age;
      return (a.metadata?.name ?? '').localeCompare(b.metadata?.name ?? '');
    });
}

/**
 * The annotation changes to make before scaling from the current pods down to `desired`: pod name → cost to set,
 * or null to remove a stale mark. Empty when nothing needs to change.
 */
export function deletionCostChanges(pods: V1Pod[], desired: number): Map<string, string | null> {
  const ranked = rankForRemoval(pods);
  const removeCount = Math.max(0, ranked.length - desired);
  const victims = new Set(ranked.slice(0, removeCount).map((p) => p.metadata?.name ?? ''));
  const changes = new Map<string, string | null>();
  for (const pod of ranked) {
    const name = pod.metadata?.name ?? '';
    const current = pod.metadata?.annotations?.[ANNOTATION_DELETION_COST];
    if (victims.has(name)) {
      if (current !== VICTIM_COST) changes.set(name, VICTIM_COST);
    } else if (current === VICTIM_COST) {
      changes.set(name, null);
    }
  }
  return changes;
}
