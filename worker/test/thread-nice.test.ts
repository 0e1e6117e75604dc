// The worker's default for the engine's compute thread niceness, and the environment's precedence over it.
import { applyComputeThreadNice, DEFAULT_COMPUTE_THREAD_NICE } from '../src/engine/thread-nice.js';

describe('applyComputeThreadNice', () => {
  it('sets the default when the environment has none', () => {
    const env: NodeJS.ProcessEnv = {};
    expect(applyComputeThreadNice(env)).toBe(String(DEFAULT_COMPUTE_THREAD_NICE));
    expect(env.MS_COMPUTE_THREAD_NICE).toBe('10');
  });

  it.each(['0', '5', '19', 'bad'])('leaves MS_COMPUTE_THREAD_NICE=%s to the engine', (value) => {
    const env: NodeJS.ProcessEnv = { MS_COMPUTE_THREAD_NICE: value };
    expect(applyComputeThreadNice(env)).toBe(value);
    expect(env.MS_COMPUTE_THREAD_NICE).toBe(value);
  });
});
