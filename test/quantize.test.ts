// `duet quantize` end to end (the built CLI): the GGUF it writes loads back in Duet with the same
// weights and tokenizer, is never written over without --force, and — where the optional
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
import { renderPeers, runPeers } from '../src/cli/bench-peers.ts';
import { parseModelConfig } from '../src/model/config.ts';
import { randomAlphas, randomWeights } from '../src/bench/random-weights.ts';
import { matrixF32 } from '../src/model/weights.ts';

const run = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;
const MODEL = join(ROOT, 'fixtures/tiny-random');
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
  assert.equal(readdirSync(dir), ['tiny-f32.gguf'], 'no temporary file left behind');
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

test('bench --suite peers (in process, tiny shape): rows per format, engine, heads and context; llama.cpp agrees on every greedy token at f32', async () => {
  if (!(await importNodeLlamaCpp())) { console.warn('[skip] node-llama-cpp is not installed: the peers suite not run'); return; }
  const config = parseModelConfig({ model_type: 'qwen2', hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 300, max_position_embeddings: 512, tie_word_embeddings: true });
  const out = join(dir, 'peers');
  const { rows, agreement, files } = await runPeers({
    config, weights: randomWeights(config, 3), alphas: randomAlphas(2, 2, 3), window: { sink: 4, recent: 16 }, formats: ['f32', 'q4_0'],
    contexts: [48, 96], sparsities: [0.5], threads: 1, chunk: 32, prefillMax: 64, decodeTokens: 2, warmupTokens: 1, seed: 1, agreeTokens: 12,
    outDir: out, machine: { cpu: 'test' } as never, command: 'test', notes: [], say: () => {},
  });
  assert.equal(rows.map((r) => `${r.format} ${r.engine} ${r.heads} ${r.context}`).sort(), [
    'f32 duet duo@0.5 48', 'f32 duet duo@0.5 96', 'f32 duet full 48', 'f32 duet full 96', 'f32 llama.cpp full 48', 'f32 llama.cpp full 96',
    'q4_0 duet duo@0.5 48', 'q4_0 duet duo@0.5 96', 'q4_0 duet full 48', 'q4_0 duet full 96', 'q4_0 llama.cpp full 48', 'q4_0 llama.cpp full 96'].sort());
  assert.ok(rows.every((r) => !r.error && r.decode_ms_per_token! > 0 && r.prefill_tok_s! > 0), JSON.stringify(rows.filter((r) => r.error)));
  assert.ok(rows.some((r) => r.engine === 'duet' && r.context === 96 && r.prefill_method === 'estimated'), 'contexts past --prefill-max are estimated');
  assert.is(agreement!.leading_agree, 12, JSON.stringify(agreement));
  assert.equal(files.map((f) => f.split('/').pop()), ['peers.json', 'peers-decode.svg']);
  assert.match(renderPeers(rows, agreement), /greedy agreement at f32: 12 of 12/);
});

test.run();
