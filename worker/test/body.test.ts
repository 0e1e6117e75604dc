// jsonBody() must read every body exactly as express.json() does: the same req.body, or the same error (status, type,
// message). Both serve the same requests over real sockets; the outcomes are compared case by case.
import express, { type NextFunction, type Request, type Response } from 'express';
import { request } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { jsonBody } from '../src/body.js';

const LIMIT = 1024;

function appWith(parser: express.RequestHandler): express.Express {
  const app = express();
  app.use('/v1', parser);
  app.post('/v1/echo', (req: Request, res: Response) => {
    res.json({ body: req.body === undefined ? '<undefined>' : req.body });
  });
  app.use(
    (err: { status?: number; type?: string; message?: string }, _req: Request, res: Response, _next: NextFunction) => {
      res.status(err.status ?? 500).json({ error: { type: err.type, message: err.message } });
    },
  );
  return app;
}

let servers: Server[] = [];
let fast: number;
let reference: number;

beforeAll(async () => {
  const start = (app: express.Express): Promise<number> =>
    new Promise((resolve) => {
      const s = app.listen(0, '127.0.0.1', () => resolve((s.address() as AddressInfo).port));
      servers.push(s);
    });
  fast = await start(appWith(jsonBody({ limit: LIMIT })));
  reference = await start(appWith(express.json({ limit: LIMIT })));
});

afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  servers = [];
});

/** Raw request (node:http, so bodies and headers go out exactly as given). */
function send(port: number, body: Buffer, headers: Record<string, string>): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/v1/echo', method: 'POST', headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const json = 'application/json';
const withLength = (body: Buffer, headers: Record<string, string>) => ({
  'content-length': String(body.length),
  ...headers,
});
const cases: [string, Buffer, Record<string, string>][] = [
  ['an object', Buffer.from('{"model":"m","prompt":[1,2,3],"stream":true}'), { 'content-type': json }],
  ['an array', Buffer.from('[1,2]'), { 'content-type': json }],
  ['charset=utf-8', Buffer.from('{"a":"é"}'), { 'content-type': 'application/json; charset=utf-8' }],
  ['charset=UTF-8 quoted', Buffer.from('{"a":1}'), { 'content-type': 'application/json; charset="UTF-8"' }],
  ['non-ASCII text', Buffer.from('{"a":"日本語 🙂"}'), { 'content-type': json }],
  ['leading whitespace', Buffer.from(' \n{"a":1}'), { 'content-type': json }],
  [
    'a byte-order mark',
    Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"a":1}')]),
    { 'content-type': json },
  ],
  [
    'invalid UTF-8',
    Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]),
    { 'content-type': json },
  ],
  ['malformed JSON', Buffer.from('{"a":'), { 'content-type': json }],
  ['trailing garbage', Buffer.from('{"a":1} x'), { 'content-type': json }],
  ['a bare string (strict mode)', Buffer.from('"text"'), { 'content-type': json }],
  ['a bare number (strict mode)', Buffer.from('12'), { 'content-type': json }],
  ['too large', Buffer.from(`{"a":"${'x'.repeat(LIMIT)}"}`), { 'content-type': json }],
  ['text/plain', Buffer.from('{"a":1}'), { 'content-type': 'text/plain' }],
  ['no content type', Buffer.from('{"a":1}'), {}],
  ['application/vnd+json suffix', Buffer.from('{"a":1}'), { 'content-type': 'application/merge-patch+json' }],
  ['charset latin1', Buffer.from('{"a":1}'), { 'content-type': 'application/json; charset=latin1' }],
  ['charset utf-16', Buffer.from('{"a":1}', 'utf16le'), { 'content-type': 'application/json; charset=utf-16' }],
  ['gzip', gzipSync(Buffer.from('{"a":[1,2]}')), { 'content-type': json, 'content-encoding': 'gzip' }],
  ['unknown encoding', Buffer.from('{"a":1}'), { 'content-type': json, 'content-encoding': 'x-magic' }],
];

describe('jsonBody reads bodies as express.json does', () => {
  it.each(cases)('%s', async (_name, body, headers) => {
    const h = withLength(body, headers);
    const [got, want] = await Promise.all([send(fast, body, h), send(reference, body, h)]);
    expect(got).toEqual(want);
  });

  it('chunked bodies', async () => {
    const body = Buffer.from('{"a":[1,2,3]}');
    const h = { 'content-type': json, 'transfer-encoding': 'chunked' };
    const [got, want] = await Promise.all([send(fast, body, h), send(reference, body, h)]);
    expect(got).toEqual(want);
    expect(JSON.parse(got.text)).toEqual({ body: { a: [1, 2, 3] } });
  });

  it('parses the common request on its short path, and refuses what express.json refuses', async () => {
    const ok = await send(
      fast,
      Buffer.from('{"x":[1]}'),
      withLength(Buffer.from('{"x":[1]}'), { 'content-type': json }),
    );
    expect(ok).toEqual({ status: 200, text: '{"body":{"x":[1]}}' });
    const bad = await send(fast, Buffer.from('{"x":'), withLength(Buffer.from('{"x":'), { 'content-type': json }));
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.text).error.type).toBe('entity.parse.failed');
  });
});
