// The operator process on bad input: a clear message naming the flag or file and a non-zero exit, never a hang.
import { jest } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { repoRoot } from './harness.js';

jest.setTimeout(60_000);

const run = (...args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'operator/src/main.ts'), ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, KUBECONFIG: '' },
  });

it('exits 2 naming a bad flag', () => {
  const r = run('--concurrency', 'many');
  expect(r.status).toBe(2);
  expect(r.stderr).toContain('--concurrency: expected a positive number, got many');
});

it('exits 2 on an unknown flag and lists the known ones', () => {
  const r = run('--replicas', '3');
  expect(r.status).toBe(2);
  expect(r.stderr).toContain('unknown flag --replicas');
  expect(r.stderr).toContain('--worker-image');
});

it('fails with the path of a missing kubeconfig', () => {
  const r = run('--kubeconfig', '/nonexistent/kubeconfig', '--http-port', '0');
  expect(r.status).toBe(1);
  expect(r.stderr).toContain('/nonexistent/kubeconfig');
});
