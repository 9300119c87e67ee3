// quantizeModel (the public Node entry) and `duet quantize` end to end (the built CLI): the GGUF it
// writes loads back in Duet with the same weights and tokenizer (q8_0: the same greedy tokens and
// nearly the same perplexity), is never written over unless asked, and — where the optional
// node-llama-cpp is installed — llama.cpp loads it and agrees with Duet on greedy tokens.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { importNodeLlamaCpp, openLlamaCpp } from '../src/bench/llama-cpp.ts';
import { writeCheckpoint } from './helpers/checkpoint.ts';
import { DuetError, loadModel, peersReportText, quantizeModel, runPeersBenchmark } from '../src/node.ts';
import { parseModelConfig } from '../src/model/config.ts';
import { matrixF32 } from '../src/model/weights.ts';

const run = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;
const MODEL = join(ROOT, 'fixtures/tiny-random');
const PASSKEY = join(ROOT, 'fixtures/duet-passkey');
async function duet(...args: string[]) {
  try {
    const { stdout, stderr } = await run(process.execPath, [join(ROOT, 'bin/duet.mjs'), ...args], { cwd: ROOT, timeout: 120_000 });
    return { stdout, stderr, code: 0 };
  } catch (e) {
    const err = e as { stdout: string; stderr: string; code: number };
    return { stdout: err.stdout, stderr: err.stderr, code: err.code };
  }
}
const dir = mkdtempSync(join(tmpdir(), 'duet-quantize-'));
const OUT = join(dir, 'tiny-f32.gguf');

test('quantizeModel (public API): the bundled model at q8_0 loads with loadModel and keeps its greedy tokens and perplexity', async () => {
  const out = join(dir, 'passkey-q8_0.gguf');
  const steps = new Set<string>();
  const r = await quantizeModel({ model: PASSKEY, type: 'q8_0', out, onProgress: (step, done, total) => { assert.ok(done <= total); steps.add(step); } });
  assert.equal([...steps].sort(), ['encode', 'weights', 'write']);
  assert.is(r.bytes, statSync(out).size);
  assert.ok(r.tokenizer);
  // ffn_down's rows are intermediate_size 176 long, not a multiple of q8_0's 32: those fall back to f16.
  assert.equal(r.fallbacks, [{ from: 'q8_0', to: 'f16', cols: 176, tensors: ['blk.0.ffn_down.weight', 'blk.1.ffn_down.weight', 'blk.2.ffn_down.weight'] }]);
  const opts = { device: 'cpu', threads: 1 } as const;
  const [hf, gguf] = await Promise.all([loadModel(PASSKEY, opts), loadModel(out, opts)]);
  try {
    const prompt = 'the grass is green. the pass key is 48213. remember it. the sky is blue. what is the pass key? the pass key is';
    const a = await hf.generate(prompt, { maxTokens: 12 }).result();
    const b = await gguf.generate(prompt, { maxTokens: 12 }).result();
    assert.equal(b.tokens, a.tokens);
    assert.is(b.text, a.text);
    // q8_0 rounds each weight to 1/254 of its block's largest: the mean NLL moves by far less than 1%.
    const text = 'the grass is green. the sky is blue. the sun is yellow. here we go. there and back again.';
    const [pa, pb] = await Promise.all([hf.perplexity(text), gguf.perplexity(text)]);
    assert.is(pb.tokens, pa.tokens);
    assert.ok(Math.abs(pb.meanNll - pa.meanNll) <= 0.01 * pa.meanNll, `mean NLL ${pb.meanNll} vs ${pa.meanNll}`);
  } finally { await hf.dispose(); await gguf.dispose(); }
});

