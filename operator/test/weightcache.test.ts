// Pure pieces of the node-local weight cache: keys and names, the eviction choice, the Hub listing parse, the desired
// Jobs and node labels, the WeightsCached condition and the worker pod-template additions.
import { createHash, randomFillSync } from 'node:crypto';

import type { V1Job, V1Node, V1Pod } from '@kubernetes/client-node';

import { defaultPlanConfig, plan } from '../src/controller/plan.js';
import {
  cacheCondition,
  defaultWeightCacheConfig,
  desiredState,
  failureMessage,
  labelChanges,
  matchingNodes,
  retryAfterKeepChange,
  stagerJob,
} from '../src/weightcache/desired.js';
import { chooseEvictions, type CacheEntry } from '../src/weightcache/evict.js';
import { newHasher, PIPELINE_MIN_BYTES } from '../src/weightcache/hasher.js';
import {
  cacheKey,
  cacheLabel,
  entryName,
  keepHash,
  keyOfEntry,
  parseBytes,
  readyKeys,
  sourceSlug,
  stagerJobName,
} from '../src/weightcache/keys.js';
import { cacheTemplate } from '../src/weightcache/podTemplate.js';
import { describeError, parseHubListing, safeRelativePath } from '../src/weightcache/sources.js';
import { modelDeployment } from './fixtures.js';

const REV = 'c'.repeat(40);
const SHA = 'e'.repeat(64);

describe('keys', () => {
  const src = { namespace: 'ml', source: 'hf://openai/gpt-oss-20b', revision: REV };
  it('is stable, 16 hex digits, and independent of the order of spec.model.sha256', () => {
    expect(cacheKey(src)).toMatch(/^[0-9a-f]{16}$/);
    expect(cacheKey({ ...src, sha256: { a: SHA, b: 'f'.repeat(64) } })).toBe(
      cacheKey({ ...src, sha256: { b: 'f'.repeat(64), a: SHA } }),
    );
  });
  it('changes with namespace, source, revision and checksums', () => {
    const k = cacheKey(src);
    expect(cacheKey({ ...src, namespace: 'other' })).not.toBe(k);
    expect(cacheKey({ ...src, revision: 'd'.repeat(40) })).not.toBe(k);
    expect(cacheKey({ ...src, source: 'hf://openai/gpt-oss-120b' })).not.toBe(k);
    expect(cacheKey({ ...src, sha256: { 'config.json': SHA } })).not.toBe(k);
  });
  it('names entries by model, revision and key, and finds the key again', () => {
    const name = entryName(src);
    expect(name).toBe(`openai-gpt-oss-20b_cccccccccccc_${cacheKey(src)}`);
    expect(keyOfEntry(name)).toBe(cacheKey(src));
    expect(keyOfEntry('lost+found')).toBeUndefined();
    expect(sourceSlug('file:///')).toBe('weights');
    expect(sourceSlug('pvc://claim/a b/../c')).toBe('claim-a-b-..-c');
  });
  it('makes Job names valid for pods (≤ 63 with the suffix) and distinct per node', () => {
    const a = stagerJobName(cacheKey(src), 'gpu-node-1');
    expect(a.length + 6).toBeLessThanOrEqual(63);
    expect(a).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
    expect(stagerJobName(cacheKey(src), 'gpu-node-2')).not.toBe(a);
    expect(stagerJobName(cacheKey(src), 'x'.repeat(253)).length).toBeLessThan(40);
  });
  it('reads ready keys from node labels, ignoring other labels and values', () => {
    expect(
      readyKeys({
        [cacheLabel('0123456789abcdef')]: 'ready',
        [cacheLabel('fedcba9876543210')]: 'staging',
        'cache.modelserve.dev/key': '0123456789abcdef',
        zone: 'a',
      }),
    ).toEqual(['0123456789abcdef']);
  });
  it('parses byte quantities and names the flag on a bad one', () => {
    expect(parseBytes('500Gi', 'x')).toBe(500 * 2 ** 30);
    expect(parseBytes('2T', 'x')).toBe(2e12);
    expect(parseBytes('1048576', 'x')).toBe(1048576);
    expect(() => parseBytes('lots', '--weight-cache-budget')).toThrow(
      /--weight-cache-budget: expected a byte quantity/,
    );
  });
});

