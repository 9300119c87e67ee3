// Head identification: task-format samples; razor and zigzag; every method's output loads as a
// pattern; bad options get clear errors. (Each scorer on a tiny model: test/head-scorers.test.ts.)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
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
