// How much memory the KV cache gets. The operator writes spec.engine.kvMemoryFraction into engine.json: the share of
// the device's memory the engine may use in total (vLLM's gpu_memory_utilization). On CUDA the engine applies it
// itself against GPU memory once weights are resident. On the CPU backend the "device" is the container's memory
// limit: KV = fraction × limit − checkpoint bytes − a reserve for activations and the runtime. With no limit known
// (a bare process on a shared machine) the fraction would claim most of the host, so the fixed default stays.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { isSyntheticModel } from '../weights.js';

/** Activations, the JS heap and the runtime's own allocations, kept outside the KV budget on the CPU backend. */
export const CPU_RESERVE_BYTES = 512 * 1024 * 1024;

export interface KvBudgetInput {
  backend: 'cpu' | 'cuda' | 'auto';
  /** --kv-memory-mb, when given: wins over everything. */
  explicitBytes?: number;
  /** engine.json's engine.kvMemoryFraction (or --kv-memory-fraction). */
  fraction?: number;
  /** The container's memory limit (downward API or cgroup), when there is one. */
  memoryLimitBytes?: number;
  /** Bytes of the checkpoint's weight files. */
  weightsBytes: number;
}

export type KvBudget =
  | { kind: 'bytes'; bytes: number; reason: string }
  | { kind: 'fraction'; fraction: number; reason: string }
  | { kind: 'default'; reason: string };

export class KvBudgetError extends Error {}

export function kvBudget(input: KvBudgetInput): KvBudget {
  if (input.explicitBytes !== undefined) return { kind: 'bytes', bytes: input.explicitBytes, reason: '--kv-memory-mb' };
  const { fraction } = input;
  if (fraction === undefined) return { kind: 'default', reason: 'no kvMemoryFraction configured' };
  if (!(fraction > 0 && fraction < 1)) {
    throw new KvBudgetError(`engine.kvMemoryFraction must be in (0, 1), got ${fraction}`);
  }
  if (input.backend === 'cuda') return { kind: 'fraction', fraction, reason: 'applied by the CUDA backend' };
  if (input.memoryLimitBytes === undefined) {
    return { kind: 'default', reason: 'kvMemoryFraction not applied: no container memory limit on the CPU backend' };
  }
  const bytes = Math.floor(fraction * input.memoryLimitBytes) - input.weightsBytes - CPU_RESERVE_BYTES;
  if (bytes <= 0) {
    throw new KvBudgetError(
      `engine.kvMemoryFraction ${fraction} of the ${mib(input.memoryLimitBytes)} MiB memory limit leaves no KV cache ` +
        `after ${mib(input.weightsBytes)} MiB of weights and a ${mib(CPU_RESERVE_BYTES)} MiB reserve: ` +
        'raise spec.resources.memory or kvMemoryFraction',
    );
  }
  return {
    kind: 'bytes',
    bytes,
    reason: `kvMemoryFraction ${fraction} of the ${mib(input.memoryLimitBytes)} MiB limit`,
  };
}

const mib = (bytes: number): number => Math.round(bytes / (1024 * 1024));

/** engine.kvMemoryFraction from the operator's engine.json, or undefined when the file or field is absent. */
export function readKvMemoryFraction(path: string): number | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new KvBudgetError(`${path}: ${(err as Error).message}`);
  }
  const value = (parsed as { engine?: { kvMemoryFraction?: unknown } }).engine?.kvMemoryFraction;
  if (value === undefined) return undefined;
  if (typeof value !== 'number') throw new KvBudgetError(`${path}: engine.kvMemoryFraction must be a number`);
  return value;
}

/** The memory limit: MODELSERVE_MEMORY_LIMIT (the operator sets it from the pod's limits.memory), else cgroup v2. */
export function memoryLimitBytes(
  envValue: string | undefined,
  cgroupFile = '/sys/fs/cgroup/memory.max',
): number | undefined {
  if (envValue !== undefined && envValue !== '') {
    const n = Number(envValue);
    if (!Number.isSafeInteger(n) || n <= 0)
      throw new KvBudgetError(`MODELSERVE_MEMORY_LIMIT must be bytes, got '${envValue}'`);
    return n;
  }
  try {
    const raw = readFileSync(cgroupFile, 'utf8').trim();
    return raw === 'max' ? undefined : Number(raw);
  } catch {
    return undefined;
  }
}

/** Total bytes of the checkpoint's weight files (safetensors or GGUF) in a directory, or of a single file. */
export function weightsBytes(modelPath: string): number {
  if (isSyntheticModel(modelPath)) return 0; // no files: the CUDA backend applies the fraction after generating them
  const st = statSync(modelPath);
  if (st.isFile()) return st.size;
  return readdirSync(modelPath)
    .filter((f) => f.endsWith('.safetensors') || f.endsWith('.gguf'))
    .reduce((sum, f) => sum + statSync(join(modelPath, f)).size, 0);
}
