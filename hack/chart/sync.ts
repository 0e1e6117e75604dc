// Keeps the Helm chart's copies equal to their sources, so the chart cannot drift from what the operator's own tests
// exercise:
//   crds/*.yaml                 -> charts/modelserve/crds/          (the CRD; Helm installs it, never upgrades it)
//   config/rbac/*.yaml          -> charts/modelserve/files/rbac/    (rendered by templates/rbac.yaml, rules untouched)
//   monitoring/rules/*.yaml     -> charts/modelserve/files/monitoring/
//   hack/chart/dashboards.ts    -> monitoring/dashboards/*.json -> charts/modelserve/files/dashboards/
// Usage: npx tsx hack/chart/sync.ts [--check]   (--check changes nothing and exits 1 listing what differs)
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import prettier from 'prettier';
import { allDashboards } from './dashboards.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const chartDir = path.join(repoRoot, 'charts/modelserve');

/** Folders whose whole content this script owns: a file there that is not planned is stale. */
export const ownedDirs = [
  'charts/modelserve/crds',
  'charts/modelserve/files/rbac',
  'charts/modelserve/files/monitoring',
  'charts/modelserve/files/dashboards',
  'monitoring/dashboards',
];

function yamlFiles(dir: string): string[] {
  return fs
    .readdirSync(path.join(repoRoot, dir))
    .filter((f) => f.endsWith('.yaml'))
    .sort();
}

/** Dashboard JSON as Prettier (the repository's config) formats it, so `prettier --check` passes on it. */
async function dashboardText(json: unknown): Promise<string> {
  const options = (await prettier.resolveConfig(path.join(repoRoot, 'monitoring/dashboards/x.json'))) ?? {};
  return prettier.format(JSON.stringify(json), { ...options, parser: 'json' });
}

/** Every file this script writes (repo-relative path -> content). */
export async function plannedFiles(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const read = (rel: string): string => fs.readFileSync(path.join(repoRoot, rel), 'utf8');
  for (const f of yamlFiles('crds')) out.set(`charts/modelserve/crds/${f}`, read(`crds/${f}`));
  for (const f of yamlFiles('config/rbac')) out.set(`charts/modelserve/files/rbac/${f}`, read(`config/rbac/${f}`));
  for (const f of yamlFiles('monitoring/rules')) {
    out.set(`charts/modelserve/files/monitoring/${f}`, read(`monitoring/rules/${f}`));
  }
  for (const d of allDashboards()) {
    const text = await dashboardText(d.json);
    out.set(`monitoring/dashboards/${d.file}`, text);
    out.set(`charts/modelserve/files/dashboards/${d.file}`, text);
  }
  return out;
}

export interface Drift {
  /** Files missing or with other content than planned. */
  outdated: string[];
  /** Files in an owned folder that nothing plans any more. */
  stale: string[];
}

export async function findDrift(planned?: Map<string, string>): Promise<Drift> {
  const files = planned ?? (await plannedFiles());
  const outdated = [...files]
    .filter(([rel, text]) => {
      const abs = path.join(repoRoot, rel);
      return !fs.existsSync(abs) || fs.readFileSync(abs, 'utf8') !== text;
    })
    .map(([rel]) => rel);
  const stale: string[] = [];
  for (const dir of ownedDirs) {
    const abs = path.join(repoRoot, dir);
    if (!fs.existsSync(abs)) continue;
    for (const f of fs.readdirSync(abs)) if (!files.has(`${dir}/${f}`)) stale.push(`${dir}/${f}`);
  }
  return { outdated, stale };
}

async function main(): Promise<void> {
  const check = process.argv.includes('--check');
  const planned = await plannedFiles();
  const drift = await findDrift(planned);
  if (check) {
    if (drift.outdated.length || drift.stale.length) {
      for (const f of drift.outdated) process.stderr.write(`out of date: ${f}\n`);
      for (const f of drift.stale) process.stderr.write(`stale: ${f}\n`);
      process.stderr.write('chart copies differ from their sources: run `make chart-sync`\n');
      process.exit(1);
    }
    process.stdout.write(`chart copies up to date (${planned.size} files)\n`);
    return;
  }
  for (const rel of drift.outdated) {
    const abs = path.join(repoRoot, rel);
    fs.mkdirSync(path.dirname(abs), { recursive: true });
    fs.writeFileSync(abs, planned.get(rel) as string);
    process.stdout.write(`wrote ${rel}\n`);
  }
  for (const rel of drift.stale) {
    fs.rmSync(path.join(repoRoot, rel));
    process.stdout.write(`removed ${rel}\n`);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`chart-sync: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
