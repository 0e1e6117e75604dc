// What the autoscaler writes into a ModelDeployment's status (only its own fields, through its own server-side-apply
// field manager): status.signals, status.scalingHistory (newest last, the last HISTORY_LENGTH) and the SLOMet and
// ScalingLimited conditions. Pure, so the unit tests check it without an API server.
import type { Condition, ModelDeployment } from '../api/modelDeployment.js';
import type {
  ModelDeploymentStatusScalingHistoryItem as HistoryItem,
  ModelDeploymentStatusSignals as Signals,
} from '../api/generated.js';
import type { Decision } from './policy.js';

export const AUTOSCALER_FIELD_MANAGER = 'modelserve-autoscaler';
export const HISTORY_LENGTH = 10;

const isoSeconds = (d: Date): string => d.toISOString().replace(/\.\d+Z$/, 'Z');

export function historyEntry(from: number, d: Decision, applied: boolean, now: Date): HistoryItem {
  return {
    time: isoSeconds(now),
    from,
    to: d.desiredReplicas,
    reason: d.reason,
    message: d.message.slice(0, 4000),
    applied,
  };
}

export function appendHistory(history: HistoryItem[] | undefined, entry: HistoryItem): HistoryItem[] {
  return [...(history ?? []), entry].slice(-HISTORY_LENGTH);
}

type Draft = Pick<Condition, 'type' | 'status' | 'reason' | 'message'>;

export function autoscalerConditions(
  mdep: ModelDeployment,
  d: Decision,
  slo: { ttftP95Ms?: number; itlP95Ms?: number } | undefined,
  now: Date,
): Condition[] {
  const drafts: Draft[] = [];
  if (!slo || (slo.ttftP95Ms === undefined && slo.itlP95Ms === undefined)) {
    drafts.push({
      type: 'SLOMet',
      status: 'Unknown',
      reason: 'NoObjective',
      message: 'spec.autoscaling.slo is not set',
    });
  } else if (d.sloMet === undefined) {
    drafts.push({ type: 'SLOMet', status: 'Unknown', reason: 'NoData', message: 'no latency observed in the window' });
  } else {
    drafts.push({
      type: 'SLOMet',
      status: d.sloMet ? 'True' : 'False',
      reason: d.sloMet ? 'WithinObjective' : 'ObjectiveMissed',
      message: d.sloMet ? 'observed p95 latencies are within their targets' : d.message,
    });
  }
  const limited = d.limitedBy ?? (d.reason === 'PendingPods' ? 'PendingPods' : undefined);
  drafts.push(
    limited
      ? { type: 'ScalingLimited', status: 'True', reason: limited, message: d.message }
      : { type: 'ScalingLimited', status: 'False', reason: 'WithinLimits', message: 'the count is not capped' },
  );
  const previous = new Map((mdep.status?.conditions ?? []).map((c) => [c.type, c]));
  return drafts.map((c) => {
    const before = previous.get(c.type);
    return {
      ...c,
      message: c.message.slice(0, 1000),
      observedGeneration: mdep.metadata.generation ?? 0,
      lastTransitionTime: before && before.status === c.status ? before.lastTransitionTime : isoSeconds(now),
    };
  });
}

/** The decision inputs status.signals reports (a subset of the policy's input). */
export interface SignalInputs {
  gatewayQueue: number;
  workerWaiting: number;
  workerRunning: number;
  ttftP95Ms?: number;
  itlP95Ms?: number;
  queuedPromptTokens?: number;
  promptTokensPerSecond?: number;
}

export function signalsOf(s: SignalInputs, tokensPerSecond: number | undefined, now: Date): Signals {
  const round = (v: number) => Math.round(v * 10) / 10;
  return {
    queueDepth: s.gatewayQueue + s.workerWaiting,
    runningRequests: s.workerRunning,
    ...(s.ttftP95Ms !== undefined ? { ttftP95Ms: round(s.ttftP95Ms) } : {}),
    ...(s.itlP95Ms !== undefined ? { itlP95Ms: round(s.itlP95Ms) } : {}),
    ...(tokensPerSecond !== undefined ? { tokensPerSecond: round(tokensPerSecond) } : {}),
    ...(s.queuedPromptTokens !== undefined ? { queuedPromptTokens: Math.round(s.queuedPromptTokens) } : {}),
    ...(s.promptTokensPerSecond !== undefined ? { promptTokensPerSecond: round(s.promptTokensPerSecond) } : {}),
    observedAt: isoSeconds(now),
  };
}

/** True when the status fields differ beyond observedAt and condition messages/times (those alone do not warrant a write). */
export function statusDiffers(
  before: { signals?: Signals; conditions?: Condition[]; scalingHistory?: HistoryItem[] } | undefined,
  after: { signals: Signals; conditions: Condition[]; scalingHistory: HistoryItem[] },
): boolean {
  const strip = (s?: Signals) => (s ? { ...s, observedAt: undefined } : undefined);
  if (JSON.stringify(strip(before?.signals)) !== JSON.stringify(strip(after.signals))) return true;
  if (JSON.stringify(before?.scalingHistory ?? []) !== JSON.stringify(after.scalingHistory)) return true;
  const mine = new Set(after.conditions.map((c) => c.type));
  const key = (c: Condition) => `${c.type}/${c.status}/${c.reason}`;
  const was = (before?.conditions ?? [])
    .filter((c) => mine.has(c.type))
    .map(key)
    .sort();
  return JSON.stringify(was) !== JSON.stringify(after.conditions.map(key).sort());
}
