// Invalid ModelDeployments are rejected by the API server at `kubectl apply`, with a message that names the field —
// mistyped fields, CEL rule violations, out-of-range numbers — and nothing is created: no ModelDeployment, and the
// running operator makes no Deployment, pod or Event for it.
import { tinyModelDeployment, useLocalSystem } from '../support/localSystem.js';

const suite = useLocalSystem({ name: 'e2e-invalid-manifest', nodes: 1, gpusPerNode: 1 });

/** Spec lines (YAML, two-space indent) and what the error must say. */
const cases: { what: string; spec: string; expected: RegExp[] }[] = [
  {
    what: 'a string where an integer belongs',
    spec: `
  replicas: two`,
    expected: [/spec\.replicas/, /must be of type integer/],
  },
  {
    what: 'a mistyped nested field',
    spec: `
  engine:
    maxContext: large`,
    expected: [/spec\.engine\.maxContext/, /must be of type integer/],
  },
  {
    what: 'minReplicas above maxReplicas (CEL rule)',
    spec: `
  autoscaling:
    enabled: true
    minReplicas: 3
    maxReplicas: 2`,
    expected: [/spec\.autoscaling\.minReplicas must not exceed spec\.autoscaling\.maxReplicas/],
  },
  {
    what: 'a token budget below the batch size (CEL rule with a field path)',
    spec: `
  engine:
    maxSeqs: 512
    maxBatchedTokens: 256`,
    expected: [/spec\.engine\.maxBatchedTokens/, /must be at least spec\.engine\.maxSeqs/],
  },
  {
    what: 'a schedule whose cron has four fields (CEL rule)',
    spec: `
  autoscaling:
    enabled: true
    maxReplicas: 2
    schedules:
      - cron: "0 8 * *"
        minReplicas: 1
        durationMinutes: 30`,
    expected: [/spec\.autoscaling\.schedules\[0\]\.cron/, /exactly five space-separated fields/],
  },
  {
    what: 'GPUs per replica above the maximum',
    spec: `
  resources:
    gpus: 17`,
    expected: [/spec\.resources\.gpus/, /less than or equal to 16/],
  },
  {
    what: 'a context below the minimum and a drain above the maximum, both reported',
    spec: `
  engine:
    maxContext: 64
  drain:
    maxSeconds: 4000`,
    expected: [/spec\.engine\.maxContext/, /greater than or equal to 128/, /spec\.drain\.maxSeconds/],
  },
  {
    what: 'a value outside an enum',
    spec: `
  engine:
    kvDtype: int3`,
    expected: [/spec\.engine\.kvDtype/, /Unsupported value: "int3"/],
  },
];

test.each(cases.map((c, i) => [c.what, i] as const))('rejects %s, naming the field', async (_what, i) => {
  const { spec, expected } = cases[i] as (typeof cases)[number];
  const res = await suite.sys.cp.kubectl(['apply', '-f', '-'], { input: tinyModelDeployment(`bad-${i}`, spec) });
  expect(res.code).not.toBe(0);
  expect(res.stderr).toMatch(new RegExp(`The ModelDeployment "bad-${i}" is invalid`));
  for (const pattern of expected) expect(res.stderr).toMatch(pattern);
  expect(res.stdout).not.toContain('created');
});

test('nothing was created for any of them', async () => {
  const { sys } = suite;
  // Give the operator a moment in which it would have acted on anything that got through.
  await new Promise((resolve) => setTimeout(resolve, 3_000));
  const objects = await sys.cp.kubectl(['get', 'mdep,deploy,rs,pods,svc,cm,pdb', '-n', 'default', '-o', 'name']);
  expect(objects.code).toBe(0);
  expect(
    objects.stdout.split('\n').filter((l) => l && l !== 'service/kubernetes' && !l.includes('kube-root-ca')),
  ).toEqual([]);
  const events = await sys.cp.kubectl([
    'get',
    'events',
    '-n',
    'default',
    '-o',
    'jsonpath={.items[*].involvedObject.kind}',
  ]);
  expect(events.stdout.split(' ')).not.toContain('ModelDeployment');
  expect(sys.agent.podIPs().size).toBe(0);
  for (const op of sys.operators) op.assertRunning();
});
