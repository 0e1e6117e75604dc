// The worker's `Server-Timing` field (a trailer on streams, a header otherwise; docs/worker.md names its metrics) as
// the load generator reads it, and the TTFT the HTTP path adds per request: the client's TTFT minus the engine's
// (`engine-ttft`), two durations, so no clock is shared between client and server.
import { summarize } from './stats.js';
import type { RequestResult } from './load.js';

/**
 * Metric name → `dur` (ms) of a Server-Timing field (https://www.w3.org/TR/server-timing/): comma-separated metrics,
 * each a name with `;param=value` parameters, a value a token or a quoted string. Metrics without a `dur` and
 * malformed durations are left out; of a repeated name, the first is kept. Several field lines
 * (an array, or node's comma-joined copy) read as one list.
 */
export function parseServerTiming(field: string | string[] | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  if (field === undefined) return out;
  const text = Array.isArray(field) ? field.join(',') : field;
  for (const metric of splitOutsideQuotes(text, ',')) {
    const [rawName, ...params] = splitOutsideQuotes(metric, ';');
    const name = rawName!.trim();
    if (!name || name in out) continue;
    for (const param of params) {
      const eq = param.indexOf('=');
      if (eq === -1 || param.slice(0, eq).trim().toLowerCase() !== 'dur') continue;
      let value = param.slice(eq + 1).trim();
      if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1);
      const dur = value === '' ? NaN : Number(value);
      if (Number.isFinite(dur)) out[name] = dur;
      break;
    }
  }
  return out;
}

/** Splits on `sep` where it is not inside a quoted string (a backslash escapes the next character there). */
function splitOutsideQuotes(text: string, sep: string): string[] {
  const parts: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '\\') i++;
      else if (ch === '"') quoted = false;
    } else if (ch === '"') {
      quoted = true;
    } else if (ch === sep) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(text.slice(start));
  return parts;
}

/** Per request with the server's `engine-ttft`: the client's TTFT minus it (ms). */
export function addedTtftMs(r: RequestResult): number | undefined {
  const engine = r.serverTiming?.['engine-ttft'];
  return engine === undefined ? undefined : r.ttftMs - engine;
}

const PERCENTILES = [50, 90, 99];

function stats(name: string, values: number[]): Record<string, number> {
  const sorted = [...values].sort((a, b) => a - b);
  return { ...summarize(name, sorted, PERCENTILES), [`max_${name}_ms`]: sorted.length ? sorted.at(-1)! : 0 };
}

/**
 * Over the completed requests: how many carried the server's `engine-ttft` and how many did not (counted, not
 * dropped silently), and mean/median/std/p50/p90/p99/max of
 *   added_ttft    client TTFT − engine-ttft (what the HTTP path adds, the client's side and the wire included)
 *   server_recv   the worker's `recv` (request handed to the app → route entered: routing, body read and parsed)
 *   server_pre    the worker's `pre` (route entered → submitted to the engine)
 *   server_post   the worker's `post` (first tokens delivered to JS → their chunk written)
 *   unattributed  added_ttft − recv − pre − post: request and response on the wire, node's HTTP parsing, waits for
 *                 the worker's event loop (other requests, other streams) or for a CPU, the client itself
 *   engine_ttft   the worker's `engine-ttft`
 */
export function serverTimingSummary(results: RequestResult[]): Record<string, number> {
  const ok = results.filter((r) => r.ok);
  const timed = ok.filter((r) => r.serverTiming?.['engine-ttft'] !== undefined);
  const field = (r: RequestResult, name: string): number => r.serverTiming?.[name] ?? 0;
  return {
    server_timing_requests: timed.length,
    server_timing_missing: ok.length - timed.length,
    ...stats(
      'added_ttft',
      timed.map((r) => addedTtftMs(r)!),
    ),
    ...stats(
      'server_recv',
      timed.map((r) => field(r, 'recv')),
    ),
    ...stats(
      'server_pre',
      timed.map((r) => field(r, 'pre')),
    ),
    ...stats(
      'server_post',
      timed.map((r) => field(r, 'post')),
    ),
    ...stats(
      'unattributed',
      timed.map((r) => addedTtftMs(r)! - field(r, 'recv') - field(r, 'pre') - field(r, 'post')),
    ),
    ...stats(
      'engine_ttft',
      timed.map((r) => field(r, 'engine-ttft')),
    ),
  };
}

/** Lines for a run's summary: the added TTFT and its parts (ms), and how many requests lacked the field. */
export function formatServerTiming(s: Record<string, unknown>): string[] {
  if (typeof s.server_timing_requests !== 'number') return [];
  const n = (k: string): string => (typeof s[k] === 'number' ? (s[k] as number).toFixed(3) : '-');
  const lines = [
    `Server-Timing on ${s.server_timing_requests} requests, missing on ${s.server_timing_missing}`,
    `${'(ms)'.padEnd(13)} ${'p50'.padStart(9)} ${'p90'.padStart(9)} ${'p99'.padStart(9)} ${'max'.padStart(9)}`,
  ];
  if (s.server_timing_requests === 0) return lines.slice(0, 1);
  for (const m of ['added_ttft', 'server_recv', 'server_pre', 'server_post', 'unattributed', 'engine_ttft']) {
    lines.push(
      `${m.padEnd(13)} ${n(`p50_${m}_ms`).padStart(9)} ${n(`p90_${m}_ms`).padStart(9)} ${n(`p99_${m}_ms`).padStart(9)} ${n(`max_${m}_ms`).padStart(9)}`,
    );
  }
  return lines;
}
