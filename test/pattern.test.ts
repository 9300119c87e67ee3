import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { binarize, countStreaming, formatAlphas, parseAlphas, parsePattern } from '../src/attention/pattern.ts';
import { projectKvMemory } from '../src/attention/memory.ts';

import { publishedPatterns } from './helpers/published.ts';

const PUBLISHED = publishedPatterns();
const CONFIG = JSON.stringify({ sink_size: 128, recent_size: 256, deploy_sink_size: null, deploy_recent_size: null, threshold: 0.5 });

if (PUBLISHED) test('the six published DuoAttention patterns load unchanged, clipped to [0, 1]', () => {
  const dirs = readdirSync(PUBLISHED!).filter((d) => existsSync(join(PUBLISHED!, d, 'full_attention_heads.tsv')));
  assert.is(dirs.length, 6);
  for (const dir of dirs) {
    const tsv = readFileSync(join(PUBLISHED!, dir, 'full_attention_heads.tsv'), 'utf8');
    const cfg = readFileSync(join(PUBLISHED!, dir, 'config.json'), 'utf8');
    const kvHeads = dir.startsWith('Llama-2') ? 32 : 8;
    const p = parsePattern(tsv, cfg, 32, kvHeads, dir);
    assert.is(p.sink, 128, dir);
    assert.is(p.recent, 256, dir);
    assert.ok(p.alphas.flat().every((a) => a >= 0 && a <= 1), dir);
    // Values round-trip through the file format (3 significant digits, as published).
    const raw = tsv.trim().split('\n').map((l) => l.trim().split('\t').map(Number));
    p.alphas.forEach((row, l) => row.forEach((a, h) => assert.ok(Math.abs(a - Math.min(1, Math.max(0, raw[l][h]))) < 1e-12)));
    assert.ok(JSON.parse(cfg).sink_size === p.config.sink_size, 'other config fields kept');
  }
});

if (PUBLISHED) test('a published negative gate value is clipped to 0', () => {
  const dir = readdirSync(PUBLISHED!).find((d) => readFileSync(join(PUBLISHED!, d, 'full_attention_heads.tsv'), 'utf8').includes('e-0') &&
    readFileSync(join(PUBLISHED!, d, 'full_attention_heads.tsv'), 'utf8').split(/\s+/).some((c) => Number(c) < 0));
  assert.ok(dir, 'some published pattern has a negative α');
  const alphas = parseAlphas(readFileSync(join(PUBLISHED!, dir!, 'full_attention_heads.tsv'), 'utf8'));
  assert.ok(alphas.flat().includes(0));
});

test('deploy sizes win over training sizes when not null', () => {
  const p = parsePattern('1\t0\n', JSON.stringify({ sink_size: 128, recent_size: 256, deploy_sink_size: 4, deploy_recent_size: 32 }), 1, 2);
  assert.equal([p.sink, p.recent], [4, 32]);
});

test('binarise: threshold 0.5 without sparsity; exact streaming count with sparsity; ties deterministic', () => {
  const alphas = [[0.9, 0.2, 0.5], [0.5, 0.5, 0.1]];
  assert.equal(binarize(alphas), [[true, false, true], [true, true, false]]);
  const half = binarize(alphas, { sparsity: 0.5 });
  assert.is(countStreaming(half), 3);
  // Lowest: 0.1 (1,2), 0.2 (0,1), then the first 0.5 in (layer, head) order: (0,2).
  assert.equal(half, [[true, false, false], [true, true, false]]);
  assert.equal(binarize(alphas, { sparsity: 0.5 }), half);
  assert.is(countStreaming(binarize(alphas, { sparsity: 0 })), 0);
  assert.is(countStreaming(binarize(alphas, { sparsity: 1 })), 6);
  assert.throws(() => binarize(alphas, { sparsity: 1.5 }), /sparsity must be within \[0, 1\]/);
});

test('bad patterns get errors naming the file and line', () => {
  assert.throws(() => parsePattern('1\t1\n1\n', CONFIG, 2, 2, 'p'), /p\/full_attention_heads.tsv: line 2 has 1 gate values, the model has 2 KV heads/);
  assert.throws(() => parsePattern('1\t1\n', CONFIG, 2, 2, 'p'), /has 1 lines \(layers\), the model has 2 layers/);
  assert.throws(() => parsePattern('1\tx\n', CONFIG, 1, 2, 'p'), /line 1, column 2: "x" is not a finite number/);
  assert.throws(() => parsePattern('1\tNaN\n', CONFIG, 1, 2, 'p'), /line 1, column 2: "NaN" is not a finite number/);
  assert.throws(() => parsePattern('1\tInfinity\n', CONFIG, 1, 2, 'p'), /not a finite number/);
  assert.throws(() => parsePattern('1\t-0.7\n', CONFIG, 1, 2, 'p'), /line 1, column 2: gate value -0.7 is far outside \[0, 1\]/);
  assert.throws(() => parsePattern('1.6\t0\n', CONFIG, 1, 2, 'p'), /gate value 1.6 is far outside/);
  assert.throws(() => parsePattern('', CONFIG, 1, 2, 'p'), /empty file/);
  assert.throws(() => parsePattern('1\t1\n', null, 1, 2, 'p'), /p\/config.json: missing/);
  assert.throws(() => parsePattern('1\t1\n', '{"sink_size": 4}', 1, 2, 'p'), /p\/config.json: field "recent_size" must be a non-negative integer/);
  assert.throws(() => parsePattern('1\t1\n', '{bad', 1, 2, 'p'), /p\/config.json: invalid JSON/);
});

test('formatAlphas writes what parseAlphas reads', () => {
  const alphas = [[1, 0.859, 0], [0.5, 0.25, 0.0123]];
  assert.equal(parseAlphas(formatAlphas(alphas)), alphas);
});

test('memory projection: Llama-3-8B shape at 1M tokens, 50% streaming, f16 and int8 caches and rings', () => {
  const kinds = Array.from({ length: 32 }, (_, l) => Array.from({ length: 8 }, (_, h) => (l * 8 + h) % 2 === 0));
  const p = projectKvMemory(kinds, 128, 1 << 20, { sink: 128, recent: 256 }, 'f16');
  const perTokenPerHead = 2 * 128 * 2, ringPerToken = perTokenPerHead; // the rings in f16 too
  assert.is(p.full_bytes, 256 * (1 << 20) * perTokenPerHead); // 128 GiB
  assert.is(p.gpu_bytes, 128 * (1 << 20) * perTokenPerHead);
  assert.is(p.cpu_bytes, 128 * 384 * ringPerToken);
  assert.is(p.duo_bytes, p.gpu_bytes + p.cpu_bytes);
  // int8: 128 codes + one f32 scale per position and head, K and V.
  const q = projectKvMemory(kinds, 128, 1 << 20, { sink: 128, recent: 256 }, 'int8');
  assert.equal([q.gpu_bytes, q.cpu_bytes], [128 * (1 << 20) * 2 * 132, 128 * 384 * 2 * 132]);
  // Short contexts: the ring is never larger than the context.
  assert.is(projectKvMemory(kinds, 128, 100, { sink: 128, recent: 256 }, 'f16').cpu_bytes, 128 * 100 * ringPerToken);
  // Compensation: each streaming KV head also keeps its key and value sums (f32); full caches unchanged.
  const c = projectKvMemory(kinds, 128, 1 << 20, { sink: 128, recent: 256 }, 'f16', true);
  assert.equal([c.cpu_bytes, c.gpu_bytes, c.full_bytes], [p.cpu_bytes + 128 * 2 * 128 * 4, p.gpu_bytes, p.full_bytes]);
});

test.run();
