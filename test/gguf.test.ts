// GGUF: Hugging Face checkpoint → GGUF → loaded equals the original (llama GQA, qwen2 biases,
// tied embeddings, rope scaling, head_dim override); llama.cpp's Q/K permutation against the two
// RoPE conventions it bridges; each bad file gets an error naming the file and key/tensor (the
// seeded fuzz of the reader is in test/fuzz.test.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCheckpoint, type Checkpoint } from '../src/model/checkpoint.ts';
import { ropeInvFreq } from '../src/model/config.ts';
import { concatBytes, encodeGgufHeader, parseGgufHeader, ValueType, type GgufWriteValue } from '../src/model/gguf.ts';
import { permuteRows, unpermuteRows } from '../src/model/gguf-model.ts';
import { fallbackType, ggufChunks, type MatrixEncoder } from '../src/model/gguf-write.ts';
import { encodeMatrix } from '../src/model/gguf-encode.ts';
import { dequantizeMatrix, GGML_TYPE, quantizeMatrix } from '../src/model/quant.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { writeCheckpoint, type CheckpointSpec } from './helpers/checkpoint.ts';
import { rng } from './reference/kernels.ts';
import { matrixF32, type WeightMatrix } from '../src/model/weights.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'duet-gguf-'));
const f32Encoder: MatrixEncoder = (type, v) => {
  if (type !== 'f32') throw new Error(`test encoder: ${type}`);
  return new Uint8Array(v.slice().buffer);
};

async function hfAndGguf(spec: Partial<CheckpointSpec>): Promise<{ hf: Checkpoint; file: string }> {
  const dir = tmp();
  await writeCheckpoint(dir, spec);
  const hf = await loadCheckpoint(nodeModelFiles(dir));
  const file = join(dir, 'model.gguf');
  writeFileSync(file, concatBytes(ggufChunks(hf.config, hf.weights, { name: 'test', type: 'f32', encode: f32Encoder })));
  return { hf, file };
}

function sameWeights(a: Checkpoint, b: Checkpoint): void {
  const eq = (xm: WeightMatrix | null, ym: WeightMatrix | null, what: string) => {
    assert.is(xm === null, ym === null, what);
    const x = xm && matrixF32(xm), y = ym && matrixF32(ym);
    if (x && y) { assert.is(x.length, y.length, what); assert.ok(x.every((v, i) => Object.is(v, y[i])), `${what} differs`); }
  };
  eq(a.weights.embed, b.weights.embed, 'embed');
  eq(a.weights.lmHead, b.weights.lmHead, 'lmHead');
  eq(a.weights.finalNorm, b.weights.finalNorm, 'finalNorm');
  a.weights.layers.forEach((l, i) => {
    for (const k of Object.keys(l) as Array<keyof typeof l>) eq(l[k], b.weights.layers[i][k], `layer ${i} ${k}`);
  });
}

test('HF → GGUF (F32) → loaded: weights and config equal, for llama GQA, qwen2, tied, llama3 and linear rope, head_dim override', async () => {
  const cases: Array<Partial<CheckpointSpec>> = [
    { modelType: 'llama', heads: 4, kvHeads: 2 },
    { modelType: 'qwen2', heads: 4, kvHeads: 1, tieEmbeddings: true },
    { modelType: 'llama', attentionBias: true, heads: 8, kvHeads: 8, headDim: 12, ropeTheta: 500000,
      ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 } },
    { modelType: 'mistral', ropeScaling: { type: 'linear', factor: 2.5 } },
  ];
  for (const spec of cases) {
    const { hf, file } = await hfAndGguf(spec);
    const g = await loadCheckpoint(nodeModelFiles(file));
    const what = JSON.stringify(spec);
    sameWeights(hf, g);
    for (const key of ['hiddenSize', 'intermediateSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'ropeTheta', 'maxPositionEmbeddings', 'vocabSize', 'tieWordEmbeddings', 'attentionBias'] as const) {
      assert.equal(g.config[key], hf.config[key], `${what}: ${key}`);
    }
    assert.ok(Math.abs(g.config.rmsNormEps - hf.config.rmsNormEps) < 1e-12, `${what}: eps`);
    assert.is(g.config.modelType, spec.modelType === 'qwen2' ? 'qwen2' : 'llama', `${what}: llama.cpp writes mistral as llama`);
    if (g.config.tieWordEmbeddings) assert.is(g.weights.lmHead, g.weights.embed, 'tied: one array');
    const a = ropeInvFreq(hf.config), b = ropeInvFreq(g.config);
    a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) <= 1e-6 * v, `${what}: inv_freq[${i}] ${v} vs ${b[i]}`));
    if (spec.ropeScaling?.rope_type === 'llama3') assert.is(g.config.ropeScaling?.type, 'factors');
  }
});

