// Names of the node-local weight cache, shared by the operator (Jobs, node labels, worker pod template) and the stager
// (directories, markers). Pure functions: the same ModelDeployment spec always yields the same key, so a restart of
// the operator finds the Jobs and labels it made before instead of staging again.
import { createHash } from 'node:crypto';

import type { ModelDeployment } from '../api/modelDeployment.js';

/** Node label prefix: `cache.modelserve.dev/<key>=ready` on a node whose disk holds a complete, verified entry. */
export const CACHE_LABEL_PREFIX = 'cache.modelserve.dev/';
export const CACHE_READY = 'ready';
/** Labels of stager Jobs (and their pods). */
export const LABEL_CACHE_KEY = 'cache.modelserve.dev/key';
export const LABEL_CACHE_NODE = 'cache.modelserve.dev/node-hash';
export const WEIGHT_CACHE_COMPONENT = 'weight-cache';
/** Full node name and cache entry of a stager Job (labels cannot hold every node name). */
export const ANNOTATION_CACHE_NODE = 'cache.modelserve.dev/node';
export const ANNOTATION_CACHE_ENTRY = 'cache.modelserve.dev/entry';
/** Hash of the keys a stager Job was told to keep: a Job that failed on the budget is retried when it changes. */
export const ANNOTATION_CACHE_KEEP = 'cache.modelserve.dev/keep-hash';
export const keepHash = (keep: Iterable<string>): string => sha256Hex([...keep].sort().join(',')).slice(0, 16);
/** File written last into a complete entry; its presence is what "complete" means. */
export const COMPLETE_MARKER = '.modelserve-complete.json';
/** Suffix of the directory an entry is staged in before its atomic rename into place. */
export const STAGING_SUFFIX = '.staging';
/** Where worker pods see the cache root (read-only hostPath). */
export const CACHE_MOUNT_PATH = '/weights-cache';

export interface CacheSource {
  namespace: string;
  source: string;
  revision?: string;
  sha256?: Record<string, string>;
}

/** What a ModelDeployment's cache entry is made of. */
export const cacheSourceOf = (mdep: ModelDeployment): CacheSource => ({
  namespace: mdep.metadata.namespace ?? '',
  source: mdep.spec.model.source,
  revision: mdep.spec.model.revision,
  sha256: mdep.spec.model.sha256,
});

function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * 16 hex digits identifying the content of an entry: namespace, source, revision and the expected checksums. The
 * namespace is part of it because a pvc:// source names a claim of that namespace, and because stager Jobs live there:
 * one Job (one writer) per cache path.
 */
export function cacheKey(s: CacheSource): string {
  const sums = Object.entries(s.sha256 ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return sha256Hex(JSON.stringify([s.namespace, s.source, s.revision ?? '', sums])).slice(0, 16);
}

/** A short readable slug of the source location, e.g. hf://openai/gpt-oss-20b → openai-gpt-oss-20b. */
export function sourceSlug(source: string): string {
  const location = source.replace(/^[a-z]+:\/\//, '');
  const slug = location
    .replace(/[^A-Za-z0-9._-]+/g, '-')
    .replace(/^[-.]+|[-.]+$/g, '')
    .slice(-40)
    .replace(/^[-.]+/, '');
  return slug || 'weights';
}

/** Directory name of an entry under the cache root: model, revision and checksum key, e.g. org-m_0123abcd_<key>. */
export function entryName(s: CacheSource): string {
  const rev = (s.revision ?? 'none').replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 12);
  return `${sourceSlug(s.source)}_${rev}_${cacheKey(s)}`;
}

/** The key at the end of an entry name (undefined for names the cache did not make). */
export function keyOfEntry(name: string): string | undefined {
  return /_([0-9a-f]{16})$/.exec(name)?.[1];
}

export const cacheLabel = (key: string): string => `${CACHE_LABEL_PREFIX}${key}`;

/** The cache keys a node is labelled ready for. */
export function readyKeys(labels: Record<string, string> | undefined): string[] {
  return Object.entries(labels ?? {})
    .filter(
      ([k, v]) =>
        k.startsWith(CACHE_LABEL_PREFIX) &&
        /^[0-9a-f]{16}$/.test(k.slice(CACHE_LABEL_PREFIX.length)) &&
        v === CACHE_READY,
    )
    .map(([k]) => k.slice(CACHE_LABEL_PREFIX.length));
}

export const nodeHash = (node: string): string => sha256Hex(node).slice(0, 10);

/** The stager Job of one entry on one node: 30 characters, so pod names derived from it stay valid. */
export const stagerJobName = (key: string, node: string): string => `wcache-${key}-${nodeHash(node).slice(0, 6)}`;

const units: Record<string, number> = {
  '': 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
};

/** Bytes of a Kubernetes quantity such as 500Gi or 2T; throws naming `what` on anything else. */
export function parseBytes(text: string, what: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$/.exec(text.trim());
  if (!m) throw new Error(`${what}: expected a byte quantity such as 500Gi or 2T, got ${JSON.stringify(text)}`);
  return Math.floor(Number(m[1]) * (units[m[2] ?? ''] as number));
}