describe('chooseEvictions', () => {
  const e = (name: string, key: string, bytes: number, lastUsedMs: number, complete = true): CacheEntry => ({
    name,
    key,
    bytes,
    lastUsedMs,
    complete,
  });
  const entries = [
    e('old', 'k-old', 40, 1),
    e('new', 'k-new', 40, 5),
    e('wanted', 'k-wanted', 30, 0),
    e('half.staging', 'k-half', 10, 9, false),
    e('mine.staging', 'k-mine', 20, 9, false),
  ];
  it('evicts nothing when the new entry fits', () => {
    expect(
      chooseEvictions(entries, { keep: new Set(), current: 'k-mine', incomingBytes: 100, budgetBytes: 220 }),
    ).toEqual({ evict: [], usedAfter: 120 });
  });
  it('removes unfinished stagings first, then the least recently used, never wanted or current entries', () => {
    const choice = chooseEvictions(entries, {
      keep: new Set(['k-wanted']),
      current: 'k-mine',
      incomingBytes: 100,
      budgetBytes: 180,
    });
    expect(choice.evict).toEqual(['half.staging', 'old']);
    expect(choice.usedAfter).toBe(70);
  });
  it('refuses with the sizes when wanted entries alone leave no room', () => {
    expect(() =>
      chooseEvictions(entries, {
        keep: new Set(['k-wanted', 'k-old', 'k-new']),
        current: 'k-mine',
        incomingBytes: 100,
        budgetBytes: 150,
      }),
    ).toThrow(
      'disk budget 150 bytes is too small: the entry needs 100 bytes and entries still wanted on this node use 110 bytes',
    );
  });
});

describe('parseHubListing', () => {
  const body = {
    id: 'openai/gpt-oss-20b',
    sha: REV,
    siblings: [
      { rfilename: 'config.json', size: 1200, blobId: 'abc' },
      {
        rfilename: 'original/model.safetensors',
        size: 13_000_000_000,
        lfs: { sha256: SHA, size: 13_000_000_000, pointerSize: 135 },
      },
    ],
  };
  it('builds resolve URLs and carries LFS checksums and sizes', () => {
    expect(parseHubListing(body, 'https://mirror.example/', 'openai/gpt-oss-20b', REV)).toEqual([
      { path: 'config.json', from: `https://mirror.example/openai/gpt-oss-20b/resolve/${REV}/config.json`, size: 1200 },
      {
        path: 'original/model.safetensors',
        from: `https://mirror.example/openai/gpt-oss-20b/resolve/${REV}/original/model.safetensors`,
        size: 13_000_000_000,
        sha256: SHA,
      },
    ]);
  });
  it('takes spec.model.sha256 for files without LFS, and refuses a conflicting one', () => {
    const withSum = parseHubListing(body, 'https://h', 'o/r', REV, { 'config.json': 'a'.repeat(64) });
    expect(withSum[0]!.sha256).toBe('a'.repeat(64));
    expect(() =>
      parseHubListing(body, 'https://h', 'o/r', REV, { 'original/model.safetensors': 'a'.repeat(64) }),
    ).toThrow(/spec\.model\.sha256\["original\/model\.safetensors"\] is a{64} but the Hub lists e{64}/);
  });
  it('rejects answers without siblings and paths that leave the entry', () => {
    expect(() => parseHubListing({ error: 'nope' }, 'https://h', 'o/r', REV)).toThrow(/no "siblings" array/);
    expect(() => parseHubListing({ siblings: [{ rfilename: '../etc/passwd' }] }, 'https://h', 'o/r', REV)).toThrow(
      /unsafe file path/,
    );
    expect(() => safeRelativePath('/abs', 'x')).toThrow(/unsafe/);
    expect(safeRelativePath('a/b.safetensors', 'x')).toBe('a/b.safetensors');
  });
});

function node(
  name: string,
  labels: Record<string, string> = {},
  gpus = 1,
  extra: Partial<V1Node['spec']> = {},
): V1Node {
  return {
    metadata: { name, labels },
    spec: extra,
    status: { allocatable: { 'nvidia.com/gpu': String(gpus) } },
  };
}

