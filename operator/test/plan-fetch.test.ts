// The fetch-weights init container of remote sources (worker/src/fetch.ts) and the node cache: with
// spec.prewarm.nodeCache it sees the cache entry (env and read-only mount) so it can skip the download, hf:// sources
// get the operator's Hub endpoint and token Secret, and its failure reason becomes the termination message.
import { defaultPlanConfig, plan, type PlanConfig } from '../src/controller/plan.js';
import { modelDeployment } from './fixtures.js';

const REV = 'a'.repeat(40);
const init = (p: ReturnType<typeof plan>) => p.deployment.spec!.template.spec!.initContainers?.[0];
const cfg: PlanConfig = {
  ...defaultPlanConfig,
  weightCacheDir: '/var/lib/modelserve/weights',
  hfEndpoint: 'http://mirror.local:8080',
  hfTokenSecret: 'hf-token',
};

describe('plan: fetch-weights init container', () => {
  it('gives the init container the cache entry, the Hub endpoint and the token Secret', () => {
    const p = plan(
      modelDeployment({ model: { source: 'hf://openai/gpt-oss-20b', revision: REV }, prewarm: { nodeCache: true } }),
      cfg,
    );
    const c = init(p)!;
    const worker = p.deployment.spec!.template.spec!.containers[0]!;
    const cacheEnv = worker.env!.filter((e) => e.name.startsWith('MODELSERVE_WEIGHTS_CACHE'));
    expect(cacheEnv.map((e) => e.name).sort()).toEqual(['MODELSERVE_WEIGHTS_CACHE', 'MODELSERVE_WEIGHTS_CACHE_MARKER']);
    expect(c.env).toEqual(
      expect.arrayContaining([
        ...cacheEnv,
        { name: 'HF_ENDPOINT', value: 'http://mirror.local:8080' },
        { name: 'HF_TOKEN', valueFrom: { secretKeyRef: { name: 'hf-token', key: 'token', optional: true } } },
      ]),
    );
    expect(c.volumeMounts).toEqual(
      expect.arrayContaining([{ name: 'weights-cache', mountPath: '/weights-cache', readOnly: true }]),
    );
    expect(c.volumeMounts).toEqual(
      expect.arrayContaining([expect.objectContaining({ name: 'weights', readOnly: false })]),
    );
    expect(c.terminationMessagePolicy).toBe('FallbackToLogsOnError');
  });

  it('has no cache env or mount without nodeCache, and no Hub settings for http(s) sources', () => {
    const hf = init(plan(modelDeployment({ model: { source: 'hf://openai/gpt-oss-20b', revision: REV } }), cfg))!;
    expect(hf.env!.map((e) => e.name)).toEqual(['HF_ENDPOINT', 'HF_TOKEN']);
    expect(hf.volumeMounts!.map((m) => m.name)).toEqual(['weights', 'engine-config']);
    const http = init(
      plan(
        modelDeployment({ model: { source: 'https://example.com/gpt', sha256: { 'config.json': 'b'.repeat(64) } } }),
        cfg,
      ),
    )!;
    expect(http.env).toEqual([]);
  });

  it('runs no init container for sources mounted as volumes', () => {
    expect(init(plan(modelDeployment({ prewarm: { nodeCache: true } }), cfg))).toBeUndefined();
    expect(init(plan(modelDeployment({ model: { source: 'pvc://models/gpt' } }), cfg))).toBeUndefined();
  });
});
