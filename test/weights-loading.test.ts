// Loading without an f32 copy: GGUF tensors reach the engine as the file's own bytes (no
// dequantize), safetensors quantize on load tensor by tensor (the loader's peak host bytes stay
// near the packed size, far below the f32 model), and heads split in packed form give the same
// logits as the f32 engine on the dequantized weights.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine } from '../src/engine/engine.ts';
import { splitGroup } from '../src/engine/head-split.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { concatBytes, parseGgufHeader } from '../src/model/gguf.ts';
import { unpermuteRows } from '../src/model/gguf-model.ts';
import { ggufChunks } from '../src/model/gguf-write.ts';
import { encodeMatrix } from '../src/model/gguf-encode.ts';
import { dequantizeMatrix, packedBytes, quantizeMatrix, type PackedMatrix, type WeightDType } from '../src/model/quant.ts';
import { matrixBytes, matrixDType, matrixF32, type ModelWeights, type WeightMatrix } from '../src/model/weights.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { writeCheckpoint } from './helpers/checkpoint.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'duet-wload-'));

function matrices(w: ModelWeights): WeightMatrix[] {
  return [w.lmHead, ...w.layers.flatMap((l) => [l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown])];
}

function maxRelDiff(a: Float32Array, b: Float32Array): number {
  let peak = 0, err = 0;
  for (let i = 0; i < a.length; i++) { peak = Math.max(peak, Math.abs(a[i])); err = Math.max(err, Math.abs(a[i] - b[i])); }
  return err / (1 + peak);
}

/** The f32 engine on the dequantized weights against the engine on `w` as stored. */
async function compareEngines(config: Parameters<typeof Engine.create>[0], w: ModelWeights, kinds?: boolean[][]) {
  const f = (m: WeightMatrix) => matrixF32(m);
  const lm = f(w.lmHead);
  const ref: ModelWeights = {
    embed: w.embed === w.lmHead ? lm : f(w.embed), lmHead: lm, finalNorm: w.finalNorm,
    layers: w.layers.map((l) => ({ ...l, wq: f(l.wq), wk: f(l.wk), wv: f(l.wv), wo: f(l.wo), wGate: f(l.wGate), wUp: f(l.wUp), wDown: f(l.wDown) })),
  };
  const ids = [3, 14, 15, 42, 6, 35, 8, 9, 7, 9, 32, 38];
  const window = { sink: 2, recent: 4 };
  const run = async (weights: ModelWeights, dtype?: WeightDType) => {
    const e = await Engine.create(config, weights, { device: 'cpu', placement: 'cpu', weights: dtype, kinds, window });
    const s = e.newSession(32, 8);
    try { return { dtype: e.model.weightDType, bytes: e.model.weightBytes, logits: [await s.forward(ids), await s.forward([4]), await s.forward([5])] }; } finally { s.dispose(); e.dispose(); }
  };
  return { packed: await run(w), ref: await run(ref, 'f32') };
}

test('GGUF Q8_0/Q4_0/Q4_K/F16 tensors load as the file\'s bytes (unpermuted rows, never dequantized) and run as they are', async () => {
  const dir = tmp();
  // hidden 256 fills a Q4_K super-block; intermediate 96 makes ffn_down fall back (q4_k → q4_0 → f16).
  await writeCheckpoint(dir, { modelType: 'llama', hidden: 256, intermediate: 96, heads: 4, kvHeads: 2, layers: 1, vocab: 50, seed: 3 });
  const hf = await loadCheckpoint(nodeModelFiles(dir));
  for (const type of ['f16', 'q8_0', 'q4_0', 'q4_k'] as const) {
    const file = join(dir, `${type}.gguf`);
    writeFileSync(file, concatBytes(ggufChunks(hf.config, hf.weights, { name: 't', type, encode: encodeMatrix })));
    const g = await loadCheckpoint(nodeModelFiles(file));
    const raw = readFileSync(file);
    const header = parseGgufHeader(new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength), raw.byteLength, file);
    const bytesOf = (name: string) => { const t = header.tensors.get(name)!; return new Uint8Array(raw.buffer, raw.byteOffset + t.offset, t.byteLength); };
    const l = g.weights.layers[0];
    const wq = l.wq as PackedMatrix, wv = l.wv as PackedMatrix;
    assert.is(wq.dtype, type, `${type}: attn_q keeps the file's type`);
    // V is stored unpermuted: the very bytes of the file. Q was permuted by the writer: its rows come back.
    assert.equal(wv.data, bytesOf('blk.0.attn_v.weight'), `${type}: attn_v bytes`);
    assert.equal(wq.data, unpermuteRows(bytesOf('blk.0.attn_q.weight'), 4 * 64, 4), `${type}: attn_q rows unpermuted`);
    // No tensor was widened: held bytes are the file's tensor bytes (norms are F32 in the file too).
    let fileBytes = 0;
    for (const t of header.tensors.values()) fileBytes += t.byteLength;
    assert.is(g.loadStats.heldBytes, fileBytes, `${type}: bytes held = tensor bytes in the file`);
    const { packed, ref } = await compareEngines(g.config, g.weights);
    assert.is(packed.dtype, type, `${type}: engine runs the file's format`);
    // The engine holds exactly what was loaded (+ its RoPE frequencies): nothing was converted.
    assert.is(packed.bytes, g.loadStats.heldBytes + 4 * 32, `${type}: engine weight bytes = loaded bytes`);
    packed.logits.forEach((lg, i) => assert.ok(maxRelDiff(ref.logits[i], lg) <= 1e-4, `${type} step ${i}: ${maxRelDiff(ref.logits[i], lg)}`));
  }
});

