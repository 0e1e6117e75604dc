import type { KubernetesObject, V1Pod } from '@kubernetes/client-node';
import { defaultPlanConfig, plan } from '../src/controller/plan.js';
import { VICTIM_COST } from '../src/controller/scaleDown.js';
import {
  ANNOTATION_TEMPLATE_HASH,
  LABEL_ROLE,
  planRoles,
  rankForServing,
  scaleDownVictims,
  SERVING_COST,
  servingCostChanges,
  standbyCounts,
  standbyReplicas,
  type Role,
} from '../src/controller/standby.js';
import { collectStateMetrics } from '../src/controller/stateMetrics.js';
import { computeStatus } from '../src/controller/status.js';
import type { Informer } from '../src/k8s/informer.js';
import { registry, setStateCollector } from '../src/telemetry/metrics.js';
import { modelDeployment, pod } from './fixtures.js';

function worker(name: string, role: Role | undefined, opts: Parameters<typeof pod>[1] = {}): V1Pod {
  const p = pod(name, opts);
  if (role) p.metadata!.labels![LABEL_ROLE] = role;
  return p;
}
const names = (pods: V1Pod[]) => pods.map((p) => p.metadata!.name);

describe('standby replicas in plan()', () => {
  it('runs spec.replicas + standbys pods, all created serving, and the Service selects serving pods only', () => {
    const p = plan(modelDeployment({ replicas: 2, prewarm: { standbyReplicas: 1 } }), defaultPlanConfig);
    expect(p.deployment.spec!.replicas).toBe(3);
    expect(p.standby).toEqual({ count: 1, limited: 0 });
    expect(p.deployment.spec!.template.metadata!.labels![LABEL_ROLE]).toBe('serving');
    expect(p.service.spec!.selector![LABEL_ROLE]).toBe('serving');
    // The Deployment and the PDB keep selecting every worker pod, standbys included.
    expect(p.deployment.spec!.selector.matchLabels![LABEL_ROLE]).toBeUndefined();
    expect(p.podDisruptionBudget.spec!.selector!.matchLabels![LABEL_ROLE]).toBeUndefined();
  });

  it('keeps standbys at zero replicas (a scale from zero promotes one)', () => {
    const p = plan(modelDeployment({ replicas: 0, prewarm: { standbyReplicas: 2 } }), defaultPlanConfig);
    expect(p.deployment.spec!.replicas).toBe(2);
  });

  it('changes no template when only the standby count changes (no rollout)', () => {
    const a = plan(modelDeployment({ prewarm: { standbyReplicas: 0 } }), defaultPlanConfig);
    const b = plan(modelDeployment({ prewarm: { standbyReplicas: 3 } }), defaultPlanConfig);
    expect(b.deployment.spec!.template).toEqual(a.deployment.spec!.template);
    expect(b.deployment.metadata!.annotations).toEqual(a.deployment.metadata!.annotations);
  });

  it('counts standbys against maxGPUs: serving replicas come first, standbys get what is left', () => {
    const spec = (replicas: number) => ({
      replicas,
      resources: { gpus: 2 },
      autoscaling: { maxReplicas: 4, maxGPUs: 8 },
      prewarm: { standbyReplicas: 2 },
    });
    expect(standbyReplicas(modelDeployment(spec(1)))).toEqual({ count: 2, limited: 0 });
    expect(standbyReplicas(modelDeployment(spec(3)))).toEqual({ count: 1, limited: 1 });
    expect(standbyReplicas(modelDeployment(spec(4)))).toEqual({ count: 0, limited: 2 });
    expect(plan(modelDeployment(spec(3)), defaultPlanConfig).deployment.spec!.replicas).toBe(4);
    // No budget, or CPU-only workers: every standby is kept.
    expect(standbyReplicas(modelDeployment({ replicas: 9, prewarm: { standbyReplicas: 2 } })).count).toBe(2);
  });
});

