import type { KubernetesObject } from '@kubernetes/client-node';
import { diffList } from '../src/k8s/informer.js';
import { canAcquire, microTime } from '../src/k8s/leaderElection.js';
import { collectionPath, objectPath, resources } from '../src/k8s/resources.js';
import { LineDecoder, buildPath } from '../src/k8s/rest.js';

const obj = (name: string, rv: string): KubernetesObject => ({
  metadata: { namespace: 'ns', name, resourceVersion: rv },
});

describe('informer relist diff', () => {
  it('turns a fresh list into the adds, updates and deletes a watch would have delivered', () => {
    const cache = new Map([
      ['ns/kept', obj('kept', '1')],
      ['ns/changed', obj('changed', '1')],
      ['ns/gone', obj('gone', '1')],
    ]);
    const changes = diffList(cache, [obj('kept', '1'), obj('changed', '2'), obj('new', '3')]);
    expect(changes.map((c) => `${c.type}:${c.obj.metadata!.name}`).sort()).toEqual([
      'add:new',
      'delete:gone',
      'update:changed',
    ]);
  });
});

describe('watch stream decoding', () => {
  it('splits JSON lines across chunk boundaries', () => {
    const d = new LineDecoder();
    expect(d.push('{"a":1}\n{"b"')).toEqual(['{"a":1}']);
    expect(d.push(':2}\n\n')).toEqual(['{"b":2}']);
  });
});

describe('paths', () => {
  it('builds core and group paths with subresources and queries', () => {
    expect(collectionPath(resources.pods)).toBe('/api/v1/pods');
    expect(objectPath(resources.modelDeployments, 'ml', 'gpt', 'status')).toBe(
      '/apis/serving.modelserve.dev/v1alpha1/namespaces/ml/modeldeployments/gpt/status',
    );
    expect(buildPath('/x', { a: 'b c', skip: undefined, force: true })).toBe('/x?a=b+c&force=true');
  });
});

describe('leader election', () => {
  it('acquires a free, released or own lease at once', () => {
    expect(canAcquire({}, 'me', 0, 0, 15_000)).toBe(true);
    expect(canAcquire({ holderIdentity: null }, 'me', 0, 0, 15_000)).toBe(true);
    expect(canAcquire({ holderIdentity: 'me' }, 'me', 0, 0, 15_000)).toBe(true);
  });

  it("waits a full lease duration on its own clock before taking another's lease", () => {
    expect(canAcquire({ holderIdentity: 'other' }, 'me', 1000, 15_000, 15_000)).toBe(false);
    expect(canAcquire({ holderIdentity: 'other' }, 'me', 1000, 16_001, 15_000)).toBe(true);
  });

  it('writes MicroTime with microseconds', () => {
    expect(microTime(new Date('2026-01-02T03:04:05.678Z'))).toBe('2026-01-02T03:04:05.678000Z');
  });
});
