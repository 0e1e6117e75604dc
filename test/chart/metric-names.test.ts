// Every metric a rule, an alert or a dashboard selects is declared by the code (read from the processes' own
// prom-client registries), recorded by one of our rules, or listed as pending in monitoring/README.md — so a renamed
// metric breaks this test instead of silently emptying a panel or muting an alert.
import fs from 'node:fs';
import path from 'node:path';
import yaml from 'js-yaml';
import type { Registry } from 'prom-client';
import { allDashboards, dashboardExpressions } from '../../hack/chart/dashboards.js';
import { metricNames, substituteGrafanaVariables } from '../../hack/chart/promql.js';
import { repoRoot } from '../../hack/chart/sync.js';
import { registry as gatewayRegistry } from '../../operator/src/gateway/metrics.js';
import { registry as operatorRegistry } from '../../operator/src/telemetry/metrics.js';
import { WorkerMetrics } from '../../worker/src/metrics.js';

interface RuleFile {
  groups: { name: string; rules: { record?: string; alert?: string; expr: string }[] }[];
}

const ruleFiles = fs
  .readdirSync(path.join(repoRoot, 'monitoring/rules'))
  .filter((f) => f.endsWith('.yaml'))
  .map((f) => ({
    file: f,
    rules: yaml.load(fs.readFileSync(path.join(repoRoot, 'monitoring/rules', f), 'utf8')) as RuleFile,
  }));

/** The series names a metric of this type exposes. */
function seriesOf(name: string, type: string): string[] {
  if (type === 'histogram') return [`${name}_bucket`, `${name}_sum`, `${name}_count`];
  if (type === 'summary') return [name, `${name}_sum`, `${name}_count`];
  return [name];
}

async function declared(): Promise<Map<string, string>> {
  const worker = new WorkerMetrics('probe', { engineStats: () => undefined, admissionWaiting: () => 0 });
  const out = new Map<string, string>();
  const registries: [string, Registry][] = [
    ['worker/src/metrics.ts', worker.registry],
    ['operator/src/telemetry/metrics.ts', operatorRegistry],
    ['operator/src/gateway/metrics.ts', gatewayRegistry],
  ];
  for (const [source, reg] of registries) {
    for (const m of await reg.getMetricsAsJSON()) for (const s of seriesOf(m.name, String(m.type))) out.set(s, source);
  }
  return out;
}

/** Pending names from monitoring/README.md: "- `name` (type): ...". */
function pending(): Map<string, string> {
  const text = fs.readFileSync(path.join(repoRoot, 'monitoring/README.md'), 'utf8');
  // The heading must stay: without it a renamed section would silently hide pending names from the first test.
  const parts = text.split('### Pending metric names');
  if (parts.length !== 2)
    throw new Error('monitoring/README.md must have exactly one "### Pending metric names" section');
  const section = (parts[1] ?? '').split(/^##/m)[0] ?? '';
  const out = new Map<string, string>();
  for (const m of section.matchAll(/^- `([a-zA-Z_:][a-zA-Z0-9_:]*)` \((gauge|counter|histogram|summary)\)/gm)) {
    out.set(m[1] as string, m[2] as string);
  }
  return out;
}

const recorded = new Set(ruleFiles.flatMap((f) => f.rules.groups.flatMap((g) => g.rules.map((r) => r.record ?? ''))));

function usedNames(): Map<string, string[]> {
  const used = new Map<string, string[]>();
  const add = (name: string, where: string) => used.set(name, [...(used.get(name) ?? []), where]);
  for (const { file, rules } of ruleFiles) {
    for (const g of rules.groups) {
      for (const r of g.rules) for (const n of metricNames(r.expr)) add(n, `${file} ${r.record ?? r.alert}`);
    }
  }
  for (const d of allDashboards()) {
    const vars = { namespace: 'team-a', model: 'gpt-oss-20b', ttft_le: '2.5', objective: '0.99', itl_target: '0.1' };
    for (const { where, expr } of dashboardExpressions(d.json)) {
      for (const n of metricNames(substituteGrafanaVariables(expr, vars))) add(n, `${d.file} ${where}`);
    }
  }
  return used;
}

test('the PromQL name extraction finds selectors, not functions, labels or keywords', () => {
  expect(
    metricNames(
      'sum by (namespace, le) (rate(vllm:time_to_first_token_seconds_bucket{le="2.5", x=~"a|b"}[5m])) / on (namespace) group_left (pod) up and ignoring (le) foo_total offset 5m',
    ),
  ).toEqual(['foo_total', 'up', 'vllm:time_to_first_token_seconds_bucket']);
  expect(metricNames('vector(1 - 0.99) > bool 1')).toEqual([]);
  expect(metricNames('histogram_quantile(0.95, sum by (le) (rate(a_bucket[1h]))) > 300')).toEqual(['a_bucket']);
});

test('every metric used by the rules, alerts and dashboards is declared, recorded, or pending', async () => {
  const known = await declared();
  const waiting = pending();
  const pendingSeries = new Set([...waiting].flatMap(([name, type]) => seriesOf(name, type)));
  const used = usedNames();
  expect(used.size).toBeGreaterThan(20);
  const unknown = [...used]
    .filter(([name]) => !known.has(name) && !recorded.has(name) && !pendingSeries.has(name))
    .map(([name, where]) => `${name} (used by ${where.join('; ')})`);
  expect(unknown).toEqual([]);
});

test('pending names are not declared yet (else move them out of the pending list)', async () => {
  const known = await declared();
  const waiting = pending();
  const nowDeclared = [...waiting.keys()].filter((n) => known.has(n) || known.has(`${n}_bucket`));
  expect(nowDeclared).toEqual([]);
});

test('every recording rule is used by an alert or a dashboard', () => {
  const used = usedNames();
  expect([...recorded].filter((r) => r && !used.has(r))).toEqual([]);
});