describe('desired state', () => {
  const cached = (spec: Parameters<typeof modelDeployment>[0] = {}, name = 'gpt') =>
    modelDeployment(
      { model: { source: 'hf://openai/gpt-oss-20b', revision: REV }, prewarm: { nodeCache: true }, ...spec },
      { name },
    );
  const nodes = [
    node('a', { pool: 'x' }),
    node('b', { pool: 'y' }),
    node('cpu', { pool: 'x' }, 0),
    node('cordoned', { pool: 'x' }, 1, { unschedulable: true }),
    node('tainted', { pool: 'x' }, 1, { taints: [{ key: 'gpu', value: 'true', effect: 'NoSchedule' }] }),
  ];
  it('matches schedulable GPU nodes by nodeSelector, nodeCacheSelector and tolerations', () => {
    const names = (m: ReturnType<typeof cached>) => matchingNodes(m, nodes).map((n) => n.metadata!.name);
    expect(names(cached())).toEqual(['a', 'b']);
    expect(names(cached({ prewarm: { nodeCache: true, nodeCacheSelector: { pool: 'x' } } }))).toEqual(['a']);
    expect(
      names(
        cached({ resources: { gpus: 1, tolerations: [{ key: 'gpu', operator: 'Exists', effect: 'NoSchedule' }] } }),
      ),
    ).toEqual(['a', 'b', 'tainted']);
    expect(names(cached({ resources: { gpus: 0, nodeSelector: { pool: 'x' } } }))).toEqual(
      ['a', 'cpu', 'tainted'].filter((n) => n !== 'tainted'),
    );
  });
  it('wants one Job per entry and node, shared by deployments of the same content; none when nodeCache is off', () => {
    const d = desiredState([cached({}, 'one'), cached({}, 'two'), modelDeployment({}, { name: 'off' })], nodes);
    expect([...d.stages.values()].map((s) => `${s.node}:${s.mdep.metadata.name}`)).toEqual(['a:one', 'b:one']);
    expect(d.byMdep.get('ml/two')).toEqual(d.byMdep.get('ml/one'));
    expect(d.byMdep.has('ml/off')).toBe(false);
    expect([...d.keysByNode.get('a')!]).toEqual([d.byMdep.get('ml/one')!.key]);
  });
  it('labels a node once its Job completed and unlabels keys nobody wants', () => {
    const m = cached();
    const d = desiredState([m], nodes);
    const key = d.byMdep.get('ml/gpt')!.key;
    const stale = '0123456789abcdef';
    const labelled = [node('a', { [cacheLabel(stale)]: 'ready' }), node('b', { [cacheLabel(key)]: 'ready' })];
    const jobs = new Map<string, V1Job>(
      [...d.stages.values()].map((s) => [
        `${s.namespace}/${s.jobName}`,
        { status: { conditions: [{ type: s.node === 'a' ? 'Complete' : 'Failed', status: 'True' }] } } as V1Job,
      ]),
    );
    expect(Object.fromEntries(labelChanges(labelled, d, jobs))).toEqual({
      a: { [cacheLabel(stale)]: null, [cacheLabel(key)]: 'ready' },
    });
    expect(labelChanges(labelled, desiredState([], nodes), new Map()).get('b')).toEqual({ [cacheLabel(key)]: null });
  });
  it('passes HF_TOKEN from the configured Secret to hf:// stagers only', () => {
    const config = { ...defaultWeightCacheConfig, hfTokenSecret: 'hub-token' };
    const env = (m: ReturnType<typeof cached>) =>
      stagerJob([...desiredState([m], nodes).stages.values()][0]!, new Set(), config).spec!.template.spec!
        .containers[0]!.env;
    expect(env(cached())).toContainEqual({
      name: 'HF_TOKEN',
      valueFrom: { secretKeyRef: { name: 'hub-token', key: 'token', optional: true } },
    });
    expect(env(cached({ model: { source: 'file:///models/x' } }))?.some((e) => e.name === 'HF_TOKEN')).toBe(false);
  });
  it('builds a stager Job pinned to its node, with the keep list, budget, checksums and read-only source mounts', () => {
    const m = cached({ model: { source: 'pvc://weights/gpt-oss', sha256: { 'config.json': SHA } } });
    const stage = [...desiredState([m], nodes).stages.values()][0]!;
    const job = stagerJob(stage, new Set(['k2', 'k1']), {
      ...defaultWeightCacheConfig,
      budget: '100Gi',
      hfEndpoint: 'http://mirror',
    });
    const pod = job.spec!.template.spec!;
    expect(job.metadata!.name).toBe(stage.jobName);
    expect(job.spec!.backoffLimit).toBe(2);
    expect(pod.restartPolicy).toBe('Never');
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.affinity!.nodeAffinity!.requiredDuringSchedulingIgnoredDuringExecution!.nodeSelectorTerms).toEqual([
      { matchFields: [{ key: 'metadata.name', operator: 'In', values: ['a'] }] },
    ]);
    const c = pod.containers[0]!;
    expect(c.args).toEqual([
      '--source=pvc://weights/gpt-oss',
      '--root=/cache',
      `--entry=${stage.entry}`,
      `--key=${stage.key}`,
      '--budget=100Gi',
      '--keep=k1,k2',
      '--local-root=/source',
    ]);
    expect(c.env).toEqual([
      { name: 'MODELSERVE_STAGE_SHA256', value: JSON.stringify({ 'config.json': SHA }) },
      { name: 'HF_ENDPOINT', value: 'http://mirror' },
    ]);
    expect(c.terminationMessagePolicy).toBe('FallbackToLogsOnError');
    expect(c.volumeMounts).toEqual([
      { name: 'cache', mountPath: '/cache' },
      { name: 'source', mountPath: '/source', readOnly: true, subPath: 'gpt-oss' },
    ]);
    expect(pod.volumes).toContainEqual({
      name: 'source',
      persistentVolumeClaim: { claimName: 'weights', readOnly: true },
    });
  });
});

