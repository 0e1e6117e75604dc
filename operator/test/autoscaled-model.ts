// A ModelDeployment with autoscaling on, created through the API server, for the autoscaler's integration tests.
import { collectionPath, resources } from '../src/k8s/resources.js';
import type { KubeClient } from '../src/k8s/rest.js';

export async function createAutoscaledModel(
  api: KubeClient,
  namespace: string,
  name: string,
  autoscaling: Record<string, unknown>,
  replicas = 1,
): Promise<void> {
  await api.request('POST', collectionPath(resources.modelDeployments, namespace), {
    body: {
      apiVersion: 'serving.modelserve.dev/v1alpha1',
      kind: 'ModelDeployment',
      metadata: { name, namespace },
      spec: {
        model: { name: `${name}-model`, source: 'file:///models/gpt-oss-20b' },
        resources: { gpus: 1 },
        replicas,
        autoscaling: { enabled: true, ...autoscaling },
      },
    },
  });
}
