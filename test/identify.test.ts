// Head identification: the DuoAttention gate optimisation on a checkpoint built by hand with one
// purely local head and one head that copies from far back; razor and zigzag; every method's output
// loads as a pattern; bad options get clear errors.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Arena } from '../src/train/arena.ts';
import { cpuTrainModel, type TrainModel } from '../src/train/model.ts';
import { optimiseGates } from '../src/identify/duo.ts';
import { taskSample } from '../src/identify/data.ts';
import { Random } from '../src/tasks/random.ts';
import { zigzag, razorAlphas } from '../src/identify/scores.ts';
import { loadPattern } from '../src/attention/pattern.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { TextTokenizer } from '../src/model/tokenizer.ts';
import { tokenizerFiles } from '../src/train/vocab.ts';
import { ensureFreshDist } from './helpers/fresh-dist.ts';

ensureFreshDist();

const run = promisify(execFile);
const MARKER = 3;

/**
 * hidden 8, 1 layer, 2 heads = 2 KV heads of dim 4, no MLP. Every embedding has the same norm and
 * a constant coordinate 7; the marker token also has coordinate 6. Head 0: q = k = c·(e0 + e1) for every
 * token, so RoPE makes the score peak at distance 0 (a purely local head). Head 1: q = c·e1
 * constant, k = c·e1 only at the marker (the slow rotary pair), so it attends to the marker
 * wherever it is (a copy-from-far-back head).
 */
async function handBuiltModel(): Promise<TrainModel> {
  const ar = await Arena.create(64 << 20);
  const m = cpuTrainModel(ar, { vocab: 12, hidden: 8, layers: 1, heads: 2, kvHeads: 2, headDim: 4, intermediate: 4, eps: 1e-5, ropeTheta: 10000, maxRows: 64 }, { gated: true });
  const p = m.p, L = p.layers[0], c = 24;
  p.embed.fill(0);
  for (let t = 0; t < 12; t++) {
    // Equal norms, so RoPE alone decides where head 0 looks.
    const raw = Array.from({ length: 6 }, (_, i) => Math.sin(t * 1.7 + i * 2.3));
    const norm = Math.hypot(...raw);
    raw.forEach((x, i) => { p.embed[t * 8 + i] = (x / norm) * Math.sqrt(3); });
    p.embed[t * 8 + 7] = 1;
  }
  p.embed[MARKER * 8 + 6] = 3;
  p.finalNorm.fill(1); L.inputNorm.fill(1); L.postNorm.fill(1);
  for (const w of [L.wq, L.wk, L.wv, L.wo, L.wGate, L.wUp, L.wDown]) w.fill(0);
  const set = (w: Float32Array, row: number, col: number, value: number) => { w[row * 8 + col] = value; };
  set(L.wq, 0, 7, c); set(L.wq, 1, 7, c); set(L.wk, 0, 7, c); set(L.wk, 1, 7, c);   // head 0: local
  set(L.wq, 5, 7, c); set(L.wk, 5, 6, c);                                              // head 1: finds the marker
  for (let i = 0; i < 4; i++) { set(L.wv, i, i, 1); set(L.wv, 4 + i, i, 1); }
  for (let i = 0; i < 8; i++) L.wo[i * 8 + i] = 1;
  return m;
}

test('gate optimisation: the local head streams (α → 0), the far-copy head stays retrieval (α > 0.5)', async () => {
  const m = await handBuiltModel();
  const tok = tokenizerFiles();
  const tokenizer = new TextTokenizer(tok.tokenizer, tok.tokenizerConfig as Record<string, unknown>);
  const r = await optimiseGates(m, tokenizer, {
    steps: 120, lr: 0.02, reg: 0.05, lengths: [48, 60], window: { sink: 2, recent: 8 }, seed: 1, style: 'grammar',
    sample: (rng, length) => {
      const ids = Int32Array.from({ length }, (_, i) => (i === 0 ? 0 : 4 + rng.int(0, 8)));
      ids[rng.int(5, 20)] = MARKER;
      return { ids, answerRows: [length - 4, length - 3, length - 2, length - 1], description: 'marker far back' };
    },
  });
  const [local, copy] = r.alphas[0];
  // Binarised at the default threshold 0.5: the local head streams, the far-copy head keeps its cache.
  assert.ok(local < 0.1, `local head α = ${local}`);
  assert.ok(copy > 0.5, `far-copy head α = ${copy}`);
  assert.ok(r.losses.every(Number.isFinite));
});

