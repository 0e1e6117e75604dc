// `npx tsx hack/node-agent/main.ts --kubeconfig FILE [--nodes 2] [--gpus-per-node 1] [--state-dir DIR]`
// Runs the local node agent until SIGINT/SIGTERM. See agent.ts.
import path from 'node:path';
import { parseArgs } from 'node:util';

import { KubeConfig } from '@kubernetes/client-node';

import { repoRoot } from '../../test/support/paths.js';
import { NodeAgent } from './agent.js';

const { values } = parseArgs({
  options: {
    kubeconfig: { type: 'string', default: process.env.KUBECONFIG },
    nodes: { type: 'string', default: '2' },
    'gpus-per-node': { type: 'string', default: '1' },
    'name-prefix': { type: 'string', default: 'local-gpu' },
    'state-dir': { type: 'string', default: path.join(repoRoot, '.tmp', 'node-agent') },
  },
});
if (!values.kubeconfig) {
  process.stderr.write('node-agent: --kubeconfig (or KUBECONFIG) is required\n');
  process.exit(2);
}
const kc = new KubeConfig();
kc.loadFromFile(values.kubeconfig);
const agent = new NodeAgent({
  kubeConfig: kc,
  stateDir: values['state-dir'] as string,
  repoRoot,
  nodes: Number(values.nodes),
  gpusPerNode: Number(values['gpus-per-node']),
  namePrefix: values['name-prefix'] as string,
});
await agent.start();
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await agent.stop();
  process.exit(0);
};
process.on('SIGINT', () => void stop());
process.on('SIGTERM', () => void stop());
