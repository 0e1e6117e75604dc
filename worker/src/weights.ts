// Where the worker reads its checkpoint from: the node-local weight cache when the operator mounted one
// (spec.prewarm.nodeCache: MODELSERVE_WEIGHTS_CACHE = the entry directory, MODELSERVE_WEIGHTS_CACHE_MARKER = the
// stager's completion marker) and the entry is complete on this node, else --model / MODELSERVE_MODEL as before.
//
// "Complete" is what the stager promises (operator/src/weightcache/stager.ts): the marker is written last into the
// staging directory, which is then renamed into place, so a marker means every listed file was verified by SHA-256.
// The worker re-checks only what is cheap — the marker parses, names the key the entry directory was made for, and
// every listed file exists with its recorded size — so a damaged or foreign entry falls back to the source instead of
// failing the load.
import fs from 'node:fs';
import path from 'node:path';

import { COMPLETE_MARKER, keyOfEntry } from '../../operator/src/weightcache/keys.js';
import type { CompleteMarker } from '../../operator/src/weightcache/stager.js';

export interface WeightsChoice {
  /** Directory to load. */
  path: string;
  from: 'cache' | 'source';
  /** Why: which marker was used, or why the cache was not. */
  reason: string;
  /** Bytes of the cache entry (from its marker) when it is used. */
  bytes?: number;
  files?: number;
}

export interface WeightsInputs {
  /** --model / MODELSERVE_MODEL. */
  modelPath: string;
  /** MODELSERVE_WEIGHTS_CACHE: the cache entry directory; unset when the deployment has no node cache. */
  cacheDir?: string;
  /** MODELSERVE_WEIGHTS_CACHE_MARKER (default: the stager's marker name). */
  marker?: string;
}

/** Checks the cache entry; undefined when it is complete, else the reason it cannot be used. */
export function cacheProblem(dir: string, markerName = COMPLETE_MARKER): { problem?: string; marker?: CompleteMarker } {
  const markerPath = path.join(dir, markerName);
  let text: string;
  try {
    text = fs.readFileSync(markerPath, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return {
      problem:
        code === 'ENOENT'
          ? `no ${markerName} in ${dir} (the entry is not staged on this node)`
          : `cannot read ${markerPath}: ${(err as Error).message}`,
    };
  }
  let marker: CompleteMarker;
  try {
    marker = JSON.parse(text) as CompleteMarker;
  } catch (err) {
    return { problem: `${markerPath} is not JSON: ${(err as Error).message}` };
  }
  if (!marker || typeof marker !== 'object' || !Array.isArray(marker.files) || marker.files.length === 0) {
    return { problem: `${markerPath} lists no files` };
  }
  const dirKey = keyOfEntry(path.basename(path.resolve(dir)));
  if (dirKey !== undefined && marker.key !== dirKey) {
    return { problem: `${markerPath} is for key ${String(marker.key)}, the entry directory for ${dirKey}` };
  }
  for (const f of marker.files) {
    if (typeof f?.path !== 'string' || f.path.split('/').some((s) => s === '' || s === '..' || s === '.')) {
      return { problem: `${markerPath} lists an unsafe path ${JSON.stringify(f?.path)}` };
    }
    let size: number;
    try {
      size = fs.statSync(path.join(dir, ...f.path.split('/'))).size;
    } catch {
      return { problem: `${f.path} listed in ${markerName} is missing from ${dir}` };
    }
    if (size !== f.bytes) return { problem: `${f.path} in ${dir} has ${size} bytes, the marker says ${f.bytes}` };
  }
  return { marker };
}

/** The directory to load and why. */
export function chooseWeights(inputs: WeightsInputs): WeightsChoice {
  const source = path.resolve(inputs.modelPath);
  if (!inputs.cacheDir) return { path: source, from: 'source', reason: 'no node cache configured' };
  const { problem, marker } = cacheProblem(inputs.cacheDir, inputs.marker || COMPLETE_MARKER);
  if (problem || !marker) return { path: source, from: 'source', reason: problem ?? 'no marker' };
  return {
    path: path.resolve(inputs.cacheDir),
    from: 'cache',
    reason: `${inputs.marker || COMPLETE_MARKER} of key ${marker.key}, staged ${marker.completedAt}`,
    bytes: marker.bytes,
    files: marker.files.length,
  };
}
