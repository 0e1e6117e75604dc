// The generated Grafana dashboards are well-formed: unique ids, panels inside the 24-column grid without overlaps,
// every variable an expression uses is defined, and each dashboard has the namespace and model filters.
import { allDashboards, dashboardExpressions } from '../../hack/chart/dashboards.js';

interface PanelJson {
  id: number;
  title: string;
  description: string;
  gridPos: { x: number; y: number; w: number; h: number };
  targets: { expr: string; legendFormat: string }[];
}

const dashboards = allDashboards();

test('four dashboards with unique uids: fleet, model SLO, autoscaler, engine', () => {
  expect(dashboards.map((d) => d.uid)).toEqual([
    'modelserve-fleet',
    'modelserve-model-slo',
    'modelserve-autoscaler',
    'modelserve-engine',
  ]);
});

test.each(dashboards.map((d) => [d.uid, d]))('%s: layout, variables and descriptions', (_uid, d) => {
  const panels = d.json.panels as PanelJson[];
  expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
  const cells = new Set<string>();
  for (const p of panels) {
    expect(p.description.length).toBeGreaterThan(10);
    expect(p.targets.length).toBeGreaterThan(0);
    expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
    for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
      for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
        const cell = `${x},${y}`;
        expect({ panel: p.title, overlaps: cells.has(cell) }).toEqual({ panel: p.title, overlaps: false });
        cells.add(cell);
      }
    }
  }
  const vars = (d.json.templating as { list: { name: string }[] }).list.map((v) => v.name);
  expect(vars).toEqual(expect.arrayContaining(['datasource', 'namespace', 'model']));
  const builtins = ['__rate_interval', '__interval', '__range'];
  for (const { where, expr } of dashboardExpressions(d.json)) {
    for (const m of expr.matchAll(/\$\{?(\w+)\}?/g)) {
      expect({
        where,
        variable: m[1],
        defined: vars.includes(m[1] as string) || builtins.includes(m[1] as string),
      }).toEqual({
        where,
        variable: m[1],
        defined: true,
      });
    }
  }
});

test('the model SLO dashboard draws TTFT and ITL p50/p95/p99 against their target lines', () => {
  const slo = dashboards.find((d) => d.uid === 'modelserve-model-slo');
  const panels = slo?.json.panels as PanelJson[];
  for (const [title, target] of [
    ['Time to first token', 'vector($ttft_le)'],
    ['Inter-token latency', 'vector($itl_target)'],
  ] as const) {
    const panel = panels.find((p) => p.title === title);
    const exprs = panel?.targets.map((t) => t.expr) ?? [];
    for (const q of ['0.5', '0.95', '0.99']) expect(exprs.some((e) => e.includes(`quantile="${q}"`))).toBe(true);
    expect(exprs).toContain(target);
  }
  expect(panels.map((p) => p.title)).toEqual(
    expect.arrayContaining(['TTFT error budget remaining (30 d)', 'Tokens/s', 'Queue depth and running requests']),
  );
});
