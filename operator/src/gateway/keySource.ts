// Keeps the ApiKeyStore in step with the API-key Secrets through an informer: a new, changed or deleted Secret takes
// effect within the watch's latency, without a restart. A malformed Secret is logged (by name and field, never the
// key) and grants nothing.
import type { V1Secret } from '@kubernetes/client-node';
import { Informer } from '../k8s/informer.js';
import type { Resource } from '../k8s/resources.js';
import type { KubeClient } from '../k8s/rest.js';
import type { Logger } from '../telemetry/logger.js';
import { API_KEY_LABEL, ApiKeyStore } from './apiKeys.js';
import * as metrics from './metrics.js';

const secrets: Resource = { group: '', version: 'v1', plural: 'secrets', kind: 'Secret' };

export class KeySource {
  private readonly informer: Informer<V1Secret>;

  constructor(
    client: KubeClient,
    readonly store: ApiKeyStore,
    log: Logger,
    opts: { namespace?: string; resyncMs: number },
  ) {
    this.informer = new Informer<V1Secret>(client, secrets, {
      namespace: opts.namespace,
      labelSelector: `${API_KEY_LABEL}=true`,
      resyncMs: opts.resyncMs,
      onError: (err) => log.warn('api-key secret watch failed; retrying', { error: String(err) }),
    });
    this.informer.on((event, secret) => {
      const id = `${secret.metadata?.namespace ?? ''}/${secret.metadata?.name ?? ''}`;
      if (event === 'delete') {
        store.delete(id);
        log.info('api key removed', { key_id: id });
      } else if (event !== 'resync') {
        const err = store.upsert(secret);
        if (err) log.warn('api key secret ignored', { key_id: id, error: err.message });
        else log.info('api key loaded', { key_id: id });
      }
      metrics.apiKeysLoaded.set(store.size);
    });
  }

  async start(): Promise<void> {
    this.informer.start();
    await this.informer.waitForSync();
  }

  stop(): Promise<void> {
    return this.informer.stop();
  }
}
