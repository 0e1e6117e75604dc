// What spec.prewarm.nodeCache adds to the worker pod template: a preference for nodes whose cache entry is ready, the
// cache root mounted read-only, and where in it this model's entry is. A pod that lands on a node without the entry
// (none ready yet, or the ready ones full) still starts from spec.model.source as before.
import type { V1Affinity, V1EnvVar, V1Volume, V1VolumeMount } from '@kubernetes/client-node';

import type { ModelDeployment } from '../api/modelDeployment.js';
import {
  CACHE_MOUNT_PATH,
  cacheKey,
  cacheLabel,
  CACHE_READY,
  cacheSourceOf,
  COMPLETE_MARKER,
  entryName,
} from './keys.js';

export const CACHE_VOLUME = 'weights-cache';
/** Env of the worker (and fetch-weights): the entry directory; use it when its completion marker exists. */
export const ENV_WEIGHTS_CACHE = 'MODELSERVE_WEIGHTS_CACHE';
export const ENV_WEIGHTS_CACHE_MARKER = 'MODELSERVE_WEIGHTS_CACHE_MARKER';

export interface CacheTemplate {
  affinity: V1Affinity;
  volume: V1Volume;
  mount: V1VolumeMount;
  env: V1EnvVar[];
}

/** The pod-template additions for `mdep`, or undefined when its node cache is off or the operator has no cache dir. */
export function cacheTemplate(mdep: ModelDeployment, cacheDir: string | undefined): CacheTemplate | undefined {
  if (!cacheDir || mdep.spec.prewarm?.nodeCache !== true) return undefined;
  const src = cacheSourceOf(mdep);
  return {
    affinity: {
      nodeAffinity: {
        preferredDuringSchedulingIgnoredDuringExecution: [
          {
            weight: 100,
            preference: {
              matchExpressions: [{ key: cacheLabel(cacheKey(src)), operator: 'In', values: [CACHE_READY] }],
            },
          },
        ],
      },
    },
    // The whole root, not the entry: a missing entry must not fail the mount, and a stager must be able to rename
    // its finished entry into place while workers run.
    volume: { name: CACHE_VOLUME, hostPath: { path: cacheDir, type: 'DirectoryOrCreate' } },
    mount: { name: CACHE_VOLUME, mountPath: CACHE_MOUNT_PATH, readOnly: true },
    env: [
      { name: ENV_WEIGHTS_CACHE, value: `${CACHE_MOUNT_PATH}/${entryName(src)}` },
      { name: ENV_WEIGHTS_CACHE_MARKER, value: COMPLETE_MARKER },
    ],
  };
}