test('Q/K permutation: matches convert_hf_to_gguf on a 4-row head, and makes adjacent-pair RoPE (llama.cpp) equal rotate-half RoPE (HF)', () => {
  // reshape(n_head, 2, D/2, cols).swapaxes(1, 2): one head of rows r0 r1 r2 r3 becomes r0 r2 r1 r3.
  const rows = new Uint8Array([0, 1, 2, 3, 10, 11, 12, 13]);
  assert.equal(Array.from(permuteRows(rows, 8, 2)), [0, 2, 1, 3, 10, 12, 11, 13]);
  assert.equal(Array.from(unpermuteRows(permuteRows(rows, 8, 2), 8, 2)), Array.from(rows));
  const D = 8, H = 5, heads = 2, random = rng(7);
  const W = Float32Array.from({ length: heads * D * H }, () => random() * 2 - 1);
  const x = Float32Array.from({ length: H }, () => random() * 2 - 1);
  const Wg = new Float32Array(permuteRows(new Uint8Array(W.buffer.slice(0)), heads * D, heads).buffer);
  const mv = (m: Float32Array) => Array.from({ length: heads * D }, (_, r) => x.reduce((s, xv, c) => s + m[r * H + c] * xv, 0));
  const pos = 3, theta = (i: number) => pos / 10000 ** ((2 * i) / D);
  const hfRope = (q: number[]) => q.map((_, j) => {
    const h = Math.floor(j / D) * D, d = j % D, i = d % (D / 2), c = Math.cos(theta(i)), s = Math.sin(theta(i));
    return d < D / 2 ? q[h + d] * c - q[h + d + D / 2] * s : q[h + d] * c + q[h + d - D / 2] * s;
  });
  const pairRope = (q: number[]) => q.map((_, j) => {
    const h = Math.floor(j / D) * D, d = j % D, i = d >> 1, c = Math.cos(theta(i)), s = Math.sin(theta(i));
    return d % 2 === 0 ? q[h + d] * c - q[h + d + 1] * s : q[h + d] * c + q[h + d - 1] * s;
  });
  const a = hfRope(mv(W)), b = pairRope(mv(Wg));
  for (let h = 0; h < heads; h++) for (let i = 0; i < D / 2; i++) {
    assert.ok(Math.abs(a[h * D + i] - b[h * D + 2 * i]) < 1e-9 && Math.abs(a[h * D + i + D / 2] - b[h * D + 2 * i + 1]) < 1e-9, `head ${h} pair ${i}`);
  }
});

test('HF → GGUF at f16, q8_0, q4_0, q4_k → loaded equals quantize-then-dequantize of the HF weights (incl. fallbacks and permuted Q/K)', async () => {
  const dir = tmp();
  await writeCheckpoint(dir, { modelType: 'llama', hidden: 256, intermediate: 96, heads: 4, kvHeads: 2, layers: 1, vocab: 50 });
  const hf = await loadCheckpoint(nodeModelFiles(dir));
  for (const type of ['f16', 'q8_0', 'q4_0', 'q4_k'] as const) {
    const fell: string[] = [];
    const file = join(dir, `${type}.gguf`);
    writeFileSync(file, concatBytes(ggufChunks(hf.config, hf.weights, { name: 't', type, encode: encodeMatrix, onFallback: (t, _f, to) => fell.push(`${t}:${to}`) })));
    const g = await loadCheckpoint(nodeModelFiles(file));
    const expect = (w: Float32Array, rows: number, cols: number, as = fallbackType(type, cols)) => dequantizeMatrix(quantizeMatrix(as, w, rows, cols));
    const l = hf.weights.layers[0], gl = g.weights.layers[0];
    const D = 64;
    const close = (a: Float32Array, b: Float32Array, what: string) => assert.ok(a.length === b.length && a.every((v, i) => v === b[i]), `${type} ${what}`);
    const f = matrixF32;
    close(f(gl.wq), expect(f(l.wq), 4 * D, 256), 'wq');
    close(f(gl.wk), expect(f(l.wk), 2 * D, 256), 'wk');
    close(f(gl.wDown), expect(f(l.wDown), 256, 96), 'wDown');
    close(f(g.weights.lmHead), expect(f(hf.weights.lmHead), 50, 256), 'lmHead');
    close(gl.inputNorm, l.inputNorm, 'norm stays f32');
    assert.equal(fell, type === 'q4_k' ? ['blk.0.ffn_down.weight:q4_0'] : [], `${type} fallbacks`);
    const header = parseGgufHeader(new Uint8Array(readFileSync(file)), statSync(file).size, file);
    assert.is(header.tensors.get('blk.0.attn_q.weight')!.type, GGML_TYPE[type]);
  }
});

