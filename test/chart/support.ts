// Shared helpers of the chart tests: the cached helm binary, rendering the chart, and reading its documents.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import yaml from 'js-yaml';
import { controlPlaneBinDir, repoRoot } from '../support/paths.js';

export const chartDir = path.join(repoRoot, 'charts/modelserve');
export const valuesDir = path.join(repoRoot, 'test/chart/values');
/** Kubernetes version `helm template` renders for (the test control plane's minor). */
export const KUBE_VERSION = '1.35.0';

/** Values files every render test goes through: the test's own sets plus the examples users copy. */
export function valuesFiles(): string[] {
  const ours = fs
    .readdirSync(valuesDir)
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => path.join(valuesDir, f));
  const examples = fs
    .readdirSync(path.join(repoRoot, 'examples/helm'))
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => path.join(repoRoot, 'examples/helm', f));
  return [...ours, ...examples].sort();
}

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err
          ? typeof (err as { code?: unknown }).code === 'number'
            ? (err as { code: number }).code
            : 1
          : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

export function helmBin(): string {
  return path.join(controlPlaneBinDir(), 'helm');
}

/** `helm template` of the chart; throws with helm's message on failure. */
export async function render(args: string[]): Promise<string> {
  const r = await run(helmBin(), ['template', 'ms', chartDir, '--kube-version', KUBE_VERSION, ...args]);
  if (r.code !== 0) throw new Error(`helm template ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [key: string]: unknown;
}

export function documents(text: string): K8sObject[] {
  return yaml.loadAll(text).filter((d): d is K8sObject => !!d && typeof d === 'object');
}

export function find(objs: K8sObject[], kind: string, name?: string): K8sObject {
  const o = objs.find((x) => x.kind === kind && (name === undefined || x.metadata.name === name));
  if (!o)
    throw new Error(
      `no ${kind}${name ? ` ${name}` : ''} among ${objs.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')}`,
    );
  return o;
}
