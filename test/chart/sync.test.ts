// The chart's copies (CRD, RBAC, rules, dashboards) equal their sources, and the SLO parameters agree across the
// worker's buckets, values.yaml, values.schema.json, the rule sources and the dashboards.
import fs from 'node:fs';
import path from 'node:path';
import yaml from 'js-yaml';
import { allDashboards } from '../../hack/chart/dashboards.js';
import { findDrift, plannedFiles, repoRoot } from '../../hack/chart/sync.js';
import { TTFT_BUCKETS } from '../../worker/src/metrics.js';

const chartDir = path.join(repoRoot, 'charts/modelserve');
const read = (rel: string): string => fs.readFileSync(path.join(repoRoot, rel), 'utf8');

test('chart copies equal their sources (run `make chart-sync` when this fails)', async () => {
  const planned = await plannedFiles();
  // Every source is covered: the CRD, each RBAC file, each rule file, four dashboards.
  expect([...planned.keys()]).toEqual(
    expect.arrayContaining([
      'charts/modelserve/crds/serving.modelserve.dev_modeldeployments.yaml',
      'charts/modelserve/files/rbac/role.yaml',
      'charts/modelserve/files/rbac/leader_election_role.yaml',
      'charts/modelserve/files/monitoring/slo.rules.yaml',
      'monitoring/dashboards/modelserve-model-slo.json',
    ]),
  );
  expect(await findDrift(planned)).toEqual({ outdated: [], stale: [] });
});

test('the chart CRD is byte-for-byte the repository CRD', () => {
  const files = fs.readdirSync(path.join(repoRoot, 'crds'));
  expect(fs.readdirSync(path.join(chartDir, 'crds')).sort()).toEqual(files.sort());
  for (const f of files) expect(read(`charts/modelserve/crds/${f}`)).toBe(read(`crds/${f}`));
});

interface Schema {
  properties?: Record<string, Schema>;
  enum?: unknown[];
}

test('the TTFT threshold can only be a bucket bound of the worker histogram', () => {
  const schema = JSON.parse(read('charts/modelserve/values.schema.json')) as Schema;
  const ttft = schema.properties?.monitoring?.properties?.slo?.properties?.ttftThresholdSeconds;
  expect(ttft?.enum).toEqual(TTFT_BUCKETS);
});

test('values.yaml, the rule sources and the dashboards carry the same SLO defaults', () => {
  const values = yaml.load(read('charts/modelserve/values.yaml')) as {
    monitoring: {
      slo: { ttftThresholdSeconds: number; objective: number };
      alerts: { coldStartBudgetSeconds: number };
    };
  };
  const { ttftThresholdSeconds, objective } = values.monitoring.slo;
  expect(TTFT_BUCKETS).toContain(ttftThresholdSeconds);
  // The chart substitutes these exact strings; each must occur in the sources or the substitution does nothing.
  const expressions = (file: string): string =>
    (yaml.load(read(file)) as { groups: { rules: { expr: string }[] }[] }).groups
      .flatMap((g) => g.rules)
      .map((r) => r.expr)
      .join('\n');
  const occurrences = (text: string, s: string): number => text.split(s).length - 1;
  const slo = expressions('monitoring/rules/slo.rules.yaml');
  expect(occurrences(slo, `le="${ttftThresholdSeconds}"`)).toBe(4); // the 5m, 30m, 1h and 6h TTFT ratios
  expect(occurrences(slo, `(1 - ${objective})`)).toBe(12); // both windows of six alerts
  const alerts = expressions('monitoring/rules/alerts.rules.yaml');
  expect(occurrences(alerts, `> ${values.monitoring.alerts.coldStartBudgetSeconds}`)).toBe(1);

  const slodash = allDashboards().find((d) => d.uid === 'modelserve-model-slo');
  const vars = (slodash?.json.templating as { list: { name: string; query: unknown }[] }).list;
  expect(vars.find((v) => v.name === 'ttft_le')?.query).toBe(String(ttftThresholdSeconds));
  expect(vars.find((v) => v.name === 'objective')?.query).toBe(String(objective));
});
