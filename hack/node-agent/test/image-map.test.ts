// Which local process a container of one of our images becomes: the worker image runs worker/src/main.ts, and its
// fetch-weights init container (command `node worker/dist/fetch.js`) runs worker/src/fetch.ts.
import { defaultImageMappings, localCommand } from '../image-map.js';

const mappings = defaultImageMappings('/repo');

describe('localCommand', () => {
  it('runs the worker image as the worker and its fetch command as fetch.ts, with the container args', () => {
    const worker = localCommand(
      { name: 'worker', image: 'ghcr.io/modelserve/worker:dev', args: ['--port', '1'] },
      mappings,
    );
    expect(worker).toEqual({
      command: process.execPath,
      args: ['--import', 'tsx', '/repo/worker/src/main.ts', '--port', '1'],
    });
    const fetch = localCommand(
      {
        name: 'fetch-weights',
        image: 'ghcr.io/modelserve/worker:dev',
        command: ['node', 'worker/dist/fetch.js'],
        args: ['--source', 'hf://o/m'],
      },
      mappings,
    );
    expect(fetch).toEqual({
      command: process.execPath,
      args: ['--import', 'tsx', '/repo/worker/src/fetch.ts', '--source', 'hf://o/m'],
    });
  });
});
