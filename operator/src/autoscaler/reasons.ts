// Machine-readable reasons of autoscaling decisions: the `reason` of status.scalingHistory entries and Events.
// docs/autoscaler.md explains each one.
export const REASONS = {
  QueueDepth:
    'the queued work sets the count: demand (gateway queue + waiting + running) over queueDepthPerReplica, or, with the prompt-token signals, prompt tokens over prefill tokens/s, slots held by long answers, or a decode-bound queue (the message says which)',
  SLOViolation: 'observed p95 TTFT or ITL over its target raised the count',
  Panic: 'a burst over the panic threshold: scaled up at once, no scale down until it has passed',
  ScheduleFloor: 'an active schedule holds a higher floor',
  MinReplicas: 'spec.autoscaling.minReplicas holds the floor',
  IdleGrace: 'minReplicas is 0 but the model has not been idle for scaleToZeroAfterSeconds yet',
  Stabilizing: 'a lower (or higher) recommendation has not persisted for the stabilization window',
  ScaleToZero: 'idle for scaleToZeroAfterSeconds with minReplicas 0',
  ScaleFromZero: 'requests wait and no replica exists: scaled to at least one at once',
  BudgetLimited: 'the maxGPUs budget caps the count',
  MaxReplicas: 'spec.autoscaling.maxReplicas caps the count',
  PendingPods: 'pods of the last scale-up are still Pending: no further scale-up until they schedule or time out',
  StartingPods:
    'replicas of the last scale-up are still starting: more only if demand reaches panicThreshold x the count',
  SignalsUnavailable: 'the queue depth could not be read (Redis down): holding the count',
} as const;

export type Reason = keyof typeof REASONS;