describe('planRoles', () => {
  it('promotes a ready standby on scale-up and demotes the new, still loading pod', () => {
    const pods = [
      worker('a', 'serving', { created: '2026-01-01T00:00:00Z' }),
      worker('s', 'standby', { created: '2026-01-02T00:00:00Z' }),
      worker('new', 'serving', { created: '2026-01-03T00:00:00Z', ready: false }),
    ];
    expect(planRoles(pods, 2)).toEqual([
      { pod: 's', from: 'standby', to: 'serving', ready: true },
      { pod: 'new', from: 'serving', to: 'standby', ready: false },
    ]);
  });

  it('changes nothing when the roles already fit (ready pods keep their role, whatever their age)', () => {
    const pods = [
      worker('old-standby', 'standby', { created: '2026-01-01T00:00:00Z' }),
      worker('new-serving', 'serving', { created: '2026-01-02T00:00:00Z' }),
    ];
    expect(planRoles(pods, 1)).toEqual([]);
  });

  it('swaps a loading serving pod for a ready standby, promotion listed first', () => {
    const pods = [
      worker('loading', 'serving', { created: '2026-01-01T00:00:00Z', ready: false }),
      worker('warm', 'standby', { created: '2026-01-02T00:00:00Z' }),
    ];
    expect(planRoles(pods, 1).map((c) => `${c.pod}:${c.to}`)).toEqual(['warm:serving', 'loading:standby']);
  });

  it('demotes the pod marked for scale-down removal rather than a survivor', () => {
    const pods = [
      worker('a', 'serving', { created: '2026-01-01T00:00:00Z', annotations: { [VICTIM]: VICTIM_COST } }),
      worker('b', 'serving', { created: '2026-01-02T00:00:00Z' }),
      worker('s', 'standby', { created: '2026-01-03T00:00:00Z' }),
    ];
    expect(planRoles(pods, 1)).toEqual([{ pod: 'a', from: 'serving', to: 'standby', ready: true }]);
  });

  it('labels pods from before roles existed, and ignores terminating and finished pods', () => {
    const terminating = worker('gone', 'serving', { created: '2026-01-01T00:00:00Z' });
    terminating.metadata!.deletionTimestamp = new Date('2026-01-05T00:00:00Z');
    const pods = [
      terminating,
      worker('failed', 'serving', { phase: 'Failed', ready: false }),
      worker('legacy', undefined, { created: '2026-01-02T00:00:00Z' }),
      worker('legacy2', undefined, { created: '2026-01-03T00:00:00Z' }),
    ];
    expect(names(rankForServing(pods))).toEqual(['legacy', 'legacy2']);
    expect(planRoles(pods, 1)).toEqual([
      { pod: 'legacy', from: undefined, to: 'serving', ready: true },
      { pod: 'legacy2', from: undefined, to: 'standby', ready: true },
    ]);
  });

  it('demotes exactly the pod the scale-down will remove, even when both rankings tie', () => {
    // Two serving pods created in the same second: the removal ranking and the serving ranking fall back to names.
    const pods = [worker('pod-a', 'serving'), worker('pod-b', 'serving')];
    const removing = scaleDownVictims(pods, 1);
    expect(removing.size).toBe(1);
    const changes = planRoles(pods, 1, undefined, removing);
    expect(changes).toEqual([{ pod: [...removing][0], from: 'serving', to: 'standby', ready: true }]);
    // No scale-down in progress: nothing is demoted for removal, and a not-ready pod is removed first.
    expect(scaleDownVictims(pods, 2).size).toBe(0);
    expect(scaleDownVictims([...pods, worker('loading', 'standby', { ready: false })], 2)).toEqual(
      new Set(['loading']),
    );
  });

  it('in a rollout, hands serving to a ready pod of the current template before the old one goes', () => {
    const at = (hash: string) => ({ [ANNOTATION_TEMPLATE_HASH]: hash });
    const pods = [
      worker('old', 'serving', { created: '2026-01-01T00:00:00Z', annotations: at('v1') }),
      worker('old-standby', 'standby', { created: '2026-01-02T00:00:00Z', annotations: at('v1') }),
      worker('new', 'standby', { created: '2026-01-03T00:00:00Z', annotations: at('v2') }),
    ];
    expect(planRoles(pods, 1, 'v2')).toEqual([
      { pod: 'new', from: 'standby', to: 'serving', ready: true },
      { pod: 'old', from: 'serving', to: 'standby', ready: true },
    ]);
    // Not yet ready: the old pod keeps serving.
    pods[2] = worker('new', 'standby', { created: '2026-01-03T00:00:00Z', annotations: at('v2'), ready: false });
    expect(planRoles(pods, 1, 'v2')).toEqual([]);
    // plan() stamps the template with its hash, and it moves with the template only.
    const a = plan(modelDeployment({ engine: { maxSeqs: 16 } }), defaultPlanConfig).deployment.spec!.template;
    const b = plan(modelDeployment({ engine: { maxSeqs: 32 } }), defaultPlanConfig).deployment.spec!.template;
    expect(a.metadata!.annotations![ANNOTATION_TEMPLATE_HASH]).toMatch(/^[0-9a-f]{16}$/);
    expect(a.metadata!.annotations![ANNOTATION_TEMPLATE_HASH]).not.toBe(
      b.metadata!.annotations![ANNOTATION_TEMPLATE_HASH],
    );
  });

  it('serves with every live pod when there are fewer than spec.replicas', () => {
    const pods = [worker('s', 'standby')];
    expect(planRoles(pods, 3)).toEqual([{ pod: 's', from: 'standby', to: 'serving', ready: true }]);
  });
});

