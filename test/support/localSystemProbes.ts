// What the end-to-end tests read back from the local system (test/support/localSystem.ts): ModelDeployment fields,
// the operator Lease holder, Prometheus metrics of workers and operators, and the logs the pods' processes wrote.
import fs from 'node:fs';
import path from 'node:path';

import { parsePrometheusText } from '../../operator/src/autoscaler/prometheus.js';
import type { LocalSystem } from './localSystem.js';
import type { ManagedProcess } from './process.js';
import { waitFor } from './wait.js';

/** A jsonpath of ModelDeployment `name` in `default` ('' when unset or absent). */
export async function mdepField(sys: LocalSystem, name: string, jsonpath: string): Promise<string> {
  return (await sys.cp.kubectl(['get', 'mdep', name, '-o', `jsonpath=${jsonpath}`])).stdout;
}

export interface ScalingHistoryEntry {
  time?: string;
  from?: number;
  to?: number;
  reason?: string;
}

export async function scalingHistory(sys: LocalSystem, name: string): Promise<ScalingHistoryEntry[]> {
  return JSON.parse((await mdepField(sys, name, '{.status.scalingHistory}')) || '[]') as ScalingHistoryEntry[];
}

/** Waits until ModelDeployment `name` reports `replicas` ready replicas. */
export async function waitForReadyReplicas(sys: LocalSystem, name: string, replicas: number): Promise<void> {
  await waitFor(async () => (await mdepField(sys, name, '{.status.readyReplicas}')) === String(replicas), {
    timeoutMs: 240_000,
    intervalMs: 1000,
    description: `mdep/${name} with ${replicas} ready replicas`,
  });
}

/** The sum of a metric's samples (those with all the given labels) on a Prometheus /metrics endpoint. */
export async function scrapeMetric(url: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  const { samples } = parsePrometheusText(await res.text());
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

/** Requests a worker pod at `ip` is serving now. */
export const workerRunning = (ip: string): Promise<number> =>
  scrapeMetric(`http://${ip}:8000/metrics`, 'vllm:num_requests_running');

/** The /metrics URL of an operator process started by startOperator (its --http-port). */
export function operatorMetricsUrl(op: ManagedProcess): string {
  const port = op.args.find((a) => a.startsWith('--http-port='))?.split('=')[1];
  if (!port) throw new Error(`${op.name} has no --http-port flag`);
  return `http://127.0.0.1:${port}/metrics`;
}

/** The identity holding the operators' leader Lease (startOperator's operators use `default/modelserve-operator`). */
export async function leaseHolder(sys: LocalSystem): Promise<string> {
  const res = await sys.cp.kubectl(['get', 'lease', 'modelserve-operator', '-o', 'jsonpath={.spec.holderIdentity}']);
  return res.code === 0 ? res.stdout : '';
}

/** The JSON lines a pod's container wrote (the node agent keeps them under <run dir>/pods/<ns>_<pod>_<uid>/). */
export function podLogLines(sys: LocalSystem, pod: string, container = 'worker'): Record<string, unknown>[] {
  const podsDir = path.join(sys.cp.dir, 'pods');
  const dirs = fs.readdirSync(podsDir).filter((d) => d.startsWith(`default_${pod}_`));
  if (dirs.length !== 1) throw new Error(`expected one folder of pod ${pod} under ${podsDir}, found ${dirs.length}`);
  const text = fs.readFileSync(path.join(podsDir, dirs[0] as string, `${container}.log`), 'utf8');
  return text.split('\n').flatMap((line) => {
    if (!line.startsWith('{')) return [];
    try {
      return [JSON.parse(line) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}