describe('retryAfterKeepChange', () => {
  const job = (keep: string[], failed = true): V1Job => ({
    metadata: { annotations: { 'cache.modelserve.dev/keep-hash': keepHash(keep) } },
    status: { conditions: [{ type: failed ? 'Failed' : 'Complete', status: 'True' }] },
  });
  const budget =
    'disk budget 100 bytes is too small: the entry needs 60 bytes and entries still wanted on this node use 70 bytes';
  it('retries a budget failure once the keys wanted on the node changed', () => {
    expect(retryAfterKeepChange(job(['a', 'b']), budget, new Set(['b']))).toBe(true);
    expect(retryAfterKeepChange(job(['a', 'b']), budget, new Set(['b', 'a']))).toBe(false);
  });
  it('never retries other failures, or Jobs that did not fail', () => {
    expect(retryAfterKeepChange(job(['a', 'b']), 'sha256 mismatch for x', new Set(['b']))).toBe(false);
    expect(retryAfterKeepChange(job(['a', 'b'], false), budget, new Set(['b']))).toBe(false);
  });
});

describe('WeightsCached', () => {
  const want = { key: 'k', entry: 'e', nodes: ['a', 'b'] };
  it('counts ready nodes and is True only when all are ready', () => {
    expect(cacheCondition(want, (n) => n === 'a', [])).toMatchObject({
      status: 'False',
      reason: 'Staging',
      readyNodes: 1,
      nodes: 2,
    });
    expect(cacheCondition(want, () => true, [])).toEqual({
      status: 'True',
      reason: 'Cached',
      message: '2 of 2 nodes ready with e',
      readyNodes: 2,
      nodes: 2,
    });
    expect(cacheCondition({ ...want, nodes: [] }, () => true, [])).toMatchObject({
      status: 'False',
      reason: 'NoMatchingNodes',
    });
  });
  it('reports a failed stager with its message', () => {
    const c = cacheCondition(want, () => false, [{ node: 'b', message: 'sha256 mismatch for x' }]);
    expect(c).toMatchObject({ status: 'False', reason: 'StagingFailed' });
    expect(c.message).toBe(
      '0 of 2 nodes ready; staging e on b failed: sha256 mismatch for x (delete its stager Job to retry)',
    );
  });
  it("takes the last line of the newest failed pod's termination message", () => {
    const pod = (created: string, message: string): V1Pod => ({
      metadata: { creationTimestamp: new Date(created) },
      status: {
        phase: 'Failed',
        containerStatuses: [
          {
            name: 's',
            image: '',
            imageID: '',
            ready: false,
            restartCount: 0,
            state: { terminated: { exitCode: 1, message } },
          },
        ],
      },
    });
    expect(
      failureMessage([
        pod('2026-01-01T00:00:00Z', 'stager: old'),
        pod('2026-01-02T00:00:00Z', '{"log":1}\nstager: new\n'),
      ]),
    ).toBe('new');
    expect(failureMessage([])).toBeUndefined();
    const killed = pod('2026-01-03T00:00:00Z', '{"msg":"progress","bytes":1024}');
    killed.metadata!.name = 'wcache-x-1';
    killed.status!.containerStatuses![0]!.state!.terminated!.exitCode = 137;
    expect(failureMessage([killed])).toBe(
      'stager pod wcache-x-1 exited with code 137; last log line: {"msg":"progress","bytes":1024}',
    );
  });
});

