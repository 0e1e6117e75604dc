// What the gateway needs from an OpenAI request body without understanding all of it: the model id, whether it
// streams, the prefix that decides prefix-cache affinity, and the prompt's size for the up-front token estimates (the
// rate limiter's charge, the queued prompt tokens the autoscaler reads).

export interface RequestFacts {
  model: string;
  stream: boolean;
  /** The start of the rendered prompt (system messages, then the first other message), at most `prefixChars` long. */
  prefixKey: string;
  /**
   * Estimated prompt tokens (see estimatePromptTokens), computed on the first call: only a rate-limited key's request
   * and a request that waits in the queue need it.
   */
  promptTokens(): number;
  /** The prompt text for the audit log when prompt logging is on. */
  promptText(): string;
}

export class BodyError extends Error {
  constructor(
    message: string,
    readonly param: string | null,
  ) {
    super(message);
    this.name = 'BodyError';
  }
}

/**
 * The gateway has no tokenizer: a prompt's tokens are estimated as its UTF-8 bytes / 4 (o200k averages about 4 bytes
 * of English or code per token; bytes rather than characters keep non-Latin scripts, at 2–3 bytes per character and
 * about a token each, from being under-counted 3x). Chat templates add a few tokens per message, left out.
 */
export const estimatePromptTokens = (utf8Bytes: number): number => Math.ceil(utf8Bytes / 4);

const utf8Bytes = (texts: string[]): number => texts.reduce((n, t) => n + Buffer.byteLength(t, 'utf8'), 0);

/** f() once, on the first call. */
function once(f: () => number): () => number {
  let v: number | undefined;
  return () => (v ??= f());
}

function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((part: unknown) =>
        part && typeof part === 'object' && typeof (part as { text?: unknown }).text === 'string'
          ? (part as { text: string }).text
          : '',
      )
      .join('');
  }
  return '';
}

interface Message {
  role: string;
  text: string;
}

function messagesOf(body: Record<string, unknown>): Message[] {
  const raw = body.messages;
  if (!Array.isArray(raw)) throw new BodyError("'messages' must be an array of messages", 'messages');
  return raw.map((m: unknown, i) => {
    if (!m || typeof m !== 'object') throw new BodyError(`'messages[${i}]' must be an object`, `messages[${i}]`);
    const msg = m as { role?: unknown; content?: unknown };
    return { role: typeof msg.role === 'string' ? msg.role : '', text: contentText(msg.content) };
  });
}

/** Reads the facts of a /v1/chat/completions (`chat`) or /v1/completions (`completion`) body. */
export function requestFacts(kind: 'chat' | 'completion', body: unknown, prefixChars: number): RequestFacts {
  if (!body || typeof body !== 'object' || Array.isArray(body)) {
    throw new BodyError('The request body must be a JSON object', null);
  }
  const obj = body as Record<string, unknown>;
  if (typeof obj.model !== 'string' || obj.model === '') {
    throw new BodyError("'model' is required and must be a non-empty string", 'model');
  }
  const stream = obj.stream === true;
  if (kind === 'chat') {
    const messages = messagesOf(obj);
    // System (and developer) messages first, as the harmony renderer places them, then the first turn.
    const leading = messages.filter((m) => m.role === 'system' || m.role === 'developer');
    const first = messages.find((m) => m.role !== 'system' && m.role !== 'developer');
    const rendered = [...leading, ...(first ? [first] : [])].map((m) => `${m.role}\u0000${m.text}\u0000`).join('');
    return {
      model: obj.model,
      stream,
      prefixKey: rendered.slice(0, prefixChars),
      promptTokens: once(() => estimatePromptTokens(utf8Bytes(messages.map((m) => m.text)))),
      promptText: () => messages.map((m) => `${m.role}: ${m.text}`).join('\n'),
    };
  }
  const prompt = obj.prompt;
  let text: string;
  if (typeof prompt === 'string') text = prompt;
  else if (Array.isArray(prompt) && prompt.every((p) => typeof p === 'string')) text = (prompt as string[]).join('\n');
  else if (Array.isArray(prompt) && prompt.every((p) => typeof p === 'number')) text = (prompt as number[]).join(' ');
  else throw new BodyError("'prompt' must be a string, an array of strings or an array of token ids", 'prompt');
  return {
    model: obj.model,
    stream,
    prefixKey: text.slice(0, prefixChars),
    // Token ids are counted exactly; text is estimated.
    promptTokens: once(() =>
      typeof prompt === 'string' || typeof (prompt as unknown[])[0] === 'string'
        ? estimatePromptTokens(utf8Bytes([text]))
        : (prompt as number[]).length,
    ),
    promptText: () => text,
  };
}

const ASK_USAGE = Buffer.from('"stream_options":{"include_usage":true},');

/**
 * The body to send the worker: the client's own bytes, not a re-serialisation of what was parsed from them. When the
 * gateway must ask a stream for usage (`askUsage`) and the client set no `stream_options`, that member is spliced in
 * after the opening brace (the body is an object with at least `model`, so a member follows); only a client's own
 * `stream_options` without `include_usage` needs the parsed body written out again.
 */
export function upstreamBody(raw: Buffer, body: Record<string, unknown>, askUsage: boolean): Buffer {
  if (!askUsage) return raw;
  if (!Object.hasOwn(body, 'stream_options')) {
    let at = 0;
    // JSON whitespace before the object's '{' (the parse succeeded, so nothing else can come first).
    while (at < raw.length && (raw[at] === 0x20 || raw[at] === 0x09 || raw[at] === 0x0a || raw[at] === 0x0d)) at++;
    if (raw[at] === 0x7b) return Buffer.concat([raw.subarray(0, at + 1), ASK_USAGE, raw.subarray(at + 1)]);
  }
  return Buffer.from(
    JSON.stringify({ ...body, stream_options: { ...(body.stream_options as object), include_usage: true } }),
  );
}
