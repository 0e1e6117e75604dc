// The informer against a real API server: list+watch deliver add/update/delete for the selected objects only, and a
// resync re-delivers the cache. (The relist after 410 Gone is unit-tested through diffList: a real API server's watch
// cache does not reliably answer 410 on demand.)
import { jest } from '@jest/globals';
import type { V1ConfigMap } from '@kubernetes/client-node';
import { startControlPlane, type ControlPlane } from '../../test/support/controlPlane.js';
import { waitFor } from '../../test/support/wait.js';
import { Informer, type InformerEvent } from '../src/k8s/informer.js';
import { objectPath, resources } from '../src/k8s/resources.js';
import type { KubeClient } from '../src/k8s/rest.js';
import { adminClient } from './harness.js';

jest.setTimeout(120_000);

let cp: ControlPlane;
let api: KubeClient;
beforeAll(async () => {
  cp = await startControlPlane({ gpuNodes: 0 });
  api = adminClient(cp);
});
afterAll(async () => {
  api?.close();
  await cp?.stop();
});

const configMap = (name: string, labels: Record<string, string>, value: string): V1ConfigMap => ({
  apiVersion: 'v1',
  kind: 'ConfigMap',
  metadata: { name, namespace: 'default', labels },
  data: { value },
});

it('delivers adds, updates, deletes and resyncs for the label-selected objects', async () => {
  await api.apply(
    objectPath(resources.configMaps, 'default', 'before'),
    configMap('before', { sel: 'yes' }, '0'),
    'test',
  );
  const seen: string[] = [];
  const informer = new Informer<V1ConfigMap>(api, resources.configMaps, { labelSelector: 'sel=yes', resyncMs: 1000 });
  informer.on((event: InformerEvent, obj) => seen.push(`${event}:${obj.metadata?.name}:${obj.data?.value}`));
  informer.start();
  try {
    await informer.waitForSync();
    expect(seen).toEqual(['add:before:0']);
    expect(informer.get('default', 'before')?.kind).toBe('ConfigMap');

    await api.apply(objectPath(resources.configMaps, 'default', 'a'), configMap('a', { sel: 'yes' }, '1'), 'test');
    await api.apply(
      objectPath(resources.configMaps, 'default', 'other'),
      configMap('other', { sel: 'no' }, '1'),
      'test',
    );
    await api.apply(objectPath(resources.configMaps, 'default', 'a'), configMap('a', { sel: 'yes' }, '2'), 'test');
    await api.request('DELETE', objectPath(resources.configMaps, 'default', 'a'));
    await waitFor(() => seen.includes('delete:a:2'), { description: 'the delete event' });
    expect(seen.filter((s) => !s.startsWith('resync'))).toEqual([
      'add:before:0',
      'add:a:1',
      'update:a:2',
      'delete:a:2',
    ]);
    expect(informer.list().map((c) => c.metadata?.name)).toEqual(['before']);

    await waitFor(() => seen.includes('resync:before:0'), { description: 'a resync of the cached object' });
  } finally {
    await informer.stop();
  }
});

it("remember() takes a controller's own writes but never brings back an object the watch has deleted", async () => {
  const informer = new Informer<V1ConfigMap>(api, resources.configMaps, {
    labelSelector: 'sel=late',
    resyncMs: 60_000,
  });
  informer.start();
  try {
    await informer.waitForSync();
    const path = objectPath(resources.configMaps, 'default', 'late');
    const created = await api.apply<V1ConfigMap>(path, configMap('late', { sel: 'late' }, '1'), 'test');
    const written = await api.apply<V1ConfigMap>(path, configMap('late', { sel: 'late' }, '2'), 'test');
    // The write's answer before its watch event: the cache takes it; an older answer arriving later does not win.
    expect(informer.remember(written)).toBe(true);
    expect(informer.get('default', 'late')?.data?.value).toBe('2');
    expect(informer.remember(created)).toBe(false);
    expect(informer.get('default', 'late')?.data?.value).toBe('2');

    await api.request('DELETE', path);
    await waitFor(() => !informer.get('default', 'late'), { description: 'the informer dropping the deleted object' });
    // An answer to a write made before the deletion, processed after the DELETED event (a status write racing a
    // delete): it must stay out, or the object would live on in the cache.
    expect(informer.remember(written)).toBe(false);
    expect(informer.get('default', 'late')).toBeUndefined();

    // A new object under the same name is newer than the deletion: remembered.
    const again = await api.apply<V1ConfigMap>(path, configMap('late', { sel: 'late' }, '3'), 'test');
    expect(informer.remember(again)).toBe(true);
    expect(informer.get('default', 'late')?.data?.value).toBe('3');
    await api.request('DELETE', path);
  } finally {
    await informer.stop();
  }
});
