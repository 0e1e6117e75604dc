// A real redis-server answers an ioredis client, and survives a restart on the same port.
import { Redis } from 'ioredis';

import { startRedis, type RedisServer } from '../support/redis.js';

let server: RedisServer;

beforeAll(async () => {
  server = await startRedis();
});

afterAll(async () => {
  await server?.stop();
});

test('ioredis talks to the real redis-server', async () => {
  const client = new Redis(server.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await client.connect();
    expect(await client.ping()).toBe('PONG');
    const info = await client.info('server');
    const version = /redis_version:(\S+)/.exec(info)?.[1];
    process.stdout.write(`real redis-server ${version} at ${server.url}\n`);
    expect(version).toMatch(/^\d+\.\d+/);
    await client.set('modelserve:test', 'v1', 'EX', 30);
    expect(await client.get('modelserve:test')).toBe('v1');
    expect(await client.incrby('modelserve:counter', 5)).toBe(5);
  } finally {
    client.disconnect();
  }
});

test('a restarted redis-server comes back empty on the same port and clients reconnect', async () => {
  const client = new Redis(server.url, { maxRetriesPerRequest: 3, retryStrategy: (n) => Math.min(n * 100, 1000) });
  try {
    await client.set('before-restart', '1');
    await server.restart({ kill: true });
    await expect(
      (async () => {
        for (let i = 0; i < 50; i++) {
          try {
            return await client.get('before-restart');
          } catch {
            await new Promise((r) => setTimeout(r, 200));
          }
        }
        throw new Error('client never reconnected');
      })(),
    ).resolves.toBeNull();
    expect(await client.ping()).toBe('PONG');
  } finally {
    client.disconnect();
  }
});
