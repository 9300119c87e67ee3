// Nothing silently wrong (issue 18): unsupported model features are refused, extra tensors and
// layers are named, non-finite logits stop generation, top-k/top-p cut what they must, a broken
// chat template fails only when used, rings are sized to the context, and Mistral's sliding
// window runs exactly (against the float64 reference with Hugging Face's mask).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseModelConfig } from '../src/model/config.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { Sampler } from '../src/engine/sampler.ts';
import { Engine } from '../src/engine/engine.ts';
import { ringWindow } from '../src/kv/streaming/method.ts';
import { projectKvMemory } from '../src/attention/memory.ts';
import { applySlidingWindow } from '../src/attention/sliding-window.ts';
import { allHeads } from '../src/attention/pattern.ts';
import { razorHeadScores, retrievalHits } from '../src/identify/scores.ts';
import { referenceLogits } from './reference/model.ts';
import { assertClose } from './helpers/conformance.ts';
import { rewriteTensors, writeCheckpoint } from './helpers/checkpoint.ts';
import { tempCheckpoint } from './helpers/engine.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'duet-correct-'));
const BASE = { model_type: 'llama', hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 8, num_key_value_heads: 2, vocab_size: 100, max_position_embeddings: 512 };
const loadError = (dir: string) => loadCheckpoint(nodeModelFiles(dir)).then(() => 'no error', (e: Error) => e.message);
const SMALL = { hidden: 32, intermediate: 48, heads: 4, kvHeads: 2, vocab: 50 };

test('config.json: hidden_act other than silu, mlp_bias, qwen2 sliding windows are refused; sliding_window is read for mistral', () => {
  assert.throws(() => parseModelConfig({ ...BASE, hidden_act: 'gelu' }), /config.json: field "hidden_act" is "gelu"; Duet implements only silu/);
  assert.is(parseModelConfig({ ...BASE, hidden_act: 'silu' }).modelType, 'llama');
  assert.throws(() => parseModelConfig({ ...BASE, mlp_bias: true }), /config.json: field "mlp_bias" is true/);
  assert.throws(() => parseModelConfig({ ...BASE, model_type: 'qwen2', use_sliding_window: true, sliding_window: 4096 }), /field "use_sliding_window" is true/);
  assert.is(parseModelConfig({ ...BASE, model_type: 'qwen2', use_sliding_window: false, sliding_window: 4096 }).slidingWindow, null);
  assert.is(parseModelConfig({ ...BASE, model_type: 'mistral', sliding_window: 4096 }).slidingWindow, 4096);
  assert.is(parseModelConfig({ ...BASE, model_type: 'mistral', sliding_window: null }).slidingWindow, null);
  assert.throws(() => parseModelConfig({ ...BASE, model_type: 'mistral', sliding_window: -3 }), /field "sliding_window" must be a positive integer/);
});

