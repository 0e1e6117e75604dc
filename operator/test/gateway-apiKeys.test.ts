// API keys: hashing, Secret parsing (errors name the Secret and field), permission checks, the store's updates.
import type { V1Secret } from '@kubernetes/client-node';
import { ApiKeyStore, allowsModel, apiKeyFromSecret, bearerToken, hashKey } from '../src/gateway/apiKeys.js';

const b64 = (s: string) => Buffer.from(s).toString('base64');
function secret(name: string, data: Record<string, string>): V1Secret {
  return {
    metadata: { name, namespace: 'team', labels: { 'serving.modelserve.dev/api-key': 'true' } },
    data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, b64(v)])),
  };
}

test('hashKey is SHA-256 hex', () => {
  // Known answer: sha256("abc").
  expect(hashKey('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
});

test('a Secret becomes a key record holding only the hash', () => {
  const key = apiKeyFromSecret(
    secret('alice', { key: 'sk-alice-1', models: 'gpt-oss-20b, tiny ', rpm: '60', tpm: '1000' }),
  );
  expect(key).toEqual({
    id: 'team/alice',
    hash: hashKey('sk-alice-1'),
    models: new Set(['gpt-oss-20b', 'tiny']),
    rpm: 60,
    tpm: 1000,
  });
  expect(JSON.stringify({ ...key, models: [...key.models] })).not.toContain('sk-alice-1');
});

test('limits default to none; stringData works too', () => {
  const key = apiKeyFromSecret({ metadata: { name: 'b', namespace: 'n' }, stringData: { key: 'k', models: '*' } });
  expect(key.rpm).toBe(0);
  expect(key.tpm).toBe(0);
  expect(allowsModel(key, 'anything')).toBe(true);
});

test.each([
  [{ models: '*' }, 'data.key: missing or empty'],
  [{ key: 'k' }, 'data.models: missing or empty'],
  [{ key: 'k', models: ' , ' }, 'data.models: missing or empty'],
  [{ key: 'k', models: '*', rpm: 'lots' }, 'data.rpm: expected a non-negative integer, got "lots"'],
  [{ key: 'k', models: '*', tpm: '-1' }, 'data.tpm: expected a non-negative integer'],
])('malformed Secret %j is refused with a message naming it', (data, message) => {
  expect(() => apiKeyFromSecret(secret('bad', data))).toThrow(`Secret team/bad: ${message}`);
});

test('permission: listed models only', () => {
  const key = apiKeyFromSecret(secret('a', { key: 'k', models: 'm1,m2' }));
  expect(allowsModel(key, 'm1')).toBe(true);
  expect(allowsModel(key, 'm3')).toBe(false);
});

test('bearer tokens', () => {
  expect(bearerToken({ authorization: 'Bearer  sk-1 ' })).toBe('sk-1');
  expect(bearerToken({ authorization: 'bearer sk-1' })).toBe('sk-1');
  expect(bearerToken({ authorization: 'Basic abc' })).toBeUndefined();
  expect(bearerToken({ 'api-key': 'sk-2' })).toBe('sk-2');
  expect(bearerToken({})).toBeUndefined();
});

test('the store follows Secret changes: rotate, break, delete', () => {
  const store = new ApiKeyStore();
  expect(store.upsert(secret('alice', { key: 'old', models: '*' }))).toBeUndefined();
  expect(store.lookup('old')?.id).toBe('team/alice');
  store.upsert(secret('alice', { key: 'new', models: 'm' }));
  expect(store.lookup('old')).toBeUndefined();
  expect(store.lookup('new')?.models).toEqual(new Set(['m']));
  const err = store.upsert(secret('alice', { key: 'new' }));
  expect(err?.message).toContain('team/alice');
  expect(store.lookup('new')).toBeUndefined();
  store.upsert(secret('alice', { key: 'new', models: 'm' }));
  store.delete('team/alice');
  expect(store.lookup('new')).toBeUndefined();
  expect(store.size).toBe(0);
});
