// Checkpoint loading: config fields and defaults, rope scaling, safetensors dtypes, sharding,
// tokenizer round trip and chat template, and an error naming the file/field for each bad input.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseModelConfig, ropeInvFreq } from '../src/model/config.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { decodeTensor } from '../src/model/safetensors.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { rewriteTensors, writeCheckpoint, writeSafetensors } from './helpers/checkpoint.ts';
import { matrixF32 } from '../src/model/weights.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'duet-model-'));
const BASE = { model_type: 'llama', hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 8, num_key_value_heads: 2, vocab_size: 100, max_position_embeddings: 512 };

async function loadError(dir: string): Promise<string> {
  return loadCheckpoint(nodeModelFiles(dir)).then(() => 'no error', (e: Error) => e.message);
}

test('config: defaults, GQA, head_dim override, qwen2 biases, eos lists', () => {
  const c = parseModelConfig(BASE);
  assert.is(c.headDim, 8);
  assert.is(c.numKvHeads, 2);
  assert.is(c.ropeTheta, 10000);
  assert.is(c.tieWordEmbeddings, false);
  assert.is(c.attentionBias, false);
  assert.is(parseModelConfig({ ...BASE, head_dim: 24 }).headDim, 24);
  assert.is(parseModelConfig({ ...BASE, num_key_value_heads: undefined }).numKvHeads, 8);
  assert.is(parseModelConfig({ ...BASE, model_type: 'qwen2', tie_word_embeddings: true }).attentionBias, true);
  assert.is(parseModelConfig({ ...BASE, attention_bias: true }).attentionBias, true);
  assert.equal(parseModelConfig({ ...BASE, eos_token_id: [5, 9] }).eosTokenIds, [5, 9]);
  assert.is(parseModelConfig({ ...BASE, model_type: undefined, architectures: ['MistralForCausalLM'] }).modelType, 'mistral');
});

test('config: every bad field is named', () => {
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ ...BASE, model_type: 'gpt2' }, /config.json: unsupported model_type "gpt2"/],
    [{ ...BASE, hidden_size: undefined }, /config.json: field "hidden_size" is missing/],
    [{ ...BASE, num_key_value_heads: 3 }, /field "num_key_value_heads" \(3\) must divide num_attention_heads \(8\)/],
    [{ ...BASE, vocab_size: 'many' }, /field "vocab_size" must be a positive integer \(got "many"\)/],
    [{ ...BASE, num_hidden_layers: 1.5 }, /field "num_hidden_layers" must be a positive integer/],
    [{ ...BASE, rope_scaling: { rope_type: 'yarn', factor: 4 } }, /field "rope_scaling" has unsupported rope_type "yarn"/],
    [{ ...BASE, rope_scaling: { rope_type: 'llama3', factor: 8 } }, /field "rope_scaling.low_freq_factor" is missing/],
    [{ ...BASE, rms_norm_eps: -1 }, /field "rms_norm_eps" must be a positive number/],
  ];
  for (const [json, re] of bad) assert.throws(() => parseModelConfig(json), re);
});

test('rope: llama3 and linear scaling match the formulas', () => {
  const theta = 500000, d = 64;
  const plain = Array.from({ length: d / 2 }, (_, i) => 1 / theta ** ((2 * i) / d));
  const lin = ropeInvFreq(parseModelConfig({ ...BASE, hidden_size: 512, rope_theta: theta, rope_scaling: { type: 'linear', factor: 4 } }));
  lin.forEach((v, i) => assert.ok(Math.abs(v - plain[i] / 4) <= 1e-6 * plain[i]));
  const l3 = ropeInvFreq(parseModelConfig({ ...BASE, hidden_size: 512, rope_theta: theta,
    rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } }));
  let sawHigh = false, sawLow = false, sawMid = false;
  l3.forEach((v, i) => {
    const wl = (2 * Math.PI) / plain[i];
    let want: number;
    if (wl < 8192 / 4) { want = plain[i]; sawHigh = true; } else if (wl > 8192) { want = plain[i] / 8; sawLow = true; } else {
      const s = (8192 / wl - 1) / 3; want = (1 - s) * plain[i] / 8 + s * plain[i]; sawMid = true;
    }
    assert.ok(Math.abs(v - want) <= 1e-6 * want, `inv_freq[${i}] ${v} vs ${want}`);
  });
  assert.ok(sawHigh && sawLow && sawMid, 'all three llama3 bands covered');
});

