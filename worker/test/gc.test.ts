// The worker's V8 flags: the ones the operator starts it with are gc.ts's, and they size the young generation.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { defaultPlanConfig } from '../../operator/src/controller/plan.js';
import { WORKER_NODE_FLAGS, youngGenerationMiB } from '../src/gc.js';

describe('worker GC flags', () => {
  it('are on the operator’s default worker command, before the entry point', () => {
    const command = defaultPlanConfig.workerCommand;
    expect(command[0]).toBe('node');
    expect(command.slice(1, 1 + WORKER_NODE_FLAGS.length)).toEqual([...WORKER_NODE_FLAGS]);
    expect(command.at(-1)).toBe('worker/dist/main.js');
  });

  it('are on `make worker-run`’s command line', () => {
    const mk = readFileSync(new URL('../../mk/worker.mk', import.meta.url), 'utf8');
    const flags = /^WORKER_NODE_FLAGS := (.*)$/m.exec(mk)?.[1]?.trim().split(/\s+/);
    expect(flags).toEqual([...WORKER_NODE_FLAGS]);
    expect(mk).toContain('node $(WORKER_NODE_FLAGS) --import tsx worker/src/main.ts');
  });

  it('give node a 16 MiB young generation (V8 starts at 1 MiB without them and grows it only on high survival)', () => {
    const probe = `import('${new URL('../src/gc.ts', import.meta.url).pathname}').then((m) => console.log(m.youngGenerationMiB()))`;
    const run = (flags: readonly string[]): string =>
      spawnSync(process.execPath, [...flags, '--import', 'tsx', '-e', probe], { encoding: 'utf8' }).stdout.trim();
    expect(run(WORKER_NODE_FLAGS)).toBe('16');
    expect(Number(run([]))).toBeLessThan(16);
    expect(youngGenerationMiB()).toBeGreaterThan(0);
  });
});
