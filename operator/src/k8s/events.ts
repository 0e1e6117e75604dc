// Kubernetes Events (events.k8s.io/v1) for every change the operator makes; `kubectl describe mdep/x` and
// `kubectl events` show them. Failures to record are logged, never fatal: an Event is a courtesy, not state.
import { randomBytes } from 'node:crypto';
import type { KubernetesObject } from '@kubernetes/client-node';
import { collectionPath, resources } from './resources.js';
import type { KubeClient } from './rest.js';

export type EventType = 'Normal' | 'Warning';

export interface EventRecord {
  type: EventType;
  /** CamelCase, for example Created, Scaled, Degraded. */
  reason: string;
  /** What the operator did, for example Create, Update, Scale. */
  action: string;
  note: string;
}

export function eventBody(regarding: KubernetesObject, record: EventRecord, controller: string, instance: string) {
  const name = regarding.metadata?.name ?? 'unknown';
  return {
    apiVersion: 'events.k8s.io/v1',
    kind: 'Event',
    metadata: {
      name: `${name}.${Date.now().toString(16)}${randomBytes(3).toString('hex')}`,
      namespace: regarding.metadata?.namespace,
    },
    eventTime: new Date().toISOString().replace(/Z$/, '000Z'),
    reportingController: controller,
    reportingInstance: instance.slice(0, 128),
    action: record.action,
    reason: record.reason,
    type: record.type,
    note: record.note.slice(0, 1024),
    regarding: {
      apiVersion: regarding.apiVersion,
      kind: regarding.kind,
      name,
      namespace: regarding.metadata?.namespace,
      uid: regarding.metadata?.uid,
      resourceVersion: regarding.metadata?.resourceVersion,
    },
  };
}

export class EventRecorder {
  constructor(
    private readonly client: KubeClient,
    private readonly controller: string,
    private readonly instance: string,
    private readonly onError: (err: unknown) => void,
  ) {}

  async record(regarding: KubernetesObject, record: EventRecord): Promise<void> {
    try {
      await this.client.request('POST', collectionPath(resources.events, regarding.metadata?.namespace), {
        body: eventBody(regarding, record, this.controller, this.instance),
      });
    } catch (err) {
      this.onError(err);
    }
  }
}
