// REST paths of the resources the operator touches.

export interface Resource {
  group: string; // '' for the core group
  version: string;
  plural: string;
  kind: string;
}

export const resources = {
  modelDeployments: {
    group: 'serving.modelserve.dev',
    version: 'v1alpha1',
    plural: 'modeldeployments',
    kind: 'ModelDeployment',
  },
  deployments: { group: 'apps', version: 'v1', plural: 'deployments', kind: 'Deployment' },
  pods: { group: '', version: 'v1', plural: 'pods', kind: 'Pod' },
  services: { group: '', version: 'v1', plural: 'services', kind: 'Service' },
  configMaps: { group: '', version: 'v1', plural: 'configmaps', kind: 'ConfigMap' },
  podDisruptionBudgets: { group: 'policy', version: 'v1', plural: 'poddisruptionbudgets', kind: 'PodDisruptionBudget' },
  events: { group: 'events.k8s.io', version: 'v1', plural: 'events', kind: 'Event' },
  leases: { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', kind: 'Lease' },
  // The node-local weight cache: stager Jobs, and labels on the nodes whose cache is ready.
  jobs: { group: 'batch', version: 'v1', plural: 'jobs', kind: 'Job' },
  nodes: { group: '', version: 'v1', plural: 'nodes', kind: 'Node' },
} satisfies Record<string, Resource>;

const prefix = (r: Resource): string => (r.group ? `/apis/${r.group}/${r.version}` : `/api/${r.version}`);

/** The collection: all namespaces when namespace is undefined. */
export function collectionPath(r: Resource, namespace?: string): string {
  return namespace ? `${prefix(r)}/namespaces/${namespace}/${r.plural}` : `${prefix(r)}/${r.plural}`;
}

export function objectPath(r: Resource, namespace: string, name: string, subresource?: string): string {
  return `${collectionPath(r, namespace)}/${encodeURIComponent(name)}${subresource ? `/${subresource}` : ''}`;
}
