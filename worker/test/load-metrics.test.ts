// The worker's model-loading series: they follow the loader's progress callbacks and the ready moment.
import { WorkerMetrics } from '../src/metrics.js';

const value = (text: string, name: string): number =>
  Number(new RegExp(`^${name}\\{model_name="m"\\} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);

test('load seconds, bytes, bytes/s and start-up seconds move with progress and ready', async () => {
  const metrics = new WorkerMetrics('m', { engineStats: () => undefined, admissionWaiting: () => 0 });
  let text = await metrics.registry.metrics();
  // Before any progress: start-up 0 (not ready), no load figures yet.
  expect(value(text, 'modelserve_worker_startup_seconds')).toBe(0);
  expect(text).not.toMatch(/^modelserve_worker_load_bytes\{/m);

  metrics.observeLoadProgress(250, 1000, 0.5);
  text = await metrics.registry.metrics();
  expect(value(text, 'modelserve_worker_load_bytes')).toBe(250);
  expect(value(text, 'modelserve_worker_model_bytes')).toBe(1000);
  expect(value(text, 'modelserve_worker_load_seconds')).toBe(0.5);
  expect(value(text, 'modelserve_worker_load_bytes_per_second')).toBe(500);

  metrics.observeLoadProgress(1000, 1000, 1.25);
  metrics.observeReady(3.5);
  text = await metrics.registry.metrics();
  expect(value(text, 'modelserve_worker_load_bytes_per_second')).toBe(800);
  expect(value(text, 'modelserve_worker_load_seconds')).toBe(1.25);
  expect(value(text, 'modelserve_worker_startup_seconds')).toBe(3.5);
  expect(text).toContain('# TYPE modelserve_worker_load_seconds gauge');
});
