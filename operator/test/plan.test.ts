import { ANNOTATION_CONFIG_HASH, ANNOTATION_SPEC_HASH } from '../src/api/modelDeployment.js';
import { defaultPlanConfig, drainSeconds, labelValue, plan, planWeights, specHash } from '../src/controller/plan.js';
import { modelDeployment } from './fixtures.js';

const worker = (p: ReturnType<typeof plan>) => p.deployment.spec!.template.spec!.containers[0]!;

describe('plan', () => {
  it('requests spec.resources.gpus as nvidia.com/gpu, with CPU and memory', () => {
    const p = plan(modelDeployment({ resources: { gpus: 2, cpu: '8', memory: '64Gi' } }), defaultPlanConfig);
    expect(worker(p).resources).toEqual({
      requests: { 'nvidia.com/gpu': '2', cpu: '8', memory: '64Gi' },
      limits: { 'nvidia.com/gpu': '2', memory: '64Gi' },
    });
  });

  it('asks for no GPU when spec.resources.gpus is 0 (CPU backend)', () => {
    const p = plan(modelDeployment({ resources: { gpus: 0 } }), defaultPlanConfig);
    expect(worker(p).resources).toEqual({ requests: {}, limits: {} });
  });

  it('owns every object through a controller owner reference, labelled for the model', () => {
    const mdep = modelDeployment({ model: { name: 'openai/gpt-oss-120b' } });
    const p = plan(mdep, defaultPlanConfig);
    for (const obj of [p.configMap, p.deployment, p.service, p.podDisruptionBudget]) {
      expect(obj.metadata!.namespace).toBe('ml');
      expect(obj.metadata!.ownerReferences).toEqual([
        expect.objectContaining({ kind: 'ModelDeployment', name: 'gpt', uid: 'uid-1', controller: true }),
      ]);
      expect(obj.metadata!.labels!['serving.modelserve.dev/model']).toBe('openai-gpt-oss-120b');
      expect(obj.metadata!.annotations![ANNOTATION_SPEC_HASH]).toMatch(/^[0-9a-f]{16}$/);
    }
    expect(p.deployment.spec!.selector.matchLabels).toEqual(p.selector);
    // The Service selects serving pods only: standbys are left out of its EndpointSlices (controller/standby.ts).
    expect(p.service.spec!.selector).toEqual({ ...p.selector, 'serving.modelserve.dev/role': 'serving' });
    expect(p.servingSelector).toEqual(p.service.spec!.selector);
    expect(p.podDisruptionBudget.spec!.selector!.matchLabels).toEqual(p.selector);
    expect(p.deployment.spec!.template.metadata!.labels).toEqual(expect.objectContaining(p.servingSelector));
    expect(p.endpoint).toBe('http://gpt.ml.svc.cluster.local:8000');
    expect(p.service.spec!.clusterIP).toBe('None');
  });

  it('probes /ready and /health, and drains for spec.drain.maxSeconds', () => {
    const p = plan(modelDeployment({ drain: { maxSeconds: 120 } }), defaultPlanConfig);
    expect(worker(p).readinessProbe!.httpGet!.path).toBe('/ready');
    expect(worker(p).livenessProbe!.httpGet!.path).toBe('/health');
    expect(p.deployment.spec!.template.spec!.terminationGracePeriodSeconds).toBe(120);
    expect(worker(p).env).toContainEqual({ name: 'MODELSERVE_GRACE_SECONDS', value: '115' });
    expect(drainSeconds(10)).toBe(9);
    expect(drainSeconds(0)).toBe(0);
  });

  it("passes the engine settings as the worker's MODELSERVE_* variables", () => {
    const p = plan(
      modelDeployment({
        engine: { maxSeqs: 32, kvDtype: 'bf16', defaultReasoningEffort: 'high' },
        resources: { gpus: 0 },
      }),
      defaultPlanConfig,
    );
    const env = Object.fromEntries(
      worker(p)
        .env!.filter((e) => e.value !== undefined)
        .map((e) => [e.name, e.value]),
    );
    expect(env).toEqual(
      expect.objectContaining({
        MODELSERVE_MODEL: '/models',
        MODELSERVE_SERVED_MODEL_NAME: 'gpt-oss-20b',
        MODELSERVE_PORT: '8000',
        MODELSERVE_BACKEND: 'cpu',
        MODELSERVE_MAX_SEQS: '32',
        MODELSERVE_MAX_CONTEXT: '8192',
        MODELSERVE_KV_DTYPE: 'bfloat16',
        MODELSERVE_REASONING_EFFORT: 'high',
      }),
    );
  });

  it("gives the worker its container's memory limit, from which the CPU backend sizes its KV cache", () => {
    const limited = plan(modelDeployment({ resources: { gpus: 0, memory: '24Gi' } }), defaultPlanConfig);
    expect(worker(limited).resources!.limits).toEqual(expect.objectContaining({ memory: '24Gi' }));
    expect(worker(limited).env).toContainEqual({
      name: 'MODELSERVE_MEMORY_LIMIT',
      valueFrom: { resourceFieldRef: { containerName: worker(limited).name, resource: 'limits.memory' } },
    });
    const unlimited = plan(modelDeployment({ resources: { gpus: 0 } }), defaultPlanConfig);
    expect(worker(unlimited).env!.map((e) => e.name)).not.toContain('MODELSERVE_MEMORY_LIMIT');
  });

  it('carries scheduling constraints to the pod', () => {
    const p = plan(
      modelDeployment({
        resources: {
          nodeSelector: { 'gpu.nvidia.com/class': 'H100' },
          tolerations: [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }],
          priorityClassName: 'inference',
        },
      }),
      defaultPlanConfig,
    );
    const spec = p.deployment.spec!.template.spec!;
    expect(spec.nodeSelector).toEqual({ 'gpu.nvidia.com/class': 'H100' });
    expect(spec.tolerations).toEqual([{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }]);
    expect(spec.priorityClassName).toBe('inference');
  });

  it('uses the configured worker image and command unless the spec overrides the image', () => {
    const config = { ...defaultPlanConfig, workerImage: 'local/worker:dev', workerCommand: ['node', 'w.js'] };
    expect(worker(plan(modelDeployment(), config))).toEqual(
      expect.objectContaining({ image: 'local/worker:dev', command: ['node', 'w.js'] }),
    );
    expect(worker(plan(modelDeployment({ worker: { image: 'mine:1' } }), config)).image).toBe('mine:1');
  });

  it('mounts weights by source scheme', () => {
    expect(planWeights('file:///data/gpt')).toEqual({
      volumes: [{ name: 'weights', hostPath: { path: '/data/gpt', type: 'Directory' } }],
      mount: { name: 'weights', mountPath: '/models', readOnly: true },
      fetch: false,
    });
    expect(planWeights('pvc://models/gpt-oss/20b/')).toEqual({
      volumes: [{ name: 'weights', persistentVolumeClaim: { claimName: 'models', readOnly: true } }],
      mount: { name: 'weights', mountPath: '/models', readOnly: true, subPath: 'gpt-oss/20b' },
      fetch: false,
    });
    expect(planWeights('hf://openai/gpt-oss-20b').fetch).toBe(true);
    expect(planWeights('https://example.com/w').volumes).toEqual([{ name: 'weights', emptyDir: {} }]);
    expect(() => planWeights('s3://bucket/w')).toThrow(/spec.model.source: unsupported scheme s3/);
  });

  it('downloads remote weights in an init container running the fetch command', () => {
    const rev = 'a'.repeat(40);
    const p = plan(modelDeployment({ model: { source: 'hf://openai/gpt-oss-20b', revision: rev } }), defaultPlanConfig);
    const init = p.deployment.spec!.template.spec!.initContainers!;
    expect(init).toHaveLength(1);
    expect(init[0]!.command).toEqual(defaultPlanConfig.fetchCommand);
    expect(init[0]!.args).toEqual(
      expect.arrayContaining(['--source', 'hf://openai/gpt-oss-20b', '--revision', rev, '--dest', '/models']),
    );
    expect(plan(modelDeployment(), defaultPlanConfig).deployment.spec!.template.spec!.initContainers).toBeUndefined();
  });

  it('rolls the pods when the engine config changes, but not when only replicas change', () => {
    const base = plan(modelDeployment(), defaultPlanConfig);
    const engine = plan(modelDeployment({ engine: { maxSeqs: 32 } }), defaultPlanConfig);
    const scaled = plan(modelDeployment({ replicas: 5 }), defaultPlanConfig);
    const hash = (p: typeof base) => p.deployment.spec!.template.metadata!.annotations![ANNOTATION_CONFIG_HASH];
    expect(hash(engine)).not.toBe(hash(base));
    expect(JSON.parse(engine.configMap.data!['engine.json']!).engine.maxSeqs).toBe(32);
    expect(hash(scaled)).toBe(hash(base));
    expect(scaled.deployment.spec!.replicas).toBe(5);
    expect(specHash(scaled.deployment)).toBe(specHash(base.deployment));
    expect(specHash(engine.deployment)).not.toBe(specHash(base.deployment));
  });

  it('makes valid label values out of model ids', () => {
    expect(labelValue('openai/gpt-oss-20b')).toBe('openai-gpt-oss-20b');
    expect(labelValue('-x:y-')).toBe('x-y');
    expect(labelValue('m'.repeat(100))).toHaveLength(63);
  });
});
