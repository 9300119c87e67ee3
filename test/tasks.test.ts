// Task generators (deterministic per seed, needle at the asked depth, length honoured), scoring on
// hand-made predictions, and `duet eval` end to end on the tiny fixture (well-formed rows and plots).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSample, TASK_KINDS, type TaskKind } from '../src/tasks/tasks.ts';
import { exactMatch, fractionFound, score } from '../src/eval/score.ts';
import { ensureFreshDist } from './helpers/fresh-dist.ts';

ensureFreshDist();

const chars = (s: string) => s.length;

test('samples are deterministic per seed and differ across seeds', () => {
  for (const kind of TASK_KINDS) {
    const a = generateSample({ kind, length: 600, depth: 0.3, seed: 5, style: 'grammar', countTokens: chars });
    const b = generateSample({ kind, length: 600, depth: 0.3, seed: 5, style: 'grammar', countTokens: chars });
    const c = generateSample({ kind, length: 600, depth: 0.3, seed: 6, style: 'grammar', countTokens: chars });
    assert.equal(a, b, `${kind}: same seed, same sample`);
    assert.is.not(a.prompt, c.prompt, `${kind}: another seed, another sample`);
  }
});

test('the target needle sits at the asked depth and the prompt fits the length', () => {
  for (const kind of TASK_KINDS) {
    for (const length of [600, 2048]) {
      for (const depth of [0, 0.1, 0.5, 0.9, 1]) {
        const s = generateSample({ kind, length, depth, seed: 11, style: 'grammar', countTokens: chars });
        assert.ok(s.prompt.length <= length, `${kind} ${length}: ${s.prompt.length} chars`);
        assert.ok(s.prompt.length >= length - 80, `${kind} ${length}: haystack filled (${s.prompt.length} chars)`);
        // One filler sentence is at most ~60 characters: the depth error is below one sentence.
        assert.ok(Math.abs(s.actualDepth - depth) <= 60 / (length - 150), `${kind} ${length} depth ${depth}: landed at ${s.actualDepth}`);
        const needle = s.prompt.slice(s.needle[0], s.needle[1]);
        assert.ok(s.answers.some((a) => needle.includes(a)) || kind === 'vt', `${kind}: the target needle holds an answer: "${needle}"`);
        if (kind === 'vt') assert.ok(needle.includes(s.answers[0]), `vt: the chain starts at the target needle: "${needle}"`);
        for (const a of s.answers) assert.ok(s.prompt.includes(a), `${kind}: answer ${a} is in the prompt`);
      }
    }
  }
});

test('the bundled vocabulary style stays lowercase; english style capitalises', () => {
  const g = generateSample({ kind: 'passkey', length: 400, depth: 0.5, seed: 1, style: 'grammar', countTokens: chars });
  assert.ok(/^[a-z0-9 .,?:=]+$/.test(g.prompt), g.prompt);
  assert.ok(g.prompt.endsWith('what is the pass key? the pass key is'));
  const e = generateSample({ kind: 'passkey', length: 400, depth: 0.5, seed: 1, style: 'english', countTokens: chars });
  assert.ok(/^[A-Z]/.test(e.prompt) && e.prompt.includes('The pass key is'), e.prompt.slice(0, 80));
});

test('a length too short for the needle is an error', () => {
  assert.throws(() => generateSample({ kind: 'niah-multivalue', length: 50, depth: 0.5, seed: 1, style: 'grammar', countTokens: chars }), /needs more than 50 tokens/);
  assert.throws(() => generateSample({ kind: 'passkey', length: 500, depth: 1.5, seed: 1, style: 'grammar', countTokens: chars }), /depth must be in \[0, 1\]/);
});

