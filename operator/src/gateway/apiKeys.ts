// API keys. A key lives in a Kubernetes Secret labelled serving.modelserve.dev/api-key=true with data `key` (the
// bearer token), `models` (comma list of model ids, or `*`), `rpm` and `tpm` (limits per minute; absent or 0 = none).
// The gateway keeps only the SHA-256 of each key: the clear key is hashed as the Secret is read and never stored or
// logged. A request's key is hashed the same way and looked up; its id (namespace/name of the Secret) is what logs,
// metrics and rate-limit counters see.
import { createHash } from 'node:crypto';
import type { V1Secret } from '@kubernetes/client-node';

export const API_KEY_LABEL = 'serving.modelserve.dev/api-key';

export interface ApiKey {
  /** namespace/name of the Secret: safe to log. */
  id: string;
  /** Hex SHA-256 of the key. */
  hash: string;
  /** Allowed model ids; '*' in the set allows all. */
  models: ReadonlySet<string>;
  /** Requests per minute; 0 = unlimited. */
  rpm: number;
  /** Tokens (prompt + completion) per minute; 0 = unlimited. */
  tpm: number;
}

export const hashKey = (key: string): string => createHash('sha256').update(key, 'utf8').digest('hex');

export class ApiKeyError extends Error {
  constructor(
    readonly secret: string,
    readonly field: string,
    message: string,
  ) {
    super(`Secret ${secret}: data.${field}: ${message}`);
    this.name = 'ApiKeyError';
  }
}

function decode(secret: V1Secret, field: string): string | undefined {
  const b64 = secret.data?.[field];
  if (b64 !== undefined) return Buffer.from(b64, 'base64').toString('utf8');
  return secret.stringData?.[field];
}

function limit(id: string, field: string, text: string | undefined): number {
  if (text === undefined || text.trim() === '') return 0;
  const n = Number(text.trim());
  if (!Number.isInteger(n) || n < 0)
    throw new ApiKeyError(id, field, `expected a non-negative integer, got ${JSON.stringify(text)}`);
  return n;
}

/** The key a Secret describes; throws ApiKeyError naming the Secret and field when it is malformed. */
export function apiKeyFromSecret(secret: V1Secret): ApiKey {
  const id = `${secret.metadata?.namespace ?? ''}/${secret.metadata?.name ?? ''}`;
  const key = decode(secret, 'key')?.trim();
  if (!key) throw new ApiKeyError(id, 'key', 'missing or empty');
  const modelsText = decode(secret, 'models') ?? '';
  const models = new Set(
    modelsText
      .split(',')
      .map((m) => m.trim())
      .filter((m) => m !== ''),
  );
  if (models.size === 0) throw new ApiKeyError(id, 'models', "missing or empty (a comma list of model ids, or '*')");
  return {
    id,
    hash: hashKey(key),
    models,
    rpm: limit(id, 'rpm', decode(secret, 'rpm')),
    tpm: limit(id, 'tpm', decode(secret, 'tpm')),
  };
}

export const allowsModel = (key: ApiKey, model: string): boolean => key.models.has('*') || key.models.has(model);

/** The bearer token of an Authorization header (or an `api-key` header, as Azure-style clients send). */
export function bearerToken(headers: { authorization?: string; 'api-key'?: string | string[] }): string | undefined {
  const auth = headers.authorization;
  if (auth) {
    const m = /^Bearer\s+(.+)$/i.exec(auth.trim());
    return m ? (m[1] as string).trim() : undefined;
  }
  const alt = headers['api-key'];
  return typeof alt === 'string' && alt.trim() !== '' ? alt.trim() : undefined;
}

/** Keys by hash, rebuilt from Secrets as they change. */
export class ApiKeyStore {
  private byHash = new Map<string, ApiKey>();
  private bySecret = new Map<string, ApiKey>();

  /** Adds or replaces the key of a Secret; returns the error when the Secret is malformed (its old key is dropped). */
  upsert(secret: V1Secret): ApiKeyError | undefined {
    const id = `${secret.metadata?.namespace ?? ''}/${secret.metadata?.name ?? ''}`;
    this.delete(id);
    try {
      const key = apiKeyFromSecret(secret);
      this.bySecret.set(id, key);
      this.byHash.set(key.hash, key);
      return undefined;
    } catch (err) {
      if (err instanceof ApiKeyError) return err;
      throw err;
    }
  }

  delete(id: string): void {
    const old = this.bySecret.get(id);
    if (!old) return;
    this.bySecret.delete(id);
    if (this.byHash.get(old.hash) === old) this.byHash.delete(old.hash);
  }

  lookup(key: string): ApiKey | undefined {
    return this.byHash.get(hashKey(key));
  }

  get size(): number {
    return this.bySecret.size;
  }
}