test('safetensors: F16 and BF16 decode exactly, incl. subnormal, max, -0, inf, NaN', () => {
  const f16 = new Uint16Array([0x3c00, 0x7bff, 0x0001, 0x8000, 0x7c00, 0xfc00, 0x7e00, 0xc000]);
  const d = decodeTensor(new Uint8Array(f16.buffer), 'F16');
  assert.equal(Array.from(d.slice(0, 6)), [1, 65504, 2 ** -24, -0, Infinity, -Infinity]);
  assert.ok(Object.is(d[3], -0) && Number.isNaN(d[6]) && d[7] === -2);
  const bf = new Uint16Array([0x3f80, 0xc040, 0x0001]);
  const b = decodeTensor(new Uint8Array(bf.buffer), 'BF16');
  assert.equal(Array.from(b.slice(0, 2)), [1, -3]);
  assert.is(b[2], new Float32Array(new Uint32Array([0x00010000]).buffer)[0]);
});

test('F32, F16, BF16 and sharded checkpoints load the same weights (within dtype rounding)', async () => {
  const spec = { hidden: 48, intermediate: 64, layers: 2, heads: 4, kvHeads: 2, vocab: 97, seed: 5 };
  const load = async (extra: object) => { const d = tmp(); await writeCheckpoint(d, { ...spec, ...extra }); return loadCheckpoint(nodeModelFiles(d)); };
  const f32 = await load({ dtype: 'F32' });
  const sharded = await load({ dtype: 'F32', shards: 3 });
  const f = matrixF32;
  assert.equal(Array.from(f(sharded.weights.layers[1].wk)), Array.from(f(f32.weights.layers[1].wk)));
  assert.equal(Array.from(f(sharded.weights.lmHead)), Array.from(f(f32.weights.lmHead)));
  for (const [dtype, rel] of [['F16', 2 ** -11], ['BF16', 2 ** -8]] as const) {
    const w = f((await load({ dtype })).weights.layers[0].wq);
    f(f32.weights.layers[0].wq).forEach((v, i) => assert.ok(Math.abs(w[i] - v) <= rel * Math.abs(v) + 1e-7, `${dtype} [${i}]`));
  }
  const tied = await load({ dtype: 'F32', tieEmbeddings: true, modelType: 'qwen2' });
  assert.ok(tied.weights.lmHead === tied.weights.embed);
  assert.ok(tied.weights.layers[0].bq !== null && tied.config.attentionBias);
});

