// Full lifecycle on the local system: kubectl apply a ModelDeployment → pods run the worker as processes → Ready →
// a chat completion through the gateway with the official client → kubectl delete → every worker process gone.
import fs from 'node:fs';
import path from 'node:path';

import OpenAI from 'openai';

import { tinyModelDeployment, useLocalSystem } from '../support/localSystem.js';
import { waitFor } from '../support/wait.js';

const suite = useLocalSystem({ name: 'e2e-lifecycle', nodes: 2, gpusPerNode: 1 });

const manifest = tinyModelDeployment(
  'tiny',
  `
  engine:
    maxContext: 1024
    maxSeqs: 8
  replicas: 2
  drain:
    maxSeconds: 10`,
);

test('apply → Ready → serve through the gateway → delete → processes gone', async () => {
  const { sys } = suite;
  const applied = await sys.cp.kubectl(['apply', '-f', '-'], { input: manifest });
  expect(applied.stderr).toBe('');
  expect(applied.stdout).toContain('modeldeployment.serving.modelserve.dev/tiny created');

  await waitFor(
    async () => {
      const res = await sys.cp.kubectl([
        'get',
        'mdep',
        'tiny',
        '-o',
        'jsonpath={.status.readyReplicas}/{.status.conditions[?(@.type=="Ready")].status}',
      ]);
      return res.stdout === '2/True';
    },
    { timeoutMs: 180_000, intervalMs: 1000, description: 'mdep/tiny Ready with 2 ready replicas' },
  );
  const podIPs = [...sys.agent.podIPs().keys()];
  expect(podIPs).toHaveLength(2);

  const client = new OpenAI({ baseURL: `${sys.gatewayUrl}/v1`, apiKey: 'unused', maxRetries: 0 });
  const models = await client.models.list();
  expect(models.data.map((m) => m.id)).toContain('tiny');
  const completion = await client.chat.completions.create({
    model: 'tiny',
    messages: [{ role: 'user', content: 'Say hello.' }],
    max_tokens: 8,
    temperature: 0,
  });
  expect(completion.choices).toHaveLength(1);
  expect(completion.usage?.completion_tokens).toBeGreaterThan(0);
  expect(completion.usage?.completion_tokens).toBeLessThanOrEqual(8);

  const stream = await client.chat.completions.create({
    model: 'tiny',
    messages: [{ role: 'user', content: 'Count.' }],
    max_tokens: 6,
    stream: true,
    stream_options: { include_usage: true },
  });
  let chunks = 0;
  let usage: OpenAI.CompletionUsage | undefined;
  for await (const chunk of stream) {
    chunks += 1;
    usage = chunk.usage ?? usage;
  }
  expect(chunks).toBeGreaterThan(1);
  expect(usage?.completion_tokens).toBeGreaterThan(0);

  const deleted = await sys.cp.kubectl(['delete', 'mdep', 'tiny', '--wait=true', '--timeout=60s']);
  expect(deleted.code).toBe(0);
  await waitFor(
    async () => {
      const res = await sys.cp.kubectl([
        'get',
        'deploy,svc,pdb,cm,pods',
        '-l',
        'serving.modelserve.dev/model=tiny',
        '-o',
        'name',
      ]);
      return res.code === 0 && res.stdout.trim() === '' && sys.agent.podIPs().size === 0;
    },
    { timeoutMs: 90_000, intervalMs: 1000, description: 'everything of mdep/tiny deleted and its processes gone' },
  );
  for (const ip of podIPs)
    await expect(fetch(`http://${ip}:8000/health`, { signal: AbortSignal.timeout(2000) })).rejects.toThrow();
  expect(fs.existsSync(path.join(sys.cp.dir, 'node-agent.log'))).toBe(true);
}, 420_000);
