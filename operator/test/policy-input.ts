// A policy input with no load (one replica, ready, every signal available), for the policy's unit tests.
import type { PolicyConfig, PolicyInput } from '../src/autoscaler/policy.js';

export const idleInput = (config: PolicyConfig, over: Partial<PolicyInput> = {}): PolicyInput => ({
  config,
  currentReplicas: 1,
  readyReplicas: 1,
  pendingPods: 0,
  gatewayQueue: 0,
  workerWaiting: 0,
  workerRunning: 0,
  scheduleFloor: 0,
  signalsAvailable: true,
  ...over,
});
