// The Redis contract between the gateway (writer) and the autoscaler (reader). This file is the one place it is
// defined; docs/autoscaler.md describes it for people.
//
// Queue length: every gateway replica keeps, per model, one field in a hash
//   key   modelserve:queue:{namespace}/{model}     (namespace of the ModelDeployment, model = spec.model.name)
//   field the gateway replica's id (its pod name)
//   value "<waiting> <unixMs>"                     (requests waiting in that replica's queue, when it was measured)
// rewritten at least every QUEUE_REFRESH_MS and on every change, each write followed by PEXPIRE of the key.
// A reader sums the fields younger than QUEUE_ENTRY_TTL_MS, so a gateway that died stops counting within seconds
// (field-level expiry, HEXPIRE, needs Redis 7.4; the timestamp does the same job on any version).
//
// Queued prompt tokens: the same layout, in the same transaction as the queue length, under
//   key   modelserve:queue-tokens:{namespace}/{model}
//   value "<prompt tokens> <unixMs>"               (estimated prompt tokens of the requests waiting there)
// The gateway has no tokenizer: the estimate is the prompts' UTF-8 bytes / 4 (gateway/requestBody.ts). A key of its
// own rather than a third number in the queue entry: an autoscaler from before it reads "<waiting> <unixMs>" strictly
// and deletes what it cannot parse, so during an upgrade it keeps reading the new gateways' lengths. A gateway from
// before it writes no token field; the reader then reports the queued tokens as unknown (see sumQueuedPromptTokens).
//
// Wake: a gateway that queues a request for a model with no ready replica publishes on WAKE_CHANNEL a JSON
// WakeMessage; the autoscaler runs that model's decision at once instead of waiting for its next tick.

export const QUEUE_KEY_PREFIX = 'modelserve:queue:';
export const QUEUE_TOKENS_KEY_PREFIX = 'modelserve:queue-tokens:';
export const WAKE_CHANNEL = 'modelserve:wake';
/** Autoscaler state (windows, panic, last scale) per ModelDeployment; written only by the leader. */
export const STATE_KEY_PREFIX = 'modelserve:autoscaler:state:';

/** A gateway rewrites its field at least this often while it has the model's queue. */
export const QUEUE_REFRESH_MS = 2_000;
/** Fields older than this are ignored (a dead or partitioned gateway ages out). */
export const QUEUE_ENTRY_TTL_MS = 10_000;
/** Expiry of the whole key, renewed on every write; it disappears when no gateway writes any more. */
export const QUEUE_KEY_TTL_MS = 30_000;

export const queueKey = (namespace: string, model: string): string => `${QUEUE_KEY_PREFIX}${namespace}/${model}`;
export const queueTokensKey = (namespace: string, model: string): string =>
  `${QUEUE_TOKENS_KEY_PREFIX}${namespace}/${model}`;
export const stateKey = (namespace: string, name: string): string => `${STATE_KEY_PREFIX}${namespace}/${name}`;

export function encodeQueueEntry(waiting: number, unixMs: number): string {
  return `${Math.max(0, Math.round(waiting))} ${Math.round(unixMs)}`;
}

export function decodeQueueEntry(value: string): { waiting: number; unixMs: number } | undefined {
  const m = /^(\d+) (\d+)$/.exec(value.trim());
  if (!m) return undefined;
  return { waiting: Number(m[1]), unixMs: Number(m[2]) };
}

/** Sum of the fresh entries of one queue hash; stale or malformed fields are listed for deletion. */
export function sumQueueEntries(
  entries: Record<string, string>,
  nowMs: number,
  ttlMs = QUEUE_ENTRY_TTL_MS,
): { waiting: number; gateways: number; stale: string[] } {
  let waiting = 0;
  let gateways = 0;
  const stale: string[] = [];
  for (const [field, value] of Object.entries(entries)) {
    const entry = decodeQueueEntry(value);
    if (!entry || nowMs - entry.unixMs > ttlMs) {
      stale.push(field);
      continue;
    }
    waiting += entry.waiting;
    gateways += 1;
  }
  return { waiting, gateways, stale };
}

/**
 * Sum of the fresh token entries of the gateways whose queue entries (`lengths`, one queue hash) are fresh. undefined
 * when a gateway with waiting requests reported no fresh token count (a gateway from before the token key): a partial
 * sum would understate the backlog, and the policy then uses request counts. Stale or malformed token fields are
 * listed for deletion.
 */
export function sumQueuedPromptTokens(
  lengths: Record<string, string>,
  tokens: Record<string, string>,
  nowMs: number,
  ttlMs = QUEUE_ENTRY_TTL_MS,
): { promptTokens: number | undefined; stale: string[] } {
  const fresh = (value: string | undefined) => {
    const entry = value === undefined ? undefined : decodeQueueEntry(value);
    return entry && nowMs - entry.unixMs <= ttlMs ? entry : undefined;
  };
  const stale = Object.keys(tokens).filter((field) => !fresh(tokens[field]));
  let promptTokens: number | undefined = 0;
  for (const [field, value] of Object.entries(lengths)) {
    const length = fresh(value);
    if (!length) continue;
    const queued = fresh(tokens[field]);
    if (queued) promptTokens = promptTokens === undefined ? undefined : promptTokens + queued.waiting;
    else if (length.waiting > 0) promptTokens = undefined;
  }
  return { promptTokens, stale };
}

/** The few Redis commands the writer needs (ioredis' Redis satisfies it). */
export interface QueueWriter {
  multi(): {
    hset(key: string, field: string, value: string): unknown;
    pexpire(key: string, ms: number): unknown;
    exec(): Promise<unknown>;
  };
}

/**
 * What a gateway calls: records its own queue length for one model and, when given, the estimated prompt tokens of
 * those requests (one transaction, one timestamp).
 */
export async function writeQueueLength(
  redis: QueueWriter,
  p: { namespace: string; model: string; gatewayId: string; waiting: number; promptTokens?: number; nowMs?: number },
): Promise<void> {
  const key = queueKey(p.namespace, p.model);
  const nowMs = p.nowMs ?? Date.now();
  const tx = redis.multi();
  tx.hset(key, p.gatewayId, encodeQueueEntry(p.waiting, nowMs));
  tx.pexpire(key, QUEUE_KEY_TTL_MS);
  if (p.promptTokens !== undefined) {
    const tokensKey = queueTokensKey(p.namespace, p.model);
    tx.hset(tokensKey, p.gatewayId, encodeQueueEntry(p.promptTokens, nowMs));
    tx.pexpire(tokensKey, QUEUE_KEY_TTL_MS);
  }
  await tx.exec();
}

export interface WakeMessage {
  namespace: string;
  /** spec.model.name */
  model: string;
  /** Requests waiting at the publishing gateway. */
  waiting: number;
  /** Unix milliseconds of publication. */
  at: number;
}

export function encodeWake(msg: WakeMessage): string {
  return JSON.stringify(msg);
}

/** Parses a wake message; undefined (never a throw) for anything malformed, since the channel is shared. */
export function parseWake(text: string): WakeMessage | undefined {
  try {
    const v = JSON.parse(text) as Partial<WakeMessage>;
    if (typeof v.namespace !== 'string' || typeof v.model !== 'string' || !v.namespace || !v.model) return undefined;
    return {
      namespace: v.namespace,
      model: v.model,
      waiting: typeof v.waiting === 'number' && Number.isFinite(v.waiting) ? v.waiting : 0,
      at: typeof v.at === 'number' && Number.isFinite(v.at) ? v.at : 0,
    };
  } catch {
    return undefined;
  }
}
