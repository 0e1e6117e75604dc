// Names of the ModelDeployment API and the labels the operator puts on what it creates. The shape of the object
// itself is generated from the CRD (./generated.ts).
export type { ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus } from './generated.js';
export type { ModelDeploymentStatusConditionItem as Condition } from './generated.js';

export const GROUP = 'serving.modelserve.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = 'ModelDeployment';
export const PLURAL = 'modeldeployments';

/** The fieldManager of every server-side apply the operator makes, and its Events' reportingController. */
export const FIELD_MANAGER = 'modelserve-operator';
export const CONTROLLER_NAME = 'serving.modelserve.dev/operator';

export const LABEL_NAME = 'app.kubernetes.io/name';
export const LABEL_INSTANCE = 'app.kubernetes.io/instance';
export const LABEL_COMPONENT = 'app.kubernetes.io/component';
export const LABEL_MANAGED_BY = 'app.kubernetes.io/managed-by';
export const LABEL_PART_OF = 'app.kubernetes.io/part-of';
export const LABEL_MODEL = 'serving.modelserve.dev/model';
export const WORKER_APP_NAME = 'modelserve-worker';
export const MANAGED_BY = 'modelserve-operator';

/** Hash of the operator's desired spec of an owned object, so an unchanged object costs no API call. */
export const ANNOTATION_SPEC_HASH = 'serving.modelserve.dev/spec-hash';
/** Hash of the engine ConfigMap, in the pod template, so an engine change rolls the pods. */
export const ANNOTATION_CONFIG_HASH = 'serving.modelserve.dev/engine-config-hash';
export const ANNOTATION_DELETION_COST = 'controller.kubernetes.io/pod-deletion-cost';

export const key = (namespace: string, name: string): string => `${namespace}/${name}`;
export function splitKey(k: string): { namespace: string; name: string } {
  const slash = k.indexOf('/');
  return { namespace: k.slice(0, slash), name: k.slice(slash + 1) };
}