test('BF16 checkpoints load as f16 or f32 at the user\'s choice; a value beyond f16\'s range is an error naming the tensor, not an Inf', async () => {
  const d = tmp();
  await writeCheckpoint(d, { hidden: 32, intermediate: 48, layers: 1, heads: 4, kvHeads: 2, vocab: 50, dtype: 'BF16' });
  const f32 = await loadCheckpoint(nodeModelFiles(d), { weights: 'f32' });
  const f16 = await loadCheckpoint(nodeModelFiles(d), { weights: 'f16' });
  assert.is(f16.weights.layers[0].wq.constructor, Object, 'f16 weights stay packed');
  const a = matrixF32(f32.weights.layers[0].wq), b = matrixF32(f16.weights.layers[0].wq);
  a.forEach((v, i) => assert.ok(Math.abs(b[i] - v) <= 2 ** -11 * Math.abs(v), `wq[${i}]: ${b[i]} vs ${v}`));
  await rewriteTensors(d, (t) => {
    for (const x of Object.values(t)) x.dtype = 'BF16';
    (t['model.layers.0.self_attn.k_proj.weight'].data as Float32Array)[33] = 2 ** 20;
  });
  const err = await loadCheckpoint(nodeModelFiles(d), { weights: 'f16' }).then(() => 'no error', (e: Error) => e.message);
  assert.match(err, /model\.safetensors: tensor "model\.layers\.0\.self_attn\.k_proj\.weight": value 1048576 at \[1, 1\] is beyond f16's range/);
  assert.is(matrixF32((await loadCheckpoint(nodeModelFiles(d), { weights: 'f32' })).weights.layers[0].wk)[33], 2 ** 20);
});

test('bad checkpoints: each error names the file and the tensor or field', async () => {
  const fresh = async (extra: object = {}) => { const d = tmp(); await writeCheckpoint(d, { hidden: 32, intermediate: 48, heads: 4, kvHeads: 2, vocab: 50, ...extra }); return d; };
  let d = await fresh();
  rmSync(join(d, 'config.json'));
  assert.match(await loadError(d), /no config.json/);

  d = await fresh();
  writeFileSync(join(d, 'config.json'), JSON.stringify({ ...JSON.parse(readFileSync(join(d, 'config.json'), 'utf8')), model_type: 'falcon', architectures: ['FalconForCausalLM'] }));
  assert.match(await loadError(d), /config.json: unsupported model_type "falcon"/);

  d = await fresh();
  const size = readFileSync(join(d, 'model.safetensors')).length;
  truncateSync(join(d, 'model.safetensors'), size - 100);
  assert.match(await loadError(d), /model.safetensors: tensor ".*": data_offsets \[\d+, \d+\] are out of range .*truncated/);

  d = await fresh();
  truncateSync(join(d, 'model.safetensors'), 5);
  assert.match(await loadError(d), /model.safetensors: truncated \(5 bytes/);

  d = await fresh();
  const buf = readFileSync(join(d, 'model.safetensors'));
  buf.writeBigUInt64LE(BigInt(buf.length * 2), 0);
  writeFileSync(join(d, 'model.safetensors'), buf);
  assert.match(await loadError(d), /model.safetensors: header length \d+ exceeds the file size/);

  d = await fresh();
  writeSafetensors(join(d, 'model.safetensors'), { 'model.embed_tokens.weight': { dtype: 'I8', shape: [2], data: new Uint8Array(2) } });
  assert.match(await loadError(d), /model.safetensors: tensor "model.embed_tokens.weight": unsupported dtype I8/);

  d = await fresh();
  writeSafetensors(join(d, 'model.safetensors'), { 'model.embed_tokens.weight': { dtype: 'F32', shape: [50, 32], data: new Float32Array(50 * 32) } });
  assert.match(await loadError(d), /config.json: num_hidden_layers is 2, but the checkpoint in .* has tensors for 0 layers/);

  d = await fresh();
  await rewriteTensors(d, (t) => { t['model.embed_tokens.weight'] = { dtype: 'F32', shape: [50, 31], data: new Float32Array(50 * 31) }; });
  assert.match(await loadError(d), /model.safetensors: tensor "model.embed_tokens.weight" has shape \[50, 31\], expected \[50, 32\]/);

  d = await fresh({ shards: 2 });
  rmSync(join(d, 'model-00002-of-00002.safetensors'));
  assert.match(await loadError(d), /model.safetensors.index.json: shard "model-00002-of-00002.safetensors" is missing/);

  d = await fresh();
  rmSync(join(d, 'model.safetensors'));
  assert.match(await loadError(d), /no model.safetensors or model.safetensors.index.json/);
});

test('tokenizer.json round-trips text; chat template renders; no tokenizer still loads', async () => {
  const d = tmp();
  await writeCheckpoint(d, { hidden: 32, intermediate: 48, heads: 4, kvHeads: 2, vocab: 301, tokenizer: true });
  const ck = await loadCheckpoint(nodeModelFiles(d));
  const tok = ck.tokenizer!;
  for (const text of ['hello world', 'the weather, in 2024: 17°C!', 'héllo wörld — ✓ 日本']) {
    const ids = tok.encode(text);
    assert.is(ids[0], 0, 'bos first');
    assert.ok(ids.every((i) => i < 301));
    assert.is(tok.decode(ids), text);
    const dec = tok.streamDecoder();
    assert.is(ids.map((i) => dec.push(i)).join('') + dec.flush(), text, 'streamed decode');
  }
  assert.ok(tok.encode('hello the world').length < 'hello the world'.length + 1, 'merges apply');
  assert.is(tok.applyChatTemplate([{ role: 'user', content: 'hi' }]), '<s><|user|>\nhi</s>\n<|assistant|>\n');
  assert.equal(ck.eosTokenIds, [1]);
  const n = tmp();
  await writeCheckpoint(n, { hidden: 32, intermediate: 48, heads: 4, kvHeads: 2, vocab: 50 });
  assert.is((await loadCheckpoint(nodeModelFiles(n))).tokenizer, null);
});

test.run();