test('checkpoints: an unused tensor, extra layers, and num_hidden_layers 1e9 are clear errors (the last at once)', async () => {
  let d = tmp();
  await writeCheckpoint(d, SMALL);
  await rewriteTensors(d, (t) => { t['model.layers.0.self_attn.q_proj.bias'] = { dtype: 'F32', shape: [32], data: new Float32Array(32) }; });
  assert.match(await loadError(d), /model.safetensors: tensor "model.layers.0.self_attn.q_proj.bias" is not used by a llama model with this config.json \(attention_bias false\)/);

  d = tmp();
  await writeCheckpoint(d, SMALL);
  await rewriteTensors(d, (t) => { t['model.layers.0.mlp.down_proj.bias'] = { dtype: 'F32', shape: [32], data: new Float32Array(32) }; });
  assert.match(await loadError(d), /tensor "model.layers.0.mlp.down_proj.bias" is not used/);

  d = tmp();
  await writeCheckpoint(d, { ...SMALL, layers: 3 });
  const cfg = JSON.parse(readFileSync(join(d, 'config.json'), 'utf8'));
  writeFileSync(join(d, 'config.json'), JSON.stringify({ ...cfg, num_hidden_layers: 2 }));
  assert.match(await loadError(d), /config.json: num_hidden_layers is 2, but the checkpoint in .* has tensors for 3 layers \(layers 2–2 would be silently skipped\)/);

  writeFileSync(join(d, 'config.json'), JSON.stringify({ ...cfg, num_hidden_layers: 1000 }));
  assert.match(await loadError(d), /config.json: num_hidden_layers is 1000, but the checkpoint in .* has tensors for 3 layers/);
  // Sizes no host could hold are refused when config.json is parsed (test/memory-plan.test.ts).
  writeFileSync(join(d, 'config.json'), JSON.stringify({ ...cfg, num_hidden_layers: 1e9 }));
  assert.match(await loadError(d), /config.json: num_hidden_layers × num_key_value_heads is 1000000000 × \d+ = \d+ KV heads, more than Duet's limit of 1048576/);

  // Old exports' rotary buffers are not weights and stay accepted.
  d = tmp();
  await writeCheckpoint(d, SMALL);
  await rewriteTensors(d, (t) => { t['model.layers.1.self_attn.rotary_emb.inv_freq'] = { dtype: 'F32', shape: [4], data: new Float32Array(4) }; });
  assert.is(await loadError(d), 'no error');
});

test('safetensors: overlapping tensor bytes, duplicate tensors across shards, shard names leaving the folder are refused', async () => {
  let d = tmp();
  await writeCheckpoint(d, SMALL);
  const buf = readFileSync(join(d, 'model.safetensors'));
  const len = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + len).toString());
  const [a, b] = Object.keys(header).filter((k) => header[k].shape?.length === 1 && header[k].shape[0] === 32);
  header[b].data_offsets = header[a].data_offsets; // b now reads a's bytes
  let json = JSON.stringify(header);
  while (json.length < len) json += ' ';
  if (json.length === len) {
    writeFileSync(join(d, 'model.safetensors'), Buffer.concat([buf.subarray(0, 8), Buffer.from(json), buf.subarray(8 + len)]));
    assert.match(await loadError(d), /model.safetensors: tensors ".*" and ".*" overlap \(data_offsets/);
  } else assert.unreachable('the edited header must fit the original length');

  d = tmp();
  await writeCheckpoint(d, { ...SMALL, shards: 2 });
  const indexPath = join(d, 'model.safetensors.index.json');
  const index = JSON.parse(readFileSync(indexPath, 'utf8'));
  for (const bad of ['../model-00001-of-00002.safetensors', '/etc/passwd', 'sub/x.safetensors', 42]) {
    writeFileSync(indexPath, JSON.stringify({ weight_map: { ...index.weight_map, 'model.norm.weight': bad } }));
    assert.match(await loadError(d), /model.safetensors.index.json: weight_map\["model.norm.weight"\] (names .*not a file in the model folder|must be a file name)/, String(bad));
  }
  const first = Object.keys(index.weight_map).find((k) => index.weight_map[k] === 'model-00001-of-00002.safetensors')!;
  writeFileSync(indexPath, JSON.stringify({ weight_map: { ...index.weight_map, [first]: 'model-00002-of-00002.safetensors' } }));
  assert.match(await loadError(d), /weight_map puts ".*" in model-00002-of-00002.safetensors, but it is in model-00001-of-00002.safetensors/);
});

test('a broken chat template fails only when used, naming tokenizer_config.json', async () => {
  const d = tmp();
  await writeCheckpoint(d, { ...SMALL, vocab: 301, tokenizer: true });
  const cfgPath = join(d, 'tokenizer_config.json');
  writeFileSync(cfgPath, JSON.stringify({ ...JSON.parse(readFileSync(cfgPath, 'utf8')), chat_template: '{% for m in messages %}{{ m.content }' }));
  const ck = await loadCheckpoint(nodeModelFiles(d));
  assert.is(ck.tokenizer!.decode(ck.tokenizer!.encode('hello')), 'hello', 'the tokenizer works without --chat');
  assert.throws(() => ck.tokenizer!.applyChatTemplate([{ role: 'user', content: 'hi' }]), /tokenizer_config.json: field "chat_template" is not a valid Jinja template/);
});

