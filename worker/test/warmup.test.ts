// The start-up warm-up generation: it submits a short greedy request, resolves when it finishes, and fails clearly
// when the engine ends it with an error.
import { warmUp } from '../src/engine/warmup.js';
import { ScriptedEngine } from './support/scripted-engine.js';

test('generates maxTokens tokens from a 16-token prompt and resolves when the request finishes', async () => {
  const engine = new ScriptedEngine(() => [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
  try {
    await warmUp(engine, 3);
    expect(engine.submitted).toEqual([
      { prompt: Array.from({ length: 16 }, (_, i) => i + 1), maxTokens: 3, temperature: 0 },
    ]);
    expect(engine.stats().generationTokens).toBe(3);
  } finally {
    await engine.close();
  }
});

test('rejects with the engine message when the warm-up request ends in an error', async () => {
  const engine = new ScriptedEngine(() => [1]);
  engine.submit = (_request, onEvents) => {
    setImmediate(() => onEvents([{ token: -1, finishReason: 'error', message: 'out of KV blocks' }]));
    return 1;
  };
  await expect(warmUp(engine, 4)).rejects.toThrow('warm-up generation ended with error: out of KV blocks');
  await engine.close();
});
