// Scale from zero without errors: requests to a model with no replica wait in the gateway queue, the gateway wakes the
// autoscaler through Redis, a worker pod starts on a node of the node agent, and every request is answered. Idle, the
// model scales back to zero.
import { tinyModelDeployment, useLocalSystem } from '../support/localSystem.js';
import { waitFor } from '../support/wait.js';

const suite = useLocalSystem({ name: 'e2e-scale-from-zero', nodes: 2, gpusPerNode: 1 });

const manifest = tinyModelDeployment(
  'zero',
  `
  engine:
    maxContext: 512
    maxSeqs: 32
  replicas: 0
  autoscaling:
    enabled: true
    minReplicas: 0
    maxReplicas: 2
    queueDepthPerReplica: 64
    scaleDownStabilizationSeconds: 5
    scaleToZeroAfterSeconds: 20
  drain:
    maxSeconds: 10`,
);

async function jsonpath(path: string): Promise<string> {
  return (await suite.sys.cp.kubectl(['get', 'mdep', 'zero', '-o', `jsonpath=${path}`])).stdout;
}

test('200 concurrent requests to a zero-replica model all succeed once it scales up, then it scales to zero', async () => {
  const { sys } = suite;
  const applied = await sys.cp.kubectl(['apply', '-f', '-'], { input: manifest });
  expect(applied.code).toBe(0);
  await waitFor(async () => (await jsonpath('{.status.observedGeneration}')) === '1', {
    timeoutMs: 60_000,
    description: 'mdep/zero reconciled',
  });
  expect(await jsonpath('{.spec.replicas}')).toBe('0');
  expect(sys.agent.podIPs().size).toBe(0);

  const results = await Promise.all(
    Array.from({ length: 200 }, async (_, i) => {
      const res = await fetch(`${sys.gatewayUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'zero',
          messages: [{ role: 'user', content: `request ${i}` }],
          max_tokens: 4,
          temperature: 0,
        }),
      });
      const body = (await res.json()) as {
        choices?: unknown[];
        usage?: { completion_tokens: number };
        error?: { message: string };
      };
      return { status: res.status, body };
    }),
  );
  const failures = results.filter((r) => r.status !== 200);
  expect(failures.map((f) => `${f.status} ${f.body.error?.message}`)).toEqual([]);
  for (const r of results) {
    expect(r.body.choices).toHaveLength(1);
    expect(r.body.usage?.completion_tokens).toBeGreaterThan(0);
  }

  // The autoscaler recorded why it scaled up from zero.
  const history = JSON.parse((await jsonpath('{.status.scalingHistory}')) || '[]') as {
    from?: number;
    to?: number;
    reason?: string;
  }[];
  expect(history.some((h) => h.from === 0 && (h.to ?? 0) >= 1)).toBe(true);

  // Idle: down to zero after scaleToZeroAfterSeconds, and the worker processes are gone.
  await waitFor(async () => (await jsonpath('{.spec.replicas}')) === '0' && sys.agent.podIPs().size === 0, {
    timeoutMs: 180_000,
    intervalMs: 2_000,
    description: 'mdep/zero scaled back to zero with its pods gone',
  });
}, 480_000);
