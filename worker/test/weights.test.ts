// Which directory the worker loads (weights.ts): the node cache entry only when its completion marker is there, names
// the entry's key and every listed file has its recorded size; the model source otherwise, with the reason.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { chooseWeights } from '../src/weights.js';

const KEY = '0123456789abcdef';
let root: string;
let source: string;
let entry: string;

function stage(files: Record<string, string>, marker?: unknown): void {
  fs.rmSync(entry, { recursive: true, force: true });
  fs.mkdirSync(entry, { recursive: true });
  for (const [f, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(entry, f)), { recursive: true });
    fs.writeFileSync(path.join(entry, f), text);
  }
  if (marker !== undefined) {
    fs.writeFileSync(
      path.join(entry, '.modelserve-complete.json'),
      typeof marker === 'string' ? marker : JSON.stringify(marker),
    );
  }
}

const markerOf = (files: Record<string, string>, key = KEY) => ({
  key,
  source: 'hf://openai/tiny',
  bytes: Object.values(files).reduce((s, t) => s + Buffer.byteLength(t), 0),
  files: Object.entries(files).map(([p, t]) => ({ path: p, bytes: Buffer.byteLength(t), sha256: 'c'.repeat(64) })),
  completedAt: '2026-12-06T00:00:00.000Z',
});

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'weights-choice-'));
  source = path.join(root, 'models');
  entry = path.join(root, 'cache', `openai-tiny_aaaaaaaaaaaa_${KEY}`);
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

const FILES = { 'config.json': '{"a":1}', 'model.safetensors': 'x'.repeat(1000), 'sub/tok.json': '{}' };

describe('chooseWeights', () => {
  it('loads the model source when no cache is configured', () => {
    expect(chooseWeights({ modelPath: source })).toEqual({
      path: source,
      from: 'source',
      reason: 'no node cache configured',
    });
  });

  it('loads the cache entry when its marker is complete', () => {
    stage(FILES, markerOf(FILES));
    const c = chooseWeights({ modelPath: source, cacheDir: entry, marker: '.modelserve-complete.json' });
    expect(c).toEqual(expect.objectContaining({ path: entry, from: 'cache', bytes: 1009, files: 3 }));
    expect(c.reason).toContain(KEY);
  });

  it.each([
    ['no marker (entry not staged here)', () => stage(FILES), /no \.modelserve-complete\.json in .* not staged/],
    ['no entry directory at all', () => undefined, /no \.modelserve-complete\.json/],
    ['a marker that is not JSON', () => stage(FILES, '{"key": '), /is not JSON/],
    ['a marker of another key', () => stage(FILES, markerOf(FILES, 'ffffffffffffffff')), /is for key ffffffffffffffff/],
    [
      'a listed file missing',
      () => stage({ 'config.json': '{"a":1}' }, markerOf(FILES)),
      /model\.safetensors listed in .* is missing/,
    ],
    [
      'a file of another size',
      () => stage({ ...FILES, 'model.safetensors': 'x'.repeat(999) }, markerOf(FILES)),
      /model\.safetensors in .* has 999 bytes, the marker says 1000/,
    ],
    ['a marker with an unsafe path', () => stage(FILES, markerOf({ '../x': 'y' })), /unsafe path/],
  ])('falls back to the source with %s', (_name, setup, reason) => {
    setup();
    const c = chooseWeights({ modelPath: source, cacheDir: entry });
    expect(c.from).toBe('source');
    expect(c.path).toBe(source);
    expect(c.reason).toMatch(reason);
  });
});