describe('servingCostChanges', () => {
  const cost = (p: V1Pod) => p.metadata!.annotations?.[VICTIM];

  it('makes serving pods dearer to delete than standbys, so a rollout removes an old standby first', () => {
    // Mid-rollout: the old serving pod, the old standby and a new ready pod that this pass promotes.
    const pods = [
      worker('old-serving', 'serving', { created: '2026-01-01T00:00:00Z' }),
      worker('old-standby', 'standby', { created: '2026-01-01T00:01:00Z' }),
      worker('new', 'standby', { created: '2026-01-02T00:00:00Z' }),
    ];
    const roles = new Map<string, Role>([
      ['new', 'serving'],
      ['old-serving', 'standby'],
    ]);
    expect(servingCostChanges(pods, roles, 1)).toEqual(new Map([['new', SERVING_COST]]));
    // Before the promotion lands, the old serving pod is the dear one.
    const before = servingCostChanges(pods, new Map(), 1);
    expect(before).toEqual(new Map([['old-serving', SERVING_COST]]));
    expect(Number(SERVING_COST)).toBeGreaterThan(0);
  });

  it('removes the cost from a demoted pod and leaves scale-down victims marked', () => {
    const pods = [
      worker('a', 'serving', { annotations: { [VICTIM]: SERVING_COST } }),
      worker('b', 'serving', { annotations: { [VICTIM]: VICTIM_COST } }),
      worker('c', 'serving', { annotations: { [VICTIM]: SERVING_COST } }),
    ];
    const changes = servingCostChanges(
      pods,
      new Map<string, Role>([
        ['a', 'standby'],
        ['b', 'standby'],
      ]),
      1,
    );
    expect(changes).toEqual(new Map([['a', null]]));
    expect(pods.map(cost)).toEqual([SERVING_COST, VICTIM_COST, SERVING_COST]);
  });

  it('sets nothing without standbys, and clears what an earlier standby pool left', () => {
    const pods = [worker('a', 'serving'), worker('b', 'serving', { annotations: { [VICTIM]: SERVING_COST } })];
    expect(servingCostChanges(pods, new Map(), 0)).toEqual(new Map([['b', null]]));
  });

  it('ignores terminating and finished pods', () => {
    const gone = worker('gone', 'serving');
    gone.metadata!.deletionTimestamp = new Date('2026-01-03T00:00:00Z');
    const done = worker('done', 'serving', { phase: 'Succeeded' });
    expect(servingCostChanges([gone, done], new Map(), 1)).toEqual(new Map());
  });
});

describe('status with standbys', () => {
  const deployment = (replicas: number, ready: number) => ({
    metadata: { generation: 1 },
    spec: { replicas, selector: { matchLabels: {} }, template: {} },
    status: { observedGeneration: 1, replicas, readyReplicas: ready, updatedReplicas: replicas },
  });

  it('reports serving pods in replicas/readyReplicas and the standbys in the Ready message', () => {
    const mdep = modelDeployment({ replicas: 1, prewarm: { standbyReplicas: 1 } });
    const pods = [worker('a', 'serving'), worker('s', 'standby')];
    const status = computeStatus(
      mdep,
      deployment(2, 2),
      pods,
      'sel',
      'ep',
      new Date(),
      undefined,
      standbyCounts(pods, { count: 1, limited: 0 }),
    );
    expect(status).toEqual(expect.objectContaining({ replicas: 1, readyReplicas: 1, desiredReplicas: 1 }));
    const ready = status.conditions.find((c) => c.type === 'Ready')!;
    expect([ready.status, ready.message]).toEqual(['True', '1/1 ready; 1/1 standby ready']);
    expect(status.conditions.find((c) => c.type === 'Progressing')!.status).toBe('False');
  });

  it('is still Progressing while the standby pool is short', () => {
    const mdep = modelDeployment({ replicas: 1, prewarm: { standbyReplicas: 1 } });
    const pods = [worker('a', 'serving'), worker('s', 'standby', { ready: false })];
    const status = computeStatus(
      mdep,
      deployment(2, 1),
      pods,
      'sel',
      'ep',
      new Date(),
      undefined,
      standbyCounts(pods, { count: 1, limited: 0 }),
    );
    expect(status.readyReplicas).toBe(1);
    expect(status.conditions.find((c) => c.type === 'Ready')!.message).toBe('1/1 ready; 0/1 standby ready');
    expect(status.conditions.find((c) => c.type === 'Progressing')!.status).toBe('True');
  });
});

describe('the standby state series', () => {
  afterEach(() => setStateCollector(undefined));

  it('counts ready standby pods in modelserve_operator_modeldeployment_replicas{state="standby"}', async () => {
    const cache = <T extends KubernetesObject>(items: T[]) =>
      ({ list: () => items, get: () => items[0] }) as unknown as Informer<T>;
    const pods = [
      worker('gpt-a', 'serving'),
      worker('gpt-s1', 'standby'),
      worker('gpt-s2', 'standby', { ready: false }),
    ];
    setStateCollector(() =>
      collectStateMetrics(cache([modelDeployment({ prewarm: { standbyReplicas: 2 } })]), cache(pods)),
    );
    const text = await registry.metrics();
    expect(text).toContain(
      'modelserve_operator_modeldeployment_replicas{namespace="ml",modeldeployment="gpt",model_name="gpt-oss-20b",state="standby"} 1',
    );
  });
});

const VICTIM = 'controller.kubernetes.io/pod-deletion-cost';