test('task-format identification samples: the answer rows predict the answer written after the question', () => {
  const tok = tokenizerFiles();
  const tokenizer = new TextTokenizer(tok.tokenizer, tok.tokenizerConfig as Record<string, unknown>);
  for (const [seed, kinds] of [[1, ['passkey']], [2, ['niah-single']], [3, ['vt', 'passkey']]] as const) {
    const s = taskSample(tokenizer, new Random(seed), 300, kinds, 'grammar');
    const text = tokenizer.decode(Array.from(s.ids));
    const answer = tokenizer.decode(s.answerRows.map((row) => s.ids[row + 1]));
    assert.match(answer, /^ [0-9a-z, ]+\.$/, `answer tokens of ${s.description}: "${answer}"`);
    assert.ok(text.endsWith(answer), text.slice(-80));
    assert.match(text.slice(0, -answer.length), /(the pass key is|the magic number for [a-z]+ is|they are)$/);
    // The answer is in the haystack (the needle), and the prompt is the asked length.
    const firstValue = answer.slice(1, -1).split(', ')[0];
    assert.ok(text.slice(0, -answer.length).includes(firstValue), `needle ${firstValue} in the prompt`);
    assert.ok(s.ids.length - s.answerRows.length <= 300 && s.ids.length - s.answerRows.length > 250, `${s.ids.length - s.answerRows.length} prompt tokens`);
  }
});

test('zigzag makes whole layers streaming to meet the budget; razor marks its top-ratio union', () => {
  const z = zigzag([[0.9, 0.8], [0.1, 0.3], [0.5, 0.7], [0.2, 0.1]], 0.5);
  assert.equal(z.streamingLayers, [1, 3]);
  assert.equal(z.alphas, [[1, 1], [0, 0], [1, 1], [0, 0]]);
  const a = razorAlphas({ echo: [[0.9, 0], [0, 0]], induction: [[0, 0], [0.1, 0.5]] }, 0.25, 0.25);
  assert.is(a.selected, 2);
  assert.ok(a.alphas[0][0] >= 0.5 && a.alphas[1][1] >= 0.5 && a.alphas[0][1] < 0.5 && a.alphas[1][0] < 0.5, JSON.stringify(a.alphas));
});

const duet = (...args: string[]) => run('node', ['bin/duet.mjs', ...args], { encoding: 'utf8' });

test('duet identify writes patterns the loader accepts (duo, razor, zigzag)', async () => {
  for (const [method, extra] of [['duo', ['--steps', '3']], ['razor', []], ['duo', ['--steps', '2', '--zigzag', '--sparsity', '0.5']], ['duo', ['--steps', '2', '--data', 'passkey,niah-single']]] as const) {
    const out = mkdtempSync(join(tmpdir(), 'duet-id-'));
    await duet('identify', '--model', 'fixtures/tiny-random', '--method', method, '--out', out, '--lengths', '480,520', '--sink', '4', '--recent', '16', ...extra);
    const p = await loadPattern(nodeModelFiles(out), 4, 4);
    assert.is(p.sink, 4);
    assert.is(p.recent, 16);
    const report = JSON.parse(readFileSync(join(out, 'identify.json'), 'utf8'));
    assert.ok(report.method.startsWith(method) && report.seconds >= 0 && report.data, JSON.stringify(report).slice(0, 200));
    assert.ok(readFileSync(join(out, 'heads.svg'), 'utf8').startsWith('<svg'));
    if (method === 'duo' && extra[1] === '3') assert.is(report.loss.length, 3);
    if ((extra as readonly string[]).includes('--data')) {
      assert.is(report.options.data, 'passkey,niah-single');
      assert.match(report.data, /^evaluation tasks: (passkey|niah-single), \d+ tokens/);
    }
    if ((extra as readonly string[]).includes('--zigzag')) for (const row of p.alphas) assert.ok(row.every((a) => a === row[0]), `zigzag layer ${row}`);
  }
});

test('bad identify options and impossible runs get clear errors', async () => {
  const out = mkdtempSync(join(tmpdir(), 'duet-id-'));
  const fails = async (args: string[], pattern: RegExp) => {
    try { await duet('identify', ...args); assert.unreachable('should fail'); } catch (e) {
      const err = e as { stderr?: string };
      assert.ok(err.stderr !== undefined, String(e));
      assert.match(err.stderr!, pattern);
    }
  };
  await fails(['--model', 'fixtures/tiny-random', '--method', 'magic', '--out', out], /--method must be one of duo, retrieval-score, razor/);
  await fails(['--model', 'fixtures/tiny-random', '--method', 'duo', '--out', out, '--sparsity', '1.5'], /--sparsity must be in \[0, 1\]/);
  await fails(['--model', 'fixtures/tiny-random', '--method', 'razor', '--out', out, '--zigzag'], /--zigzag needs --sparsity/);
  await fails(['--model', 'fixtures/tiny-random', '--method', 'duo', '--out', out, '--data', 'passkey,riddles'], /--data must be "words" or task kinds from passkey, niah-single, .* \(got "riddles"\)/);
  await fails(['--model', 'fixtures/tiny-random', '--method', 'retrieval-score', '--out', out, '--lengths', '256,300', '--samples', '1'], /answered none of 2 passkey prompts/);
});

test.run();
