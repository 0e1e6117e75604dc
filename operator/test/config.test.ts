import { parseConfig } from '../src/config.js';

describe('operator configuration', () => {
  it('reads flags, with environment fallbacks and defaults', () => {
    const c = parseConfig(['--kubeconfig', '/k', '--worker-command=["node","w.js"]', '--leader-elect=false'], {
      MODELSERVE_WORKER_IMAGE: 'img:1',
      POD_NAMESPACE: 'ops',
    });
    expect(c.kubeconfig).toBe('/k');
    expect(c.leaderElect).toBe(false);
    expect(c.leaseNamespace).toBe('ops');
    expect(c.plan.workerImage).toBe('img:1');
    expect(c.plan.workerCommand).toEqual(['node', 'w.js']);
    expect(c.leaseDurationMs).toBe(15_000);
    expect(c.renewDeadlineMs).toBe(10_000);
    expect(c.retryPeriodMs).toBe(2_000);
  });

  it('rejects unknown flags and bad values with the flag name', () => {
    expect(() => parseConfig(['--nope', 'x'], {})).toThrow(/unknown flag --nope/);
    expect(() => parseConfig(['--concurrency', 'many'], {})).toThrow(/--concurrency: expected a positive number/);
    expect(() => parseConfig(['--log-level', 'loud'], {})).toThrow(/--log-level/);
    expect(() => parseConfig(['--worker-command', '[1]'], {})).toThrow(/JSON array of strings/);
  });
});