test('sampler: non-finite logits are an error; top-k and top-p keep exactly the tokens they must', () => {
  assert.throws(() => new Sampler().sample(Float32Array.from([0, NaN, 1])), /non-finite logits \(NaN for token 1\)/);
  assert.throws(() => new Sampler({ temperature: 1 }).sample(Float32Array.from([0, 1, Infinity])), /non-finite logits \(Infinity for token 2\)/);
  // Probabilities 0.4, 0.3, 0.2, 0.1 (temperature 1) in a shuffled order.
  const probs = [0.2, 0.4, 0.1, 0.3];
  const logits = Float32Array.from(probs, Math.log);
  const counts = (o: { topK?: number; topP?: number }) => {
    const s = new Sampler({ temperature: 1, seed: 5, ...o });
    const c = [0, 0, 0, 0];
    for (let i = 0; i < 4000; i++) c[s.sample(logits)]++;
    return c;
  };
  // top-p 0.5: the smallest set reaching 0.5 is {0.4, 0.3}; renormalised 4/7 and 3/7.
  const p = counts({ topP: 0.5 });
  assert.is(p[0] + p[2], 0, `top-p 0.5 never samples the 0.2 and 0.1 tokens: ${p}`);
  assert.ok(Math.abs(p[1] / 4000 - 4 / 7) < 0.03 && Math.abs(p[3] / 4000 - 3 / 7) < 0.03, `top-p renormalises: ${p}`);
  // top-p 0.38: the top token alone reaches it (away from the float boundary at exactly 0.4).
  assert.equal(counts({ topP: 0.38 }), [0, 4000, 0, 0]);
  // top-p 0.75: three tokens (0.4 + 0.3 < 0.75 ≤ 0.9).
  const p3 = counts({ topP: 0.75 });
  assert.ok(p3[2] === 0 && p3[0] > 0 && p3[1] > 0 && p3[3] > 0, `top-p 0.75: ${p3}`);
  // top-k 2: the two most likely only; top-k 1 is greedy.
  const k = counts({ topK: 2 });
  assert.ok(k[0] === 0 && k[2] === 0 && k[1] > k[3] && k[3] > 0, `top-k 2: ${k}`);
  assert.equal(counts({ topK: 1 }), [0, 4000, 0, 0]);
  // Without a cut every token appears, in proportion.
  const all = counts({});
  probs.forEach((q, i) => assert.ok(Math.abs(all[i] / 4000 - q) < 0.03, `token ${i}: ${all[i]}`));
});

test('NaN weights: generation stops with a clear error instead of repeating token 0', async () => {
  const ck = await tempCheckpoint({ ...SMALL, layers: 1, seed: 4 });
  (ck.weights.layers[0].wDown as Float32Array)[3] = NaN;
  const engine = await Engine.create(ck.config, ck.weights, { device: 'cpu', placement: 'cpu' });
  try {
    await engine.generate([1, 2, 3], { maxTokens: 4 }).then(() => assert.unreachable('must throw'), (e: Error) => assert.match(e.message, /non-finite logits/));
  } finally { engine.dispose(); }
});

