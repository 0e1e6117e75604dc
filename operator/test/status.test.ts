import type { V1Deployment, V1Pod } from '@kubernetes/client-node';
import { computeStatus, newlyDegraded, podProblems, statusChanged } from '../src/controller/status.js';
import { modelDeployment, pod } from './fixtures.js';

const now = new Date('2026-11-23T12:00:00Z');
const deployment = (replicas: number, ready: number, updated = replicas, desired = replicas): V1Deployment => ({
  metadata: { generation: 2 },
  spec: { replicas: desired, selector: {}, template: {} },
  status: { observedGeneration: 2, replicas, readyReplicas: ready, updatedReplicas: updated },
});
const condition = (s: ReturnType<typeof computeStatus>, type: string) => s.conditions.find((c) => c.type === type)!;

describe('computeStatus', () => {
  it('is Ready and settled when all desired replicas are ready', () => {
    const mdep = modelDeployment({ replicas: 2 });
    const s = computeStatus(mdep, deployment(2, 2), [pod('a'), pod('b')], 'sel', 'http://x', now);
    expect(s).toEqual(
      expect.objectContaining({
        replicas: 2,
        readyReplicas: 2,
        desiredReplicas: 2,
        selector: 'sel',
        endpoint: 'http://x',
      }),
    );
    expect(condition(s, 'Ready')).toEqual(expect.objectContaining({ status: 'True', reason: 'ReplicasReady' }));
    expect(condition(s, 'Progressing')).toEqual(expect.objectContaining({ status: 'False', reason: 'Settled' }));
    expect(condition(s, 'Degraded')).toEqual(expect.objectContaining({ status: 'False' }));
  });

  it('reports a rollout in progress', () => {
    const s = computeStatus(modelDeployment({ replicas: 2 }), deployment(3, 2, 1, 2), [], 'sel', 'e', now);
    expect(condition(s, 'Progressing')).toEqual(expect.objectContaining({ status: 'True', reason: 'RollingOut' }));
  });

  it('is Degraded/Unschedulable with the scheduler message of a pending pod', () => {
    const pending: V1Pod = {
      metadata: { name: 'gpt-1' },
      status: {
        phase: 'Pending',
        conditions: [
          {
            type: 'PodScheduled',
            status: 'False',
            reason: 'Unschedulable',
            message: '0/2 nodes are available: 2 Insufficient nvidia.com/gpu.',
          },
        ],
      },
    };
    const s = computeStatus(modelDeployment({ resources: { gpus: 16 } }), deployment(1, 0), [pending], 's', 'e', now);
    expect(condition(s, 'Degraded')).toEqual(
      expect.objectContaining({
        status: 'True',
        reason: 'Unschedulable',
        message: 'pod gpt-1: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu.',
      }),
    );
    expect(condition(s, 'Ready')).toEqual(expect.objectContaining({ status: 'False', reason: 'NoReplicasReady' }));
  });

  it('is Degraded/CrashLoop when a container is in CrashLoopBackOff, ahead of other problems', () => {
    const crashing: V1Pod = {
      metadata: { name: 'gpt-2' },
      status: {
        phase: 'Running',
        containerStatuses: [
          {
            name: 'worker',
            image: 'w',
            imageID: '',
            ready: false,
            restartCount: 4,
            state: { waiting: { reason: 'CrashLoopBackOff' } },
            lastState: { terminated: { exitCode: 3, reason: 'Error' } },
          },
        ],
      },
    };
    expect(podProblems([crashing])).toEqual({
      reason: 'CrashLoop',
      message: 'container worker of pod gpt-2 is in CrashLoopBackOff after 4 restarts (last exit code 3, Error)',
    });
  });

  it('keeps lastTransitionTime while a condition keeps its status, and detects changes', () => {
    const mdep = modelDeployment({ replicas: 1 });
    const first = computeStatus(mdep, deployment(1, 1), [pod('a')], 's', 'e', now);
    mdep.status = { ...first };
    const later = computeStatus(mdep, deployment(1, 1), [pod('a')], 's', 'e', new Date('2026-11-23T13:00:00Z'));
    expect(later.conditions).toEqual(first.conditions);
    expect(statusChanged(mdep, later)).toBe(false);
    const scaled = computeStatus(mdep, deployment(1, 0), [], 's', 'e', new Date('2026-11-23T13:00:00Z'));
    expect(statusChanged(mdep, scaled)).toBe(true);
    expect(condition(scaled, 'Ready').lastTransitionTime).toBe('2026-11-23T13:00:00Z');
  });

  it('flags a Degraded condition for an Event only when it turns True or changes reason', () => {
    const mdep = modelDeployment();
    const pending: V1Pod = {
      metadata: { name: 'p' },
      status: { phase: 'Pending', conditions: [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable' }] },
    };
    const s = computeStatus(mdep, deployment(1, 0), [pending], 's', 'e', now);
    expect(newlyDegraded(mdep, s)?.reason).toBe('Unschedulable');
    mdep.status = { ...s };
    expect(newlyDegraded(mdep, computeStatus(mdep, deployment(1, 0), [pending], 's', 'e', now))).toBeUndefined();
  });

  it('reports a failed write as Degraded/ApplyFailed, ahead of pod problems', () => {
    const s = computeStatus(modelDeployment(), undefined, [], 's', 'e', now, 'service: 500 Internal: range is full');
    expect(condition(s, 'Degraded')).toEqual(
      expect.objectContaining({
        status: 'True',
        reason: 'ApplyFailed',
        message: 'service: 500 Internal: range is full',
      }),
    );
    expect(condition(s, 'Progressing')).toEqual(expect.objectContaining({ status: 'True', reason: 'Creating' }));
  });

  it('reports ScaledToZero rather than not-ready when spec.replicas is 0', () => {
    const s = computeStatus(modelDeployment({ replicas: 0 }), deployment(0, 0), [], 's', 'e', now);
    expect(condition(s, 'Ready')).toEqual(expect.objectContaining({ status: 'False', reason: 'ScaledToZero' }));
  });
});
