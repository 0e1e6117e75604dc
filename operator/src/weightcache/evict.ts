// Keeping a node's cache under its disk budget. The choice is pure (unit-tested); the scan and removal are the
// stager's, which is the only writer of the cache root on its node.
import fs from 'node:fs';
import path from 'node:path';

import { COMPLETE_MARKER, keyOfEntry, STAGING_SUFFIX } from './keys.js';

/** How the stager's budget failure begins (the controller retries those when the wanted entries change). */
export const BUDGET_FAILURE = 'disk budget ';

export interface CacheEntry {
  /** Directory name under the cache root (an entry, or an entry's `.staging` directory). */
  name: string;
  key?: string;
  bytes: number;
  complete: boolean;
  /** Last time a stager staged or confirmed this entry (ms since epoch). */
  lastUsedMs: number;
}

export interface EvictionChoice {
  evict: string[];
  /** Bytes in use after evicting, before the new entry is written. */
  usedAfter: number;
}

/**
 * Which entries to remove so that `incomingBytes` more fit in `budgetBytes`. Never touches entries whose key is in
 * `keep` (wanted on this node) or the entry being staged (`current`). Unfinished stagings go first, then complete
 * entries least recently used first. Throws when even that is not enough, naming the sizes.
 */
export function chooseEvictions(
  entries: CacheEntry[],
  opts: { keep: Set<string>; current: string; incomingBytes: number; budgetBytes: number },
): EvictionChoice {
  const mine = (e: CacheEntry) => e.key === opts.current;
  let used = entries.filter((e) => !mine(e)).reduce((s, e) => s + e.bytes, 0);
  const candidates = entries
    .filter((e) => !mine(e) && !(e.key && opts.keep.has(e.key)))
    .sort(
      (a, b) => Number(a.complete) - Number(b.complete) || a.lastUsedMs - b.lastUsedMs || (a.name < b.name ? -1 : 1),
    );
  const evict: string[] = [];
  for (const e of candidates) {
    if (used + opts.incomingBytes <= opts.budgetBytes) break;
    evict.push(e.name);
    used -= e.bytes;
  }
  if (used + opts.incomingBytes > opts.budgetBytes) {
    throw new Error(
      `${BUDGET_FAILURE}${opts.budgetBytes} bytes is too small: the entry needs ${opts.incomingBytes} bytes and entries ` +
        `still wanted on this node use ${used} bytes`,
    );
  }
  return { evict, usedAfter: used };
}

function dirBytes(dir: string): number {
  let total = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += dirBytes(p);
    else if (e.isFile()) total += fs.statSync(p).size;
  }
  return total;
}

/** The entries under a cache root as the eviction choice sees them. Unknown directories are left alone. */
export function scanCache(root: string): CacheEntry[] {
  if (!fs.existsSync(root)) return [];
  const out: CacheEntry[] = [];
  for (const e of fs.readdirSync(root, { withFileTypes: true })) {
    if (!e.isDirectory()) continue;
    const staging = e.name.endsWith(STAGING_SUFFIX);
    const base = staging ? e.name.slice(0, -STAGING_SUFFIX.length) : e.name;
    const key = keyOfEntry(base);
    if (!key) continue;
    const dir = path.join(root, e.name);
    const marker = path.join(dir, COMPLETE_MARKER);
    const complete = !staging && fs.existsSync(marker);
    const lastUsedMs = fs.statSync(complete ? marker : dir).mtimeMs;
    out.push({ name: e.name, key, bytes: dirBytes(dir), complete, lastUsedMs });
  }
  return out;
}