test('streaming rings hold min(sink + recent, capacity) slots; session bytes equal duet memory; growing past the ring stays exact', async () => {
  assert.equal(ringWindow({ sink: 4, recent: 60 }, 10), { sink: 4, recent: 6 });
  assert.equal(ringWindow({ sink: 16, recent: 64 }, 5), { sink: 4, recent: 1 });
  assert.equal(ringWindow({ sink: 4, recent: 8 }, 100), { sink: 4, recent: 8 });
  const ck = await tempCheckpoint({ hidden: 48, intermediate: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 12, vocab: 97, seed: 8 });
  const kinds = [[true, false], [false, false]];
  const window = { sink: 4, recent: 60 };
  const engine = await Engine.create(ck.config, ck.weights, { device: 'cpu', placement: 'cpu', kinds, window });
  try {
    const s = engine.newSession(10, 8);
    const ids = Array.from({ length: 80 }, (_, i) => (i * 37 + 5) % 97);
    const ref = referenceLogits(ck.config, ck.weights, ids, { kinds, ...window });
    assertClose(await s.forward(ids.slice(0, 8)), ref[7], 'prefill', 2e-3);
    const projected = projectKvMemory(kinds, ck.config.headDim, 10, window, 'f32');
    assert.is(s.kvMemory().streamingBytes, projected.cpu_bytes, 'ring bytes = the projection at the same context');
    assert.is(s.kvMemory().streamingBytes, 3 * 2 * 10 * 12 * 4, 'three streaming KV heads × K,V × 10 slots');
    // Decode past the capacity (the rings grow) and past sink + recent (they wrap).
    for (let i = 8; i < 80; i++) {
      const logits = await s.forward([ids[i]]);
      if (i % 9 === 0 || i === 79) assertClose(logits, ref[i], `decode at ${i}`, 2e-3);
    }
    assert.is(s.kvMemory().streamingBytes, 3 * 2 * 64 * 12 * 4, 'full-size ring once the context passes sink + recent');
    s.dispose();
    // generate: the "saved" figure can no longer go negative for a short prompt.
    const r = await engine.generate([1, 2, 3], { maxTokens: 2 });
    const full = projectKvMemory(allHeads(2, 2, true), ck.config.headDim, 5, { sink: 0, recent: 1 }, 'f32').full_bytes;
    assert.ok(r.kv.retrievalBytes + r.kv.streamingBytes <= full, `${r.kv.retrievalBytes + r.kv.streamingBytes} ≤ ${full}`);
  } finally { engine.dispose(); }
});

test('sliding_window (Mistral): a query sees its last W keys itself included, exact against the reference; caps the cache', async () => {
  const W = 6;
  const ck = await tempCheckpoint({ modelType: 'mistral', hidden: 48, intermediate: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 12, vocab: 97, seed: 9, maxPositions: 256 });
  const config = { ...ck.config, slidingWindow: W };
  const ids = Array.from({ length: 30 }, (_, i) => (i * 29 + 3) % 97);
  const ref = referenceLogits(config, ck.weights, ids);
  // The reference is Hugging Face's mask (kv_idx > q_idx − W): W keys; a window of W + 1 keys differs.
  const wider = referenceLogits({ ...config, slidingWindow: W + 1 }, ck.weights, ids);
  assert.ok(Math.abs(wider[29][0] - ref[29][0]) > 1e-6, 'W and W + 1 keys give different logits');
  const notes: string[] = [];
  const engine = await Engine.create(config, ck.weights, { device: 'cpu', placement: 'cpu', notice: (m) => notes.push(m) });
  try {
    assert.match(notes.join('\n'), /sliding_window 6: every head attends to its last 6 keys/);
    for (const chunk of [4, 30]) {
      const s = engine.newSession(30, chunk);
      assertClose(await s.forward(ids.slice(0, 20)), ref[19], `prefill in chunks of ${chunk}`, 2e-3);
      for (let i = 20; i < 30; i++) assertClose(await s.forward([ids[i]]), ref[i], `decode at ${i}`, 2e-3);
      assert.is(s.kvMemory().retrievalBytes, 0);
      assert.is(s.kvMemory().streamingBytes, 2 * 2 * 2 * W * 12 * 4, 'every head caches W positions');
      s.dispose();
    }
  } finally { engine.dispose(); }

  // With a DuoAttention pattern: streaming heads at least as wide as W become the window; narrower
  // sink-free ones keep theirs; a mix the window cannot express is refused past W tokens.
  const mixed = [[true, false], [false, true]];
  assert.equal(applySlidingWindow(W, 256, mixed, { sink: 2, recent: 8 }).window, { sink: 0, recent: W });
  assert.equal(applySlidingWindow(W, 256, [[false, false], [false, false]], { sink: 0, recent: 3 }).window, { sink: 0, recent: 3 });
  assert.is(applySlidingWindow(W, 6, mixed, { sink: 2, recent: 3 }).limit, null, 'a window as long as the model never binds');
  const e2 = await Engine.create(config, ck.weights, { device: 'cpu', placement: 'cpu', kinds: mixed, window: { sink: 2, recent: 3 } });
  try {
    const s = e2.newSession(30, 8);
    const refMixed = referenceLogits(config, ck.weights, ids, { kinds: mixed, sink: 2, recent: 3 });
    assertClose(await s.forward(ids.slice(0, W)), refMixed[W - 1], 'exact up to W tokens', 2e-3);
    await s.forward([ids[W]]).then(() => assert.unreachable('past W'), (e: Error) => assert.match(e.message, /sequence of 7 tokens: the model's sliding_window \(6\) and the pattern's window \(sink 2, recent 3\) do not combine/));
    s.dispose();
  } finally { e2.dispose(); }
  const e3 = await Engine.create(config, ck.weights, { device: 'cpu', placement: 'cpu', kinds: mixed, window: { sink: 2, recent: 9 } });
  try {
    const s = e3.newSession(30, 8);
    const refWide = referenceLogits(config, ck.weights, ids, { kinds: mixed, sink: 2, recent: 9 });
    assertClose(await s.forward(ids), refWide[29], 'pattern wider than W: every head is the window', 2e-3);
    s.dispose();
  } finally { e3.dispose(); }
});

