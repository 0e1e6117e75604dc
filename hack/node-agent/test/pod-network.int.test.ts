// Pod networking: a pod's address is reachable from the host, and namespaces left by a killed process are removed by
// the next network to start.
import { execFileSync, spawn } from 'node:child_process';
import path from 'node:path';

import { repoRoot } from '../../../test/support/paths.js';
import { waitFor } from '../../../test/support/wait.js';
import { createPodNetwork } from '../pod-network.js';

const namespaces = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });

test('a process killed with its network attached leaves namespaces that the next network removes', async () => {
  // A child process makes a network with one pod, prints the namespace, and is then SIGKILLed (no cleanup runs).
  const script = `
    import { createPodNetwork } from ${JSON.stringify(path.join(repoRoot, 'hack/node-agent/pod-network.ts'))};
    const net = createPodNetwork();
    const { podIP } = net.attach('abandoned-pod-uid', 0);
    console.log(net.mode, podIP);
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(() => out.includes('\n'), { timeoutMs: 30_000, description: 'child network up' });
  expect(out).toMatch(/^netns 10\.\d+\.1\.\d+/);
  expect(namespaces()).toContain('ms-abandonedp');
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));

  const net = createPodNetwork();
  try {
    expect(namespaces()).not.toContain('ms-abandonedp');
    const { podIP, wrap } = net.attach('live-pod-uid-1', 0);
    const [cmd, args] = wrap('ip', ['-4', '-o', 'addr', 'show', 'dev', 'eth0']);
    expect(execFileSync(cmd, args, { encoding: 'utf8' })).toContain(`${podIP}/16`);
  } finally {
    net.close();
  }
  expect(namespaces()).not.toContain('ms-livepoduid');
}, 60_000);
