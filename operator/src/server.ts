// The operator's HTTP endpoints: /healthz (process alive), /readyz (caches synced, or standing by as a follower),
// /metrics (Prometheus text from the registry in telemetry/metrics.ts).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { registry } from './telemetry/metrics.js';

export interface Health {
  ready(): boolean;
}

export async function startHttpServer(host: string, port: number, health: Health): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') {
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const ok = health.ready();
      res.writeHead(ok ? 200 : 503, { 'Content-Type': 'text/plain' }).end(ok ? 'ok\n' : 'caches not synced\n');
    } else if (path === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'Content-Type': registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
    } else {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}

export const boundPort = (server: http.Server): number => (server.address() as AddressInfo).port;
