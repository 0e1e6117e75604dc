// promtool (Debian's prometheus package) checks the rule sources, runs their unit tests (synthetic series, each
// alert firing and resolving at the expected minute), parses every dashboard expression, and checks the rules as the
// chart renders them with non-default SLO values.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import yaml from 'js-yaml';
import { allDashboards, dashboardExpressions } from '../../hack/chart/dashboards.js';
import { substituteGrafanaVariables } from '../../hack/chart/promql.js';
import { repoRoot } from '../../hack/chart/sync.js';
import { documents, find, render, run, valuesDir } from './support.js';

const promtool = ['/usr/bin/promtool', '/usr/local/bin/promtool'].find((p) => fs.existsSync(p)) ?? 'promtool';
const rulesDir = path.join(repoRoot, 'monitoring/rules');
const ruleFiles = fs
  .readdirSync(rulesDir)
  .filter((f) => f.endsWith('.yaml'))
  .map((f) => path.join(rulesDir, f));
let tmp: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'modelserve-promtool-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function promtoolOk(args: string[]): Promise<string> {
  const r = await run(promtool, args, { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`promtool ${args.join(' ')} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout + r.stderr;
}

test('promtool check rules passes on every rule file', async () => {
  expect(ruleFiles.length).toBe(3);
  const out = await promtoolOk(['check', 'rules', ...ruleFiles]);
  expect(out.match(/SUCCESS/g)).toHaveLength(ruleFiles.length);
});

test('promtool test rules: the burn-rate and operational alerts fire and resolve when the series say', async () => {
  const tests = fs
    .readdirSync(path.join(repoRoot, 'monitoring/tests'))
    .filter((f) => f.endsWith('.test.yaml'))
    .map((f) => path.join(repoRoot, 'monitoring/tests', f));
  expect(tests.length).toBeGreaterThanOrEqual(2);
  const out = await promtoolOk(['test', 'rules', ...tests]);
  expect(out).not.toMatch(/FAILED/);
  // Every alert of the sources is exercised by at least one test case that expects it firing.
  const alerts = ruleFiles.flatMap((f) =>
    (yaml.load(fs.readFileSync(f, 'utf8')) as { groups: { rules: { alert?: string }[] }[] }).groups.flatMap((g) =>
      g.rules.flatMap((r) => (r.alert ? [r.alert] : [])),
    ),
  );
  const testText = tests.map((f) => fs.readFileSync(f, 'utf8')).join('\n');
  for (const a of alerts) expect(testText).toMatch(new RegExp(`alertname: ${a}\\n\\s+exp_alerts:\\n\\s+- exp_labels`));
}, 120_000);

test('every dashboard expression parses (promtool check rules on a generated rule file)', async () => {
  const rules: { record: string; expr: string }[] = [];
  for (const d of allDashboards()) {
    const vars = { namespace: 'team-a', model: 'gpt-oss-20b', ttft_le: '2.5', objective: '0.99', itl_target: '0.1' };
    for (const { expr } of dashboardExpressions(d.json)) {
      rules.push({ record: `dashboard_check:expr_${rules.length}`, expr: substituteGrafanaVariables(expr, vars) });
    }
  }
  expect(rules.length).toBeGreaterThan(40);
  const file = path.join(tmp, 'dashboards.rules.yaml');
  fs.writeFileSync(file, yaml.dump({ groups: [{ name: 'dashboard-expressions', rules }] }));
  const out = await promtoolOk(['check', 'rules', file]);
  expect(out).toContain(`SUCCESS: ${rules.length} rules found`);
});

test('the chart renders the rules with the SLO values of values.yaml, and promtool accepts them', async () => {
  const objs = documents(
    await render(['--api-versions', 'monitoring.coreos.com/v1', '-f', path.join(valuesDir, 'hardened.yaml')]),
  );
  const spec = find(objs, 'PrometheusRule').spec as { groups: { rules: { expr: string }[] }[] };
  const exprs = spec.groups.flatMap((g) => g.rules.map((r) => r.expr)).join('\n');
  // hardened.yaml: TTFT within 1 s, objective 99.5 %, cold-start budget 180 s.
  expect(exprs).toContain('le="1"');
  expect(exprs).not.toContain('le="2.5"');
  expect(exprs).toContain('(14.4 * (1 - 0.995))');
  expect(exprs).not.toContain('(1 - 0.99)');
  expect(exprs).toMatch(/\) > 180\s*$/m);
  const file = path.join(tmp, 'rendered.rules.yaml');
  fs.writeFileSync(file, yaml.dump({ groups: spec.groups }));
  const out = await promtoolOk(['check', 'rules', file]);
  expect(out).toContain('SUCCESS: 32 rules found');
});