test('quantizeModel refuses an existing out unless force, before reading the model; errors name the option', async () => {
  const out = join(dir, 'passkey-q8_0.gguf');
  const before = statSync(out).mtimeMs;
  const err = await quantizeModel({ model: PASSKEY, type: 'q8_0', out }).catch((e) => e);
  assert.instance(err, DuetError);
  assert.is(err.field, 'out');
  assert.match(err.message, /passkey-q8_0.gguf exists; pass force: true to replace it/);
  assert.is(statSync(out).mtimeMs, before);
  const forced = await quantizeModel({ model: PASSKEY, type: 'f16', out, force: true });
  assert.is(forced.type, 'f16');
  assert.ok(statSync(out).mtimeMs >= before);
  for (const [opts, field, message] of [
    [{ model: PASSKEY, type: 'q3_k', out: join(dir, 'z.gguf') }, 'type', /must be one of f32, f16, q8_0, q4_0, q4_k \(got "q3_k"\)/],
    [{ model: PASSKEY, type: 'f32', out: join(dir, 'z.bin') }, 'out', /must end in .gguf/],
    [{ model: out, type: 'f32', out: join(dir, 'z.gguf') }, 'model', /give a Hugging Face model directory/],
  ] as const) {
    const e = await quantizeModel(opts as never).catch((x) => x);
    assert.instance(e, DuetError);
    assert.is(e.field, field);
    assert.match(e.message, message);
  }
  assert.not.ok(readdirSync(dir).includes('z.gguf'));
});

test('quantize --type f32: the GGUF loads back with the same weights, tokenizer and config', async () => {
  const r = await duet('quantize', '--model', MODEL, '--type', 'f32', '--out', OUT);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /wrote .*tiny-f32.gguf \(f32/);
  const [hf, g] = await Promise.all([loadCheckpoint(nodeModelFiles(MODEL)), loadCheckpoint(nodeModelFiles(OUT))]);
  const f = matrixF32;
  assert.ok(f(g.weights.layers[3].wk).every((v, i) => v === f(hf.weights.layers[3].wk)[i]), 'k_proj of the last layer (unpermuted)');
  assert.ok(f(g.weights.lmHead).every((v, i) => v === f(hf.weights.lmHead)[i]));
  assert.equal(g.tokenizer!.encode('hello the world, again'), hf.tokenizer!.encode('hello the world, again'));
  assert.is(g.config.numKvHeads, hf.config.numKvHeads);
  assert.equal(readdirSync(dir).filter((f) => f.startsWith('tiny')), ['tiny-f32.gguf'], 'no temporary file left behind');
  assert.not.ok(readdirSync(dir).some((f) => f.includes('.tmp-')));
});

test('quantize refuses to overwrite without --force, and names bad options', async () => {
  const before = statSync(OUT).mtimeMs;
  const again = await duet('quantize', '--model', MODEL, '--type', 'f32', '--out', OUT);
  assert.is(again.code, 1);
  assert.match(again.stderr, /tiny-f32.gguf exists; pass --force to replace it/);
  assert.is(statSync(OUT).mtimeMs, before);
  const forced = await duet('quantize', '--model', MODEL, '--type', 'f32', '--out', OUT, '--force');
  assert.is(forced.code, 0, forced.stderr);
  assert.match((await duet('quantize', '--model', MODEL, '--type', 'q3_k', '--out', join(dir, 'x.gguf'))).stderr, /--type must be one of f32, f16, q8_0, q4_0, q4_k \(got "q3_k"\)/);
  assert.match((await duet('quantize', '--model', MODEL, '--type', 'f32', '--out', join(dir, 'x.bin'))).stderr, /the file name must end in .gguf/);
  const notModel = join(dir, 'empty');
  writeFileSync(join(dir, 'not-a-dir.gguf'), 'GGUF');
  assert.match((await duet('quantize', '--model', join(dir, 'not-a-dir.gguf'), '--type', 'f32', '--out', join(dir, 'y.gguf'))).stderr, /give a Hugging Face model directory/);
  assert.match((await duet('quantize', '--model', notModel, '--type', 'f32', '--out', join(dir, 'y.gguf'))).stderr, /no config.json/);
});

test('generate --model FILE.gguf gives the same greedy tokens as the model directory', async () => {
  const args = ['--prompt', 'hello the world', '--max-tokens', '8', '--device', 'cpu', '--json'];
  const a = JSON.parse((await duet('generate', '--model', MODEL, ...args)).stdout);
  const b = JSON.parse((await duet('generate', '--model', OUT, ...args)).stdout);
  assert.equal(b.tokens, a.tokens);
  assert.is(b.text, a.text);
});

test('llama.cpp (node-llama-cpp) loads the quantize output and agrees on 8 greedy tokens', async () => {
  if (!(await importNodeLlamaCpp())) { console.warn('[skip] node-llama-cpp is not installed: llama.cpp agreement not checked'); return; }
  const ids = [0, 5, 9, 12, 40, 7, 100, 3];
  const duetOut = JSON.parse((await duet('generate', '--model', OUT, '--prompt-ids', ids.join(','), '--max-tokens', '8', '--device', 'cpu', '--json')).stdout);
  const llama = await openLlamaCpp(OUT, { threads: 2, contextSize: 64 });
  try {
    assert.equal(await llama.greedy(ids, 8), duetOut.tokens);
  } finally { await llama.dispose(); }
});

