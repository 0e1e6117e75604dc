// Pure status computation: what the operator reports about a ModelDeployment, from its Deployment and worker pods.
// The operator owns the Ready, Progressing and Degraded conditions; WeightsCached, SLOMet and ScalingLimited belong
// to other writers (separate server-side-apply field managers), so they are neither read nor written here.
import type { V1Deployment, V1Pod } from '@kubernetes/client-node';
import type { Condition, ModelDeployment } from '../api/modelDeployment.js';
import type { StandbyCounts } from './standby.js';

export type OperatorConditionType = 'Ready' | 'Progressing' | 'Degraded';
export const OPERATOR_CONDITIONS: OperatorConditionType[] = ['Ready', 'Progressing', 'Degraded'];

export interface OperatorStatus {
  observedGeneration: number;
  replicas: number;
  readyReplicas: number;
  desiredReplicas: number;
  /** Standby pods (loaded, no traffic) that exist and that pass readiness; 0 without prewarm.standbyReplicas. */
  standbyReplicas: number;
  readyStandbyReplicas: number;
  selector: string;
  endpoint: string;
  conditions: Condition[];
}

interface ConditionDraft {
  type: OperatorConditionType;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
}

/** Why pods cannot run, most severe first: one reason and a message naming a pod. */
export function podProblems(pods: V1Pod[]): { reason: string; message: string } | undefined {
  for (const pod of pods) {
    if (pod.metadata?.deletionTimestamp) continue;
    for (const cs of [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])]) {
      const waiting = cs.state?.waiting;
      if (waiting?.reason === 'CrashLoopBackOff') {
        const last = cs.lastState?.terminated;
        const exit = last ? ` (last exit code ${last.exitCode}${last.reason ? `, ${last.reason}` : ''})` : '';
        return {
          reason: 'CrashLoop',
          message: `container ${cs.name} of pod ${pod.metadata?.name} is in CrashLoopBackOff after ${cs.restartCount} restarts${exit}`,
        };
      }
    }
  }
  for (const pod of pods) {
    if (pod.metadata?.deletionTimestamp) continue;
    for (const cs of [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])]) {
      const reason = cs.state?.waiting?.reason;
      if (reason === 'ImagePullBackOff' || reason === 'ErrImagePull' || reason === 'InvalidImageName') {
        return {
          reason: 'ImagePull',
          message:
            `container ${cs.name} of pod ${pod.metadata?.name}: ${reason}: ${cs.state?.waiting?.message ?? ''}`.trim(),
        };
      }
    }
  }
  for (const pod of pods) {
    if (pod.metadata?.deletionTimestamp || pod.status?.phase !== 'Pending') continue;
    const scheduled = pod.status?.conditions?.find((c) => c.type === 'PodScheduled');
    if (scheduled?.status === 'False' && scheduled.reason === 'Unschedulable') {
      return { reason: 'Unschedulable', message: `pod ${pod.metadata?.name}: ${scheduled.message ?? 'unschedulable'}` };
    }
  }
  return undefined;
}

export function isPodReady(pod: V1Pod): boolean {
  return (
    !pod.metadata?.deletionTimestamp &&
    pod.status?.phase === 'Running' &&
    pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true
  );
}