test('RazorAttention and retrieval scores against hand-built attention matrices', () => {
  // Tokens 5 | 1 2 3 | 1 2 3. Head 0 echoes (attends to the earlier copy of its own token), head 1
  // is an induction head (attends to the token after that copy), head 2 attends to itself only.
  const ids = [5, 1, 2, 3, 1, 2, 3], T = ids.length;
  const P = new Float32Array(3 * T * T);
  const set = (h: number, i: number, j: number) => { P[(h * T + i) * T + j] = 1; };
  for (let i = 0; i < T; i++) {
    const prev = ids.lastIndexOf(ids[i], i - 1);
    set(0, i, prev >= 0 && prev < i ? prev : i);
    set(1, i, prev >= 0 && prev < i ? prev + 1 : i);
    set(2, i, i);
  }
  const s = razorHeadScores(P, 3, ids);
  assert.equal(Array.from(s.echo), [3 / 49, 0, 0]);
  assert.equal(Array.from(s.induction), [0, 3 / 49, 0]);
  // Half of head 0's mass moved to position 0 halves its echo.
  for (const i of [4, 5, 6]) { P[i * T + ids.lastIndexOf(ids[i], i - 1)] = 0.5; P[i * T] = 0.5; }
  assert.equal(Array.from(razorHeadScores(P, 3, ids).echo), [1.5 / 49, 0, 0]);

  // Retrieval score: prompt [bos, 9, 7, 8, 4, 4] with the needle 7 8 at [2, 4), answer 7 8.
  const r = [0, 9, 7, 8, 4, 4, 7, 8], R = r.length;
  const Q = new Float32Array(3 * R * R);
  const at = (h: number, t: number, j: number) => { Q[(h * R + t) * R + j] = 0.9; };
  at(0, 5, 2); at(0, 6, 3); // copies the needle token by token: 2 hits of 2
  at(1, 5, 3); at(1, 6, 1); // the wrong needle token, then outside the needle: none
  at(2, 5, 2); at(2, 6, 0); // one hit; the sink at position 0 never counts
  assert.equal(Array.from(retrievalHits(Q, 3, r, 6, [2, 4])), [1, 0, 0.5]);
});

test.run();