test('scoring: exact match on the first word, fraction found for multi-answer tasks', () => {
  assert.is(exactMatch(' 48213. remember it', '48213'), 1);
  assert.is(exactMatch(' 48213', '48213'), 1);
  assert.is(exactMatch(' 4821', '48213'), 0);
  assert.is(exactMatch(' the pass key is 48213', '48213'), 0);
  assert.is(fractionFound(' 111111, 222222 and 999999.', ['111111', '222222', '333333', '444444']), 0.5);
  assert.is(fractionFound(' abcd, efgh, ijkl.', ['abcd', 'efgh', 'ijkl']), 1);
  assert.is(fractionFound(' abcde', ['abcd']), 0, 'whole words only');
  const kinds: Array<[TaskKind, number]> = [['passkey', 1], ['niah-single', 1], ['niah-multikey', 1], ['niah-multivalue', 0.25], ['vt', 0.25]];
  for (const [kind, expected] of kinds) assert.is(score(kind, ' 123456 x', ['123456', 'a', 'b', 'c']), expected, kind);
});

test('duet eval on the tiny fixture: JSON rows for every cell and an SVG heatmap per configuration', () => {
  const out = mkdtempSync(join(tmpdir(), 'duet-eval-'));
  const stdout = execFileSync('node', ['bin/duet.mjs', 'eval', '--model', 'fixtures/tiny-random', '--device', 'cpu',
    '--pattern', 'fixtures/tiny-random-pattern', '--streaming-only', '--tasks', 'passkey,vt', '--lengths', '128,192',
    '--depths', '0,1', '--samples', '2', '--json', '--out', out], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const result = JSON.parse(stdout);
  assert.is(result.results.length, 3 * 2 * 2 * 2, 'configs × tasks × lengths × depths');
  const configs = new Set(result.results.map((r: { config: string }) => r.config));
  assert.equal([...configs], ['full', 'pattern@α≥0.5', 'streaming-only']);
  for (const r of result.results) {
    assert.ok(r.accuracy >= 0 && r.accuracy <= 1, `accuracy ${r.accuracy}`);
    assert.is(r.samples, 2);
  }
  assert.is(result.plots.length, 6);
  for (const p of result.plots) {
    const svg = readFileSync(p, 'utf8');
    assert.ok(svg.startsWith('<svg') && svg.includes('needle depth') && svg.trim().endsWith('</svg>'), p);
  }
  assert.equal(JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')).results, result.results);
  // KV memory per configuration at the longest length (192): 16 KV heads of dim 8, K and V in f32;
  // a streaming head keeps sink 4 + recent 16 tokens.
  const perToken = 2 * 8 * 4;
  const byName = Object.fromEntries(result.configs.map((c: { name: string }) => [c.name, c]));
  assert.equal([byName.full.streaming_heads, byName.full.kv_bytes, byName.full.kv_context], [0, 16 * 192 * perToken, 192]);
  assert.equal([byName['streaming-only'].streaming_heads, byName['streaming-only'].kv_bytes], [16, 16 * 20 * perToken]);
  const p = byName['pattern@α≥0.5'];
  assert.is(p.kv_bytes, (16 - p.streaming_heads) * 192 * perToken + p.streaming_heads * 20 * perToken);
});

test('duet eval: bad flags get errors naming the flag', () => {
  const fails = (args: string[], pattern: RegExp) => {
    try {
      execFileSync('node', ['bin/duet.mjs', 'eval', '--model', 'fixtures/tiny-random', '--device', 'cpu', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      assert.unreachable('should fail');
    } catch (e) {
      assert.match(String((e as { stderr?: string }).stderr), pattern);
    }
  };
  fails(['--tasks', 'passkey,needle'], /--tasks: unknown task "needle"/);
  fails(['--depths', '0,1.5'], /--depths: "1.5" is not a depth in \[0, 1\]/);
  fails(['--lengths', '8'], /--lengths: "8" is not an integer ≥ 16/);
  fails(['--sparsity', '0.5'], /--sparsity needs --pattern/);
  fails(['--streaming-only'], /--streaming-only needs --sink and --recent/);
});

test.run();