test('quantize fallback follows llama-quantize: q4_k rows not a multiple of 256 → q4_0, not of 32 → f16', () => {
  assert.is(fallbackType('q4_k', 512), 'q4_k');
  assert.is(fallbackType('q4_k', 896), 'q4_0');
  assert.is(fallbackType('q4_0', 48), 'f16');
  assert.is(fallbackType('q8_0', 100), 'f16');
  assert.is(fallbackType('f32', 7), 'f32');
});

// ---- bad files ----

const ARCH_META = (over: Record<string, GgufWriteValue | null> = {}): Array<[string, GgufWriteValue]> => {
  const base: Record<string, GgufWriteValue> = {
    'general.architecture': { type: ValueType.STRING, value: 'llama' },
    'llama.context_length': { type: ValueType.U32, value: 128 },
    'llama.vocab_size': { type: ValueType.U32, value: 4 },
    'llama.embedding_length': { type: ValueType.U32, value: 8 },
    'llama.block_count': { type: ValueType.U32, value: 1 },
    'llama.feed_forward_length': { type: ValueType.U32, value: 16 },
    'llama.attention.head_count': { type: ValueType.U32, value: 2 },
    'llama.attention.layer_norm_rms_epsilon': { type: ValueType.F32, value: 1e-5 },
  };
  for (const [k, v] of Object.entries(over)) { if (v === null) delete base[k]; else base[k] = v; }
  return Object.entries(base);
};

function writeRaw(bytes: Uint8Array): string {
  const file = join(tmp(), 'bad.gguf');
  writeFileSync(file, bytes);
  return file;
}
const loadError = (file: string) => loadCheckpoint(nodeModelFiles(file)).then(() => 'no error', (e: Error) => e.message);