describe('worker pod template', () => {
  it('adds nothing unless nodeCache is on and the operator has a cache dir', () => {
    expect(cacheTemplate(modelDeployment(), '/var/cache')).toBeUndefined();
    expect(cacheTemplate(modelDeployment({ prewarm: { nodeCache: true } }), undefined)).toBeUndefined();
    const off = plan(modelDeployment(), { ...defaultPlanConfig, weightCacheDir: '/var/cache' });
    expect(off.deployment.spec!.template.spec!.affinity).toBeUndefined();
  });
  it('prefers ready nodes and mounts the cache root read-only, pointing the worker at its entry', () => {
    const m = modelDeployment({
      model: { source: 'hf://openai/gpt-oss-20b', revision: REV },
      prewarm: { nodeCache: true },
    });
    const p = plan(m, { ...defaultPlanConfig, weightCacheDir: '/var/cache' });
    const spec = p.deployment.spec!.template.spec!;
    const key = cacheKey({ namespace: 'ml', source: 'hf://openai/gpt-oss-20b', revision: REV });
    expect(spec.affinity!.nodeAffinity!.preferredDuringSchedulingIgnoredDuringExecution).toEqual([
      { weight: 100, preference: { matchExpressions: [{ key: cacheLabel(key), operator: 'In', values: ['ready'] }] } },
    ]);
    expect(spec.volumes).toContainEqual({
      name: 'weights-cache',
      hostPath: { path: '/var/cache', type: 'DirectoryOrCreate' },
    });
    const worker = spec.containers[0]!;
    expect(worker.volumeMounts).toContainEqual({ name: 'weights-cache', mountPath: '/weights-cache', readOnly: true });
    expect(worker.env).toContainEqual({
      name: 'MODELSERVE_WEIGHTS_CACHE',
      value: `/weights-cache/${entryName({ namespace: 'ml', source: 'hf://openai/gpt-oss-20b', revision: REV })}`,
    });
  });
});

describe('describeError', () => {
  it("adds fetch's cause code to its message", () => {
    const err = new TypeError('fetch failed', {
      cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }),
    });
    expect(describeError(err)).toBe('fetch failed (ECONNREFUSED)');
    expect(describeError(new Error('plain'))).toBe('plain');
    expect(describeError('text')).toBe('text');
  });
});

describe('newHasher', () => {
  const data = randomFillSync(Buffer.alloc(PIPELINE_MIN_BYTES + 12_345));
  const expected = createHash('sha256').update(data).digest('hex');
  it('gives the SHA-256 of everything fed, in any chunking, on the worker thread for large files', async () => {
    for (const chunk of [65_536, 3 << 20, 10_000_019]) {
      const h = newHasher(data.length);
      for (let o = 0; o < data.length; o += chunk) await h.update(data.subarray(o, o + chunk));
      expect(await h.digest()).toBe(expected);
    }
  });
  it('hashes small and unknown sizes inline', async () => {
    const h = newHasher(undefined);
    await h.update(data.subarray(0, 10));
    expect(await h.digest()).toBe(createHash('sha256').update(data.subarray(0, 10)).digest('hex'));
  });
});