test('safetensors quantize on load: tensor by tensor, peak host bytes ≈ packed size + one tensor (never the f32 model)', async () => {
  const dir = tmp();
  const spec = { hidden: 128, intermediate: 320, heads: 4, kvHeads: 2, layers: 4, vocab: 500, seed: 9 };
  await writeCheckpoint(dir, spec);
  const f32 = await loadCheckpoint(nodeModelFiles(dir));
  const f32Bytes = f32.loadStats.heldBytes;
  // The largest tensor: the untied LM head / embeddings, 500 × 128 f32.
  const largest = 500 * 128 * 4;
  for (const dtype of ['f16', 'q8_0', 'q4_0'] as const) {
    const q = await loadCheckpoint(nodeModelFiles(dir), { weights: dtype });
    for (const m of matrices(q.weights)) assert.is(matrixDType(m), dtype);
    const l0 = q.weights.layers[0].wGate as PackedMatrix;
    const want = quantizeMatrix(dtype, matrixF32(f32.weights.layers[0].wGate), spec.intermediate, spec.hidden);
    assert.equal(l0.data, want.data, `${dtype}: same bytes as quantizing the f32 tensor`);
    const { heldBytes, peakBytes } = q.loadStats;
    const packed = matrices(q.weights).reduce((s, m) => s + matrixBytes(m), 0) + matrixBytes(q.weights.embed);
    const vectors = 4 * spec.hidden * (2 * spec.layers + 1);
    assert.is(heldBytes, packed + vectors, `${dtype}: held = packed matrices + f32 norms`);
    // read bytes + their f32 decode + the packed result of the largest tensor, on top of what is held.
    assert.ok(peakBytes <= heldBytes + 3 * largest, `${dtype}: peak ${peakBytes} vs held ${heldBytes} + 3 × ${largest}`);
    assert.ok(peakBytes < 0.75 * f32Bytes, `${dtype}: peak ${peakBytes} must stay well below the f32 model (${f32Bytes})`);
  }
});

test('heads split in packed form: byte-exact gather when a KV group fills whole blocks, exact f32 O columns when not', () => {
  const r = (n: number, seed: number) => { const a = new Float32Array(n); let s = seed; for (let i = 0; i < n; i++) { s = (s * 1103515245 + 12345) >>> 0; a[i] = s / 2 ** 31 - 1; } return a; };
  for (const [headDim, dtype, aligned] of [[32, 'q8_0', true], [24, 'q8_0', false], [16, 'q4_0', true], [24, 'f16', true], [64, 'q4_k', false], [128, 'q4_k', true]] as const) {
    // group 2 (8 query heads over 4 KV heads): a KV head's O columns are 2·headDim wide.
    const hidden = 256, nh = 8, nkv = 4, geo = { hidden, numHeads: nh, numKvHeads: nkv, headDim };
    const f = { wq: r(nh * headDim * hidden, 1), wk: r(nkv * headDim * hidden, 2), wv: r(nkv * headDim * hidden, 3), wo: r(hidden * nh * headDim, 4), bq: null, bk: null, bv: null };
    const p = {
      ...f, wq: quantizeMatrix(dtype, f.wq, nh * headDim, hidden), wk: quantizeMatrix(dtype, f.wk, nkv * headDim, hidden),
      wv: quantizeMatrix(dtype, f.wv, nkv * headDim, hidden), wo: quantizeMatrix(dtype, f.wo, hidden, nh * headDim),
    };
    const dq = { ...f, wq: dequantizeMatrix(p.wq), wk: dequantizeMatrix(p.wk), wv: dequantizeMatrix(p.wv), wo: dequantizeMatrix(p.wo) };
    const kv = [1, 3];
    const side = splitGroup(p, geo, kv), want = splitGroup(dq, geo, kv);
    for (const k of ['wq', 'wk', 'wv', 'wo'] as const) {
      assert.ok(matrixF32(side[k]).every((v, i) => v === matrixF32(want[k])[i]), `${dtype} d${headDim} ${k}`);
    }
    assert.is(side.wq.dtype, dtype);
    assert.is(side.wo.dtype, aligned ? dtype : 'f32', `${dtype} d${headDim}: O stays ${aligned ? dtype : 'f32'}`);
    if (aligned) assert.is(side.wo.data.byteLength, packedBytes(side.wo));
    // Every head on one side: the layer's own matrices, not copies.
    assert.is(splitGroup(p, geo, [0, 1, 2, 3]).wq, p.wq);
  }
});

test('a packed model with streaming heads (both sides in a layer) matches the f32 engine on its dequantized weights', async () => {
  const dir = tmp();
  await writeCheckpoint(dir, { hidden: 64, intermediate: 96, heads: 4, kvHeads: 4, headDim: 16, layers: 2, vocab: 97, seed: 6 });
  const kinds = [[true, false, true, false], [false, true, true, false]];
  for (const dtype of ['q8_0', 'q4_0'] as const) {
    const q = await loadCheckpoint(nodeModelFiles(dir), { weights: dtype });
    const { packed, ref } = await compareEngines(q.config, q.weights, kinds);
    assert.is(packed.dtype, dtype);
    packed.logits.forEach((lg, i) => assert.ok(maxRelDiff(ref.logits[i], lg) <= 1e-4, `${dtype} step ${i}: ${maxRelDiff(ref.logits[i], lg)}`));
  }
});

test.run();
