// Test fixtures: ModelDeployments as the API server would serve them, with the CRD's schema defaults applied by
// walking the real CRD (so fixtures cannot drift from the schema).
import { readFileSync } from 'node:fs';
import type { V1Pod } from '@kubernetes/client-node';
import { crdPath, loadCrdSchema, type SchemaNode } from '../../hack/generate-types.js';
import type { ModelDeployment } from '../src/api/modelDeployment.js';

export const crdSchema: SchemaNode = loadCrdSchema(readFileSync(crdPath, 'utf8'));

/** Structural-schema defaulting: fill missing properties that have a default, then recurse. */
export function applyDefaults(node: SchemaNode, value: unknown): unknown {
  if (Array.isArray(value)) return value.map((v) => (node.items ? applyDefaults(node.items, v) : v));
  if (!value || typeof value !== 'object' || !node.properties) return value;
  const obj = { ...(value as Record<string, unknown>) };
  for (const [key, child] of Object.entries(node.properties)) {
    if (obj[key] === undefined && child.default !== undefined) obj[key] = structuredClone(child.default);
    if (obj[key] !== undefined) obj[key] = applyDefaults(child, obj[key]);
  }
  return obj;
}

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };

export function modelDeployment(
  spec: DeepPartial<ModelDeployment['spec']> = {},
  meta: Partial<ModelDeployment['metadata']> = {},
): ModelDeployment {
  const raw = {
    apiVersion: 'serving.modelserve.dev/v1alpha1',
    kind: 'ModelDeployment',
    metadata: { name: 'gpt', namespace: 'ml', uid: 'uid-1', generation: 1, ...meta },
    spec: { ...spec, model: { name: 'gpt-oss-20b', source: 'file:///models/gpt-oss-20b', ...spec.model } },
  };
  return applyDefaults(crdSchema, raw) as ModelDeployment;
}

export function pod(
  name: string,
  opts: { ready?: boolean; phase?: string; created?: string; annotations?: Record<string, string> } = {},
): V1Pod {
  return {
    metadata: {
      name,
      namespace: 'ml',
      creationTimestamp: new Date(opts.created ?? '2026-01-01T00:00:00Z'),
      annotations: opts.annotations,
      labels: { 'app.kubernetes.io/instance': 'gpt' },
    },
    status: {
      phase: opts.phase ?? 'Running',
      conditions: [{ type: 'Ready', status: opts.ready === false ? 'False' : 'True' }],
    },
  };
}