test('llama.cpp agrees with Duet on greedy tokens at q8_0 and q4_k (rows of 256: real Q4_K blocks, not the q4_0 fallback)', async () => {
  if (!(await importNodeLlamaCpp())) { console.warn('[skip] node-llama-cpp is not installed: llama.cpp agreement not checked'); return; }
  const model = join(dir, 'wide');
  await writeCheckpoint(model, { hidden: 256, intermediate: 512, heads: 4, kvHeads: 2, layers: 2, vocab: 301, tokenizer: true, seed: 5 });
  const ids = [0, 17, 99, 4, 250, 31];
  for (const type of ['q8_0', 'q4_k']) {
    const file = join(dir, `wide-${type}.gguf`);
    const q = await duet('quantize', '--model', model, '--type', type, '--out', file);
    assert.is(q.code, 0, q.stderr);
    assert.not.match(q.stderr, /attn_q/, 'q/k/v/o rows of 256 fill Q4_K blocks');
    const duetOut = JSON.parse((await duet('generate', '--model', file, '--prompt-ids', ids.join(','), '--max-tokens', '8', '--device', 'cpu', '--json')).stdout);
    const llama = await openLlamaCpp(file, { threads: 2, contextSize: 64 });
    try {
      assert.equal(await llama.greedy(ids, 8), duetOut.tokens, type);
    } finally { await llama.dispose(); }
  }
});

test('runPeersBenchmark (public API, tiny config): rows per format, engine, heads and context; llama.cpp agrees on every greedy token at f32', async () => {
  if (!(await importNodeLlamaCpp())) { console.warn('[skip] node-llama-cpp is not installed: the peers suite not run'); return; }
  const config = parseModelConfig({ model_type: 'qwen2', hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 300, max_position_embeddings: 512, tie_word_embeddings: true });
  const out = join(dir, 'peers');
  const r = await runPeersBenchmark({
    out, shape: config, window: { sink: 4, recent: 16 }, formats: ['f32', 'q4_0'],
    contexts: [48, 96], sparsities: [0.5], threads: 1, prefillChunk: 32, prefillMax: 64, decodeTokens: 2, warmupTokens: 1, seed: 1, agreeTokens: 12,
  });
  const { rows, agreement, files } = r;
  assert.equal(rows.map((r) => `${r.format} ${r.engine} ${r.heads} ${r.context}`).sort(), [
    'f32 duet duo@0.5 48', 'f32 duet duo@0.5 96', 'f32 duet full 48', 'f32 duet full 96', 'f32 llama.cpp full 48', 'f32 llama.cpp full 96',
    'q4_0 duet duo@0.5 48', 'q4_0 duet duo@0.5 96', 'q4_0 duet full 48', 'q4_0 duet full 96', 'q4_0 llama.cpp full 48', 'q4_0 llama.cpp full 96'].sort());
  assert.ok(rows.every((r) => !r.error && r.decode_ms_per_token! > 0 && r.prefill_tok_s! > 0), JSON.stringify(rows.filter((r) => r.error)));
  assert.ok(rows.some((r) => r.engine === 'duet' && r.context === 96 && r.prefill_method === 'estimated'), 'contexts past prefillMax are estimated');
  // Both engines time each of decodeTokens tokens after the warm-up, and report their median.
  assert.ok(rows.every((r) => r.decode_ms_samples?.length === 2 && r.decode_ms_per_token === (r.decode_ms_samples[0] + r.decode_ms_samples[1]) / 2), JSON.stringify(rows.map((r) => r.decode_ms_samples)));
  assert.is(agreement!.leading_agree, 12, JSON.stringify(agreement));
  assert.equal(files.map((f) => f.split('/').pop()), ['peers.json', 'peers-decode.svg']);
  assert.match(peersReportText(r), /greedy agreement at f32: 12 of 12/);
  assert.match(r.notes[0], /random weights with the given config/);
  const bad = await runPeersBenchmark({ out, formats: ['q3_k' as never] }).catch((e) => e);
  assert.instance(bad, DuetError);
  assert.is(bad.field, 'formats');
});

test.run();