export function computeStatus(
  mdep: ModelDeployment,
  deployment: V1Deployment | undefined,
  pods: V1Pod[],
  selector: string,
  endpoint: string,
  now: Date,
  /** Why writing an owned object failed in this reconcile; reported as Degraded/ApplyFailed ahead of pod problems. */
  applyError?: string,
  /** Standby pods (./standby.ts): the Deployment counts them, replicas/readyReplicas count serving pods only. */
  standby: StandbyCounts = { wanted: 0, limited: 0, pods: 0, ready: 0 },
): OperatorStatus {
  const generation = mdep.metadata.generation ?? 0;
  const desired = mdep.spec.replicas;
  const total = desired + standby.wanted;
  const live = pods.filter((p) => !p.metadata?.deletionTimestamp);
  const deploymentReplicas = deployment?.status?.replicas ?? 0;
  const deploymentReady = deployment?.status?.readyReplicas ?? 0;
  const replicas = Math.max(0, deploymentReplicas - standby.pods);
  const readyReplicas = Math.max(0, deploymentReady - standby.ready);
  const updated = deployment?.status?.updatedReplicas ?? 0;
  const deploymentSettled =
    deployment !== undefined &&
    (deployment.status?.observedGeneration ?? 0) >= (deployment.metadata?.generation ?? 0) &&
    deployment.spec?.replicas === total &&
    updated === total &&
    deploymentReplicas === total &&
    deploymentReady === total &&
    standby.pods === standby.wanted;
  const standbyNote =
    (standby.wanted > 0 ? `; ${standby.ready}/${standby.wanted} standby ready` : '') +
    (standby.limited > 0 ? `; ${standby.limited} standby left out by maxGPUs` : '');

  const drafts: ConditionDraft[] = [];
  if (desired === 0) {
    drafts.push({
      type: 'Ready',
      status: 'False',
      reason: 'ScaledToZero',
      message: `spec.replicas is 0${standbyNote}`,
    });
  } else if (readyReplicas >= desired) {
    drafts.push({
      type: 'Ready',
      status: 'True',
      reason: 'ReplicasReady',
      message: `${readyReplicas}/${desired} ready${standbyNote}`,
    });
  } else {
    drafts.push({
      type: 'Ready',
      status: 'False',
      reason: readyReplicas > 0 ? 'PartiallyReady' : 'NoReplicasReady',
      message: `${readyReplicas}/${desired} replicas ready${standbyNote}`,
    });
  }

  if (!deployment) {
    drafts.push({ type: 'Progressing', status: 'True', reason: 'Creating', message: 'creating the worker Deployment' });
  } else if (deploymentSettled) {
    drafts.push({
      type: 'Progressing',
      status: 'False',
      reason: 'Settled',
      message: `${desired} replicas up to date${standby.wanted > 0 ? ` and ${standby.wanted} standby` : ''}`,
    });
  } else {
    const reason = updated < deploymentReplicas ? 'RollingOut' : 'Scaling';
    drafts.push({
      type: 'Progressing',
      status: 'True',
      reason,
      message: `${updated} updated, ${deploymentReady} ready, ${deploymentReplicas} existing of ${total} desired${standby.wanted > 0 ? ` (${desired} serving + ${standby.wanted} standby)` : ''}`,
    });
  }

  const problem = podProblems(live);
  const deadline = deployment?.status?.conditions?.find(
    (c) => c.type === 'Progressing' && c.reason === 'ProgressDeadlineExceeded',
  );
  if (applyError) {
    drafts.push({ type: 'Degraded', status: 'True', reason: 'ApplyFailed', message: applyError.slice(0, 4096) });
  } else if (problem) {
    drafts.push({ type: 'Degraded', status: 'True', ...problem });
  } else if (deadline) {
    drafts.push({
      type: 'Degraded',
      status: 'True',
      reason: 'ProgressDeadlineExceeded',
      message: deadline.message ?? '',
    });
  } else {
    drafts.push({ type: 'Degraded', status: 'False', reason: 'AsExpected', message: 'no pod problems observed' });
  }

  const previous = new Map((mdep.status?.conditions ?? []).map((c) => [c.type, c]));
  const conditions = drafts.map((d): Condition => {
    const before = previous.get(d.type);
    const lastTransitionTime =
      before && before.status === d.status ? before.lastTransitionTime : now.toISOString().replace(/\.\d+Z$/, 'Z');
    return { ...d, observedGeneration: generation, lastTransitionTime };
  });

  return {
    observedGeneration: generation,
    replicas,
    readyReplicas,
    desiredReplicas: desired,
    standbyReplicas: standby.pods,
    readyStandbyReplicas: standby.ready,
    selector,
    endpoint,
    conditions,
  };
}

/** True when the operator's part of the status differs from what the object carries. */
export function statusChanged(mdep: ModelDeployment, next: OperatorStatus): boolean {
  const cur = mdep.status ?? {};
  if (
    cur.observedGeneration !== next.observedGeneration ||
    cur.replicas !== next.replicas ||
    cur.readyReplicas !== next.readyReplicas ||
    cur.desiredReplicas !== next.desiredReplicas ||
    (cur.standbyReplicas ?? 0) !== next.standbyReplicas ||
    (cur.readyStandbyReplicas ?? 0) !== next.readyStandbyReplicas ||
    cur.selector !== next.selector ||
    cur.endpoint !== next.endpoint
  ) {
    return true;
  }
  const curConditions = new Map((cur.conditions ?? []).map((c) => [c.type, c]));
  return next.conditions.some((c) => {
    const before = curConditions.get(c.type);
    return (
      !before ||
      before.status !== c.status ||
      before.reason !== c.reason ||
      before.message !== c.message ||
      before.observedGeneration !== c.observedGeneration
    );
  });
}

/** The Degraded condition when it newly turned True or changed reason: the operator emits a Warning Event for it. */
export function newlyDegraded(mdep: ModelDeployment, next: OperatorStatus): Condition | undefined {
  const after = next.conditions.find((c) => c.type === 'Degraded');
  if (after?.status !== 'True') return undefined;
  const before = mdep.status?.conditions?.find((c) => c.type === 'Degraded');
  return before?.status === 'True' && before.reason === after.reason ? undefined : after;
}
