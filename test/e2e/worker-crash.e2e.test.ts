// kill -9 of a worker mid-stream: that client gets a clean error (not a hang or a silently truncated answer), new
// requests succeed on the other replica, and the pod's container is restarted and serves again.
import OpenAI from 'openai';

import { tinyModelDeployment, useLocalSystem } from '../support/localSystem.js';
import { workerRunning } from '../support/localSystemProbes.js';
import { waitFor } from '../support/wait.js';

const suite = useLocalSystem({ name: 'e2e-worker-crash', nodes: 2, gpusPerNode: 1 });

const manifest = tinyModelDeployment(
  'crash',
  `
  engine:
    maxContext: 4096
    maxSeqs: 8
  replicas: 2
  drain:
    maxSeconds: 10`,
);

test('a worker killed mid-stream ends that stream with an error; others serve; the pod comes back', async () => {
  const { sys } = suite;
  expect((await sys.cp.kubectl(['apply', '-f', '-'], { input: manifest })).code).toBe(0);
  await waitFor(
    async () =>
      (await sys.cp.kubectl(['get', 'mdep', 'crash', '-o', 'jsonpath={.status.readyReplicas}'])).stdout === '2',
    {
      timeoutMs: 180_000,
      intervalMs: 1000,
      description: 'mdep/crash with 2 ready replicas',
    },
  );

  const client = new OpenAI({ baseURL: `${sys.gatewayUrl}/v1`, apiKey: 'unused', maxRetries: 0 });
  const stream = await client.chat.completions.create({
    model: 'crash',
    messages: [{ role: 'user', content: 'Write a very long story.' }],
    max_tokens: 3000,
    stream: true,
  });
  const iterator = stream[Symbol.asyncIterator]();
  await iterator.next();
  await iterator.next();

  // The replica serving the stream is the one with a running request.
  const ips = [...sys.agent.podIPs().keys()];
  const loads = await Promise.all(ips.map(workerRunning));
  const victim = ips[loads.indexOf(1)];
  expect(victim).toBeDefined();
  const [pid] = sys.agent.podPids().get(victim as string) ?? [];
  expect(pid).toBeGreaterThan(0);
  process.kill(pid as number, 'SIGKILL');

  let chunks = 0;
  await expect(
    (async () => {
      for (let r = await iterator.next(); !r.done; r = await iterator.next()) chunks += 1;
    })(),
  ).rejects.toThrow();
  expect(chunks).toBeLessThan(3000);

  // New requests go to the surviving replica.
  for (let i = 0; i < 5; i++) {
    const res = await client.chat.completions.create({
      model: 'crash',
      messages: [{ role: 'user', content: `after ${i}` }],
      max_tokens: 4,
    });
    expect(res.choices[0]?.finish_reason).toBeDefined();
  }

  // The killed container restarts and its pod is Ready again.
  await waitFor(
    async () => {
      const res = await sys.cp.kubectl([
        'get',
        'pods',
        '-l',
        'serving.modelserve.dev/model=crash',
        '-o',
        'jsonpath={range .items[*]}{.status.containerStatuses[0].restartCount}/{.status.containerStatuses[0].ready} {end}',
      ]);
      const states = res.stdout.trim().split(' ');
      return states.length === 2 && states.includes('1/true') && states.every((s) => s.endsWith('/true'));
    },
    { timeoutMs: 120_000, intervalMs: 1000, description: 'the killed worker restarted (restartCount 1) and Ready' },
  );
}, 420_000);
