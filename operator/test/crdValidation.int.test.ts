// The CRD against the real API server: it installs (structural schema, CEL rules compile within cost limits),
// fills defaults, explains every field, and rejects bad manifests with messages that name the field.
import { jest } from '@jest/globals';
import { startControlPlane, type ControlPlane } from '../../test/support/controlPlane.js';
import { applyManifest, installCrd, modelDeploymentManifest } from './harness.js';

jest.setTimeout(180_000);

let cp: ControlPlane;
beforeAll(async () => {
  cp = await startControlPlane({ gpuNodes: 0 });
  await installCrd(cp);
});
afterAll(async () => {
  await cp?.stop();
});

const reject = async (spec: Record<string, unknown>, ...patterns: RegExp[]) => {
  const r = await applyManifest(cp, modelDeploymentManifest('bad', spec));
  expect(r.code).not.toBe(0);
  for (const p of patterns) expect(r.stderr).toMatch(p);
};

describe('ModelDeployment validation by the API server', () => {
  it('accepts a minimal manifest and fills the schema defaults', async () => {
    const r = await applyManifest(cp, modelDeploymentManifest('ok', {}));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const got = JSON.parse((await cp.kubectl(['get', 'mdep', 'ok', '-o', 'json'])).stdout);
    expect(got.spec.replicas).toBe(1);
    expect(got.spec.resources.gpus).toBe(1);
    expect(got.spec.engine).toEqual(
      expect.objectContaining({ maxContext: 8192, kvBlockSize: 16, kvDtype: 'auto', defaultReasoningEffort: 'medium' }),
    );
    expect(got.spec.autoscaling).toEqual(expect.objectContaining({ enabled: false, mode: 'Active', minReplicas: 1 }));
    expect(got.spec.drain.maxSeconds).toBe(60);
  });

  it('accepts the sample manifests in examples/', async () => {
    // Only complete manifests: examples/demo.yaml is a template that hack/demo.ts fills in.
    const files = ['gpt-oss-20b.yaml', 'gpt-oss-120b-hf.yaml', 'gpt-oss-20b-hpa.yaml', 'smollm2.yaml'].map(
      (f) => `examples/${f}`,
    );
    const r = await cp.kubectl(['apply', '--dry-run=server', ...files.flatMap((f) => ['-f', f])]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });

  it('rejects minReplicas above maxReplicas', () =>
    reject(
      { autoscaling: { minReplicas: 5, maxReplicas: 2 } },
      /spec\.autoscaling\.minReplicas/,
      /spec\.autoscaling\.minReplicas must not exceed spec\.autoscaling\.maxReplicas/,
    ));

  it('rejects an hf:// source without a pinned revision', async () => {
    await reject(
      { model: { name: 'm', source: 'hf://openai/gpt-oss-20b' } },
      /spec\.model\.revision/,
      /must pin a 40-hex commit/,
    );
    await reject(
      { model: { name: 'm', source: 'hf://openai/gpt-oss-20b', revision: 'main' } },
      /spec\.model\.revision/,
    );
  });

  it('rejects a GPU budget smaller than GPUs per replica times maxReplicas', () =>
    reject(
      { resources: { gpus: 4 }, autoscaling: { maxReplicas: 3, maxGPUs: 8 } },
      /spec\.autoscaling\.maxGPUs/,
      /spec\.resources\.gpus x spec\.autoscaling\.maxReplicas must not exceed spec\.autoscaling\.maxGPUs/,
    ));

  it('rejects a source scheme outside the allow-list', () =>
    reject(
      { model: { name: 'm', source: 's3://bucket/gpt' } },
      /spec\.model\.source/,
      /must start with one of file:\/\/, pvc:\/\/, http:\/\/, https:\/\/, hf:\/\//,
    ));

  it('rejects a relative file:// path and a malformed pvc:// claim', async () => {
    await reject({ model: { name: 'm', source: 'file://models/x' } }, /spec\.model\.source/, /absolute path/);
    await reject({ model: { name: 'm', source: 'pvc://Bad_Claim/x' } }, /spec\.model\.source/, /DNS-1123 claim name/);
  });

  it('rejects schedules whose cron is not five fields', () =>
    reject(
      { autoscaling: { schedules: [{ cron: '0 8 * *', minReplicas: 1, durationMinutes: 60 }] } },
      /spec\.autoscaling\.schedules\[0\]\.cron/,
      /exactly five space-separated fields/,
    ));

  it('rejects schedules above maxReplicas and a draft method without a draft source', async () => {
    await reject(
      {
        autoscaling: { maxReplicas: 2, schedules: [{ cron: '0 8 * * MON-FRI', minReplicas: 3, durationMinutes: 60 }] },
      },
      /spec\.autoscaling\.schedules/,
    );
    await reject({ engine: { speculative: { method: 'draft' } } }, /spec\.engine\.speculative\.draftSource/);
  });

  it('rejects out-of-range and mistyped fields by name', async () => {
    await reject({ resources: { gpus: 17 } }, /spec\.resources\.gpus/);
    await reject({ engine: { kvDtype: 'int3' } }, /spec\.engine\.kvDtype/, /Unsupported value: "int3"/);
    await reject({ engine: { maxSeqs: 512, maxBatchedTokens: 256 } }, /spec\.engine\.maxBatchedTokens/);
    await reject({ replicas: -1 }, /spec\.replicas/);
    await reject(
      { autoscaling: { prefillTokensPerSecond: 0 } },
      /spec\.autoscaling\.prefillTokensPerSecond/,
      /should be greater than or equal to 1/,
    );
    await reject({ autoscaling: { prefillTokensPerSecond: -5 } }, /spec\.autoscaling\.prefillTokensPerSecond/);
    await reject(
      { model: { name: 'm', source: 'file:///x', sha256: { 'a.safetensors': 'xyz' } } },
      /spec\.model\.sha256/,
    );
  });

  it('explains fields to the user', async () => {
    const r = await cp.kubectl(['explain', 'modeldeployment.spec.autoscaling']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/queueDepthPerReplica/);
    expect(r.stdout).toMatch(/Waiting requests per ready replica/);
    expect(r.stdout).toMatch(/prefillTokensPerSecond/);
    expect(r.stdout).toMatch(/the engine's\s+prefill\s+benchmark/);
  });

  it('accepts a positive prefillTokensPerSecond', async () => {
    const r = await applyManifest(
      cp,
      modelDeploymentManifest('prefill', { autoscaling: { prefillTokensPerSecond: 27805 } }),
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const got = JSON.parse((await cp.kubectl(['get', 'mdep', 'prefill', '-o', 'json'])).stdout);
    expect(got.spec.autoscaling.prefillTokensPerSecond).toBe(27805);
  });

  it('serves the printer columns and the short name', async () => {
    const r = await cp.kubectl(['get', 'mdep']);
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')[0]!.split(/\s+/)).toEqual([
      'NAME',
      'READY',
      'DESIRED',
      'QUEUE',
      'TTFT-P95',
      'SLO',
      'AGE',
    ]);
  });
});