test('bad GGUF: each error names the file and the key or tensor', async () => {
  const { file: good } = await hfAndGguf({ modelType: 'llama' });
  const bytes = new Uint8Array(readFileSync(good));
  const header = parseGgufHeader(bytes, bytes.length, good);
  const cases: Array<[string, Uint8Array, RegExp]> = [];
  const badMagic = bytes.slice(); badMagic[0] = 0x00;
  cases.push(['bad magic', badMagic, /not a GGUF file \(bad magic/]);
  const v1 = bytes.slice(); new DataView(v1.buffer).setUint32(4, 1, true);
  cases.push(['version 1', v1, /unsupported GGUF version 1/]);
  cases.push(['truncated header', bytes.slice(0, header.dataOffset - 40), /: tensor "[^"]+": truncated \(needs/]);
  cases.push(['truncated data', bytes.slice(0, bytes.length - 100), /tensor "output.weight" .* beyond the end of the .*truncated/]);
  cases.push(['empty', new Uint8Array(0), /not a GGUF file/]);
  const hdr = (meta: Array<[string, GgufWriteValue]>, infos: Array<{ name: string; dims: number[]; type: number; offset: number }>, dataBytes = 4096) =>
    concatBytes([encodeGgufHeader(meta, infos), new Uint8Array(dataBytes)]);
  cases.push(['unknown tensor type', hdr(ARCH_META(), [{ name: 'token_embd.weight', dims: [8, 4], type: 14, offset: 0 }]), /tensor "token_embd.weight" has ggml type 14, which Duet does not read/]);
  cases.push(['unknown architecture', hdr(ARCH_META({ 'general.architecture': { type: ValueType.STRING, value: 'gemma2' } }), []), /unsupported architecture "gemma2"/]);
  cases.push(['no architecture', hdr(ARCH_META({ 'general.architecture': null }), []), /metadata "general.architecture" is missing/]);
  cases.push(['missing field', hdr(ARCH_META({ 'llama.block_count': null }), []), /metadata "llama.block_count" is missing/]);
  cases.push(['bad field', hdr(ARCH_META({ 'llama.attention.head_count': { type: ValueType.STRING, value: 'two' } }), []), /metadata "llama.attention.head_count" must be a positive integer/]);
  cases.push(['yarn', hdr(ARCH_META({ 'llama.rope.scaling.type': { type: ValueType.STRING, value: 'yarn' } }), []), /metadata "llama.rope.scaling.type" is "yarn"/]);
  cases.push(['out of bounds', hdr(ARCH_META(), [{ name: 'token_embd.weight', dims: [8, 4000], type: 0, offset: 0 }]), /tensor "token_embd.weight" .* beyond the end/]);
  cases.push(['overlap', hdr(ARCH_META(), [{ name: 'a', dims: [64], type: 0, offset: 0 }, { name: 'b', dims: [8], type: 0, offset: 128 }]), /tensors "a" and "b" overlap/]);
  cases.push(['misaligned', hdr(ARCH_META(), [{ name: 'a', dims: [8], type: 0, offset: 4 }]), /tensor "a" offset 4 is not a multiple of the alignment 32/]);
  cases.push(['partial block', hdr(ARCH_META(), [{ name: 'a', dims: [40, 2], type: 8, offset: 0 }]), /tensor "a" is Q8_0 but its rows of 40 elements are not a multiple of the 32-element block/]);
  cases.push(['duplicate key', hdr([...ARCH_META(), ['llama.block_count', { type: ValueType.U32, value: 2 }]], []), /metadata key "llama.block_count" appears twice/]);
  // A weight of the wrong shape and a missing one, from the good file's own header.
  const shapeMeta: Array<[string, GgufWriteValue]> = [];
  const infos = [...header.tensors.values()].map((t) => ({ name: t.name, dims: [...t.dims], type: t.type, offset: t.offset - header.dataOffset }));
  for (const [key, e] of header.metadata) shapeMeta.push([key, (e.type === ValueType.ARRAY ? { type: e.type, itemType: e.itemType, value: e.value } : { type: e.type, value: e.value }) as GgufWriteValue]);
  const wrongShape = infos.map((t) => t.name === 'blk.1.ffn_up.weight' ? { ...t, dims: [t.dims[1], t.dims[0]] } : t);
  cases.push(['shape mismatch', hdr(shapeMeta, wrongShape, bytes.length), /tensor "blk.1.ffn_up.weight" has dims \[96, 64\], expected \[64, 96\]/]);
  const layersMeta = shapeMeta.map(([k, v]): [string, GgufWriteValue] => [k, k === 'llama.block_count' ? { type: ValueType.U32, value: 1e9 } : v]);
  cases.push(['block_count 1e9 (refused at once, not after sizing a billion layers)', hdr(layersMeta, infos, bytes.length), /metadata "llama.block_count" is 1000000000, but the file has tensors for 2 layers/]);
  const fewer = shapeMeta.map(([k, v]): [string, GgufWriteValue] => [k, k === 'llama.block_count' ? { type: ValueType.U32, value: 1 } : v]);
  cases.push(['block_count below the file\'s layers', hdr(fewer, infos, bytes.length), /"llama.block_count" is 1, but the file has tensors for 2 layers \(layers 1–1 would be silently skipped\)/]);
  cases.push(['missing tensor', hdr(shapeMeta, infos.filter((t) => t.name !== 'blk.0.attn_k.weight'), bytes.length), /tensor "blk.0.attn_k.weight" is missing/]);
  for (const [what, b, re] of cases) {
    const file = writeRaw(b);
    const msg = await loadError(file);
    assert.match(msg, re, `${what}: ${msg}`);
    assert.ok(msg.includes(file), `${what}: names the file (${msg})`);
  }
});

test.run();
