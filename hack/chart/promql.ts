// Just enough PromQL lexing to list the metric names an expression selects, for the check that every name used by the
// dashboards, rules and alerts is one the code declares. (Whether an expression parses at all is promtool's job.)

const KEYWORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'and',
  'or',
  'unless',
  'bool',
  'offset',
  'atan2',
  'inf',
  'nan',
]);

/** Metric names selected by a PromQL expression (sorted, unique). Grafana variables must be substituted first. */
export function metricNames(expr: string): string[] {
  let s = expr
    .replace(/#[^\n]*/g, ' ') // comments
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""') // string literals
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\[[^\]]*\]/g, ' ') // range and subquery windows
    .replace(/\b\d[\w.]*/g, ' '); // numbers and durations (offset 5m, 1e-3)
  // Label lists of aggregations and vector matching: by (a, b), on (x), group_left (y), ...
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const m of s.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const word = m[0];
    const rest = s.slice((m.index ?? 0) + word.length);
    if (/^\s*\(/.test(rest)) continue; // a function or aggregation
    if (KEYWORDS.has(word.toLowerCase())) continue;
    names.add(word);
  }
  return [...names].sort();
}

/** Replaces Grafana's variables by values that make a valid PromQL expression. */
export function substituteGrafanaVariables(expr: string, values: Record<string, string>): string {
  const builtins: Record<string, string> = {
    __rate_interval: '5m',
    __interval: '1m',
    __range: '6h',
  };
  return expr.replace(/\$\{?(\w+)\}?/g, (whole, name: string) => {
    const v = values[name] ?? builtins[name];
    if (v === undefined) throw new Error(`unknown Grafana variable $${name} in: ${expr}`);
    return v;
  });
}
