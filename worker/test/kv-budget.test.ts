import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CPU_RESERVE_BYTES,
  kvBudget,
  KvBudgetError,
  memoryLimitBytes,
  readKvMemoryFraction,
  weightsBytes,
} from '../src/engine/kv-budget.js';

const GiB = 1024 ** 3;

describe('kvBudget', () => {
  it('an explicit --kv-memory-mb wins over the fraction', () => {
    expect(
      kvBudget({ backend: 'cpu', explicitBytes: 5, fraction: 0.9, memoryLimitBytes: 8 * GiB, weightsBytes: 0 }),
    ).toEqual({ kind: 'bytes', bytes: 5, reason: '--kv-memory-mb' });
  });

  it('CPU: fraction of the memory limit less weights and the reserve', () => {
    const budget = kvBudget({ backend: 'cpu', fraction: 0.5, memoryLimitBytes: 8 * GiB, weightsBytes: GiB });
    expect(budget).toMatchObject({ kind: 'bytes', bytes: 4 * GiB - GiB - CPU_RESERVE_BYTES });
  });

  it('CPU without a memory limit keeps the default instead of claiming the host', () => {
    expect(kvBudget({ backend: 'cpu', fraction: 0.9, weightsBytes: GiB }).kind).toBe('default');
  });

  it('CUDA hands the fraction to the engine', () => {
    expect(kvBudget({ backend: 'cuda', fraction: 0.85, weightsBytes: 13 * GiB })).toMatchObject({
      kind: 'fraction',
      fraction: 0.85,
    });
  });

  it('a limit too small for the weights is a clear error naming the knobs', () => {
    expect(() => kvBudget({ backend: 'cpu', fraction: 0.9, memoryLimitBytes: 2 * GiB, weightsBytes: 2 * GiB })).toThrow(
      /spec\.resources\.memory or kvMemoryFraction/,
    );
  });

  it('rejects a fraction outside (0, 1)', () => {
    expect(() => kvBudget({ backend: 'cpu', fraction: 1.5, weightsBytes: 0 })).toThrow(KvBudgetError);
  });
});

describe('engine.json and the memory limit', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kv-budget-'));

  it('reads engine.kvMemoryFraction, absent file or field → undefined, wrong type → error', () => {
    const file = join(dir, 'engine.json');
    writeFileSync(file, JSON.stringify({ model: {}, engine: { kvMemoryFraction: 0.7 } }));
    expect(readKvMemoryFraction(file)).toBe(0.7);
    writeFileSync(file, JSON.stringify({ engine: {} }));
    expect(readKvMemoryFraction(file)).toBeUndefined();
    expect(readKvMemoryFraction(join(dir, 'missing.json'))).toBeUndefined();
    writeFileSync(file, JSON.stringify({ engine: { kvMemoryFraction: 'most' } }));
    expect(() => readKvMemoryFraction(file)).toThrow(/kvMemoryFraction must be a number/);
  });

  it('counts the weight files of a directory; a synthetic model has none', () => {
    const ckpt = join(dir, 'ckpt');
    mkdirSync(ckpt);
    writeFileSync(join(ckpt, 'config.json'), '{}');
    writeFileSync(join(ckpt, 'model.safetensors'), 'x'.repeat(100));
    expect(weightsBytes(ckpt)).toBe(100);
    expect(weightsBytes('synthetic:gpt-oss-20b')).toBe(0);
    expect(() => weightsBytes(join(dir, 'synthetic:gpt-oss-20b'))).toThrow(/ENOENT/);
  });

  it('takes the limit from the environment, else cgroup v2 (max = none)', () => {
    expect(memoryLimitBytes('1073741824', join(dir, 'none'))).toBe(GiB);
    expect(() => memoryLimitBytes('1Gi')).toThrow(/MODELSERVE_MEMORY_LIMIT/);
    const cgroup = join(dir, 'memory.max');
    writeFileSync(cgroup, 'max\n');
    expect(memoryLimitBytes(undefined, cgroup)).toBeUndefined();
    writeFileSync(cgroup, '2147483648\n');
    expect(memoryLimitBytes(undefined, cgroup)).toBe(2 * GiB);
  });
});
