// frequency_penalty / presence_penalty (OpenAI) and repetition_penalty (vLLM) through the worker and the real engine,
// driven by the official `openai` client on the generated tiny-harmony checkpoint. Greedy decoding with top-20 logprobs
// (of the raw logits) makes the effect checkable: whenever the engine passed over a token with a higher raw logprob,
// that token must have been penalised, i.e. already generated (or, for repetition_penalty, in the prompt).
import OpenAI from 'openai';
import { Tokenizer } from '../src/tokenizer.js';
import { startWorker, tinyCheckpoint, type WorkerProcess } from './support/worker-process.js';

const MODEL = 'tiny-harmony';
const tokenizer = new Tokenizer();
let worker: WorkerProcess;
let client: OpenAI;

beforeAll(async () => {
  worker = await startWorker([
    '--model',
    tinyCheckpoint(1),
    '--served-model-name',
    MODEL,
    '--max-context',
    '512',
    '--max-seqs',
    '4',
    '--threads',
    '2',
  ]);
  client = new OpenAI({ baseURL: `${worker.baseUrl}/v1`, apiKey: 'unused', maxRetries: 0 });
}, 120_000);

afterAll(async () => {
  await worker?.stop();
});

const PROMPT = tokenizer.encode('The cat sat on the mat and the cat sat on the mat and the cat');
const piece = (t: number): string => new TextDecoder().decode(tokenizer.tokenBytes(t));

type Extra = Partial<OpenAI.CompletionCreateParamsNonStreaming> & { repetition_penalty?: number };
async function greedy(extra: Extra): Promise<OpenAI.Completions.Completion> {
  return client.completions.create({
    model: MODEL,
    prompt: PROMPT,
    max_tokens: 16,
    temperature: 0,
    logprobs: 20,
    ...extra,
  } as OpenAI.CompletionCreateParamsNonStreaming);
}

interface Step {
  chosen: string;
  chosenLp: number;
  candidates: [string, number][];
}
function steps(res: OpenAI.Completions.Completion): Step[] {
  const lp = res.choices[0]!.logprobs!;
  return lp.tokens!.map((chosen, i) => ({
    chosen,
    chosenLp: lp.token_logprobs![i]!,
    candidates: Object.entries(lp.top_logprobs![i]!).filter(([c]) => !c.startsWith('<|')),
  }));
}

/**
 * Checks OpenAI's arithmetic exactly: the logsumexp is the same for every candidate of a step, so greedy under
 * penalties picks the argmax of raw logprob − (count × frequency + (count > 0) × presence), counts over the tokens
 * generated before that step. Returns the steps where that changed the choice.
 */
function checkOpenAiPenalties(res: OpenAI.Completions.Completion, frequency: number, presence: number): number {
  const counts = new Map<string, number>();
  const score = (token: string, lp: number): number => {
    const c = counts.get(token) ?? 0;
    return lp - (c > 0 ? c * frequency + presence : 0);
  };
  let changed = 0;
  for (const [i, step] of steps(res).entries()) {
    const chosenScore = score(step.chosen, step.chosenLp);
    for (const [candidate, lp] of step.candidates) {
      expect({ step: i, candidate, score: Math.min(score(candidate, lp), chosenScore + 1e-4) }).toEqual({
        step: i,
        candidate,
        score: score(candidate, lp),
      });
    }
    if (step.candidates.some(([c, lp]) => c !== step.chosen && lp > step.chosenLp + 1e-4)) changed++;
    counts.set(step.chosen, (counts.get(step.chosen) ?? 0) + 1);
  }
  return changed;
}

describe('sampling penalties over the real engine', () => {
  it('greedy without penalties takes the raw argmax at every step', async () => {
    expect(checkOpenAiPenalties(await greedy({}), 0, 0)).toBe(0);
  });

  // The random tiny model rarely repeats a token by itself, so the settings include ones that make repeats win
  // (negative penalties, or a presence bonus that a frequency penalty overtakes from the second occurrence).
  it.each([
    [2, 2],
    [1.5, -2],
    [-1, -2],
    [0.5, 0],
  ])('frequency_penalty %p, presence_penalty %p follow the OpenAI formula', async (frequency, presence) => {
    const plain = await greedy({});
    const res = await greedy({ frequency_penalty: frequency, presence_penalty: presence });
    const changed = checkOpenAiPenalties(res, frequency, presence);
    // A bonus of 3 on every token already generated beats the raw gaps of this model's flat distributions.
    if (frequency + presence <= -3) {
      expect(changed).toBeGreaterThan(0);
      expect(res.choices[0]!.text).not.toBe(plain.choices[0]!.text);
    }
    // Deterministic: the same request gives the same text.
    const again = await greedy({ frequency_penalty: frequency, presence_penalty: presence });
    expect(again.choices[0]!.text).toBe(res.choices[0]!.text);
  });

  it('repetition_penalty only favours (< 1) or disfavours (> 1) tokens of the prompt and the output', async () => {
    const promptPieces = PROMPT.map(piece);
    for (const penalty of [0.5, 2]) {
      const seen = new Set(promptPieces);
      let changed = 0;
      for (const [i, step] of steps(await greedy({ repetition_penalty: penalty })).entries()) {
        const better = step.candidates.filter(([c, lp]) => c !== step.chosen && lp > step.chosenLp + 1e-4);
        if (better.length) changed++;
        // Favouring: a token picked over a rawly better one was seen; disfavouring: the ones passed over were.
        if (penalty < 1 && better.length)
          expect({ step: i, seen: seen.has(step.chosen) }).toEqual({ step: i, seen: true });
        if (penalty > 1)
          for (const [c] of better) expect({ step: i, c, seen: seen.has(c) }).toEqual({ step: i, c, seen: true });
        seen.add(step.chosen);
      }
      if (penalty < 1) expect(changed).toBeGreaterThan(0);
    }
  });

  it('accepts penalties on chat completions, streaming and not', async () => {
    const params = {
      model: MODEL,
      messages: [{ role: 'user' as const, content: 'Say something' }],
      max_tokens: 8,
      temperature: 0,
      frequency_penalty: 0.5,
      presence_penalty: -0.5,
      repetition_penalty: 1.2,
    };
    const whole = await client.chat.completions.create(params as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const stream = await client.chat.completions.create({
      ...params,
      stream: true,
    } as OpenAI.ChatCompletionCreateParamsStreaming);
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    expect(text).toBe(whole.choices[0]!.message.content ?? '');
  });

  it('refuses out-of-range penalties with 400 naming the parameter', async () => {
    for (const [param, value] of [
      ['frequency_penalty', 2.5],
      ['presence_penalty', -2.01],
      ['repetition_penalty', 0],
      ['repetition_penalty', -1],
    ] as const) {
      await expect(greedy({ [param]: value })).rejects.toMatchObject({ status: 400, error: { param } });
    }
  });
});
