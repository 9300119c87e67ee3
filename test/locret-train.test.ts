// Locret training data and training: labels and retaining-head inputs from the frozen model's
// full-attention run against a float64 reference forward (odd sizes, GQA, qwen2 biases).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { frozenModel } from '../src/identify/frozen.ts';
import { attentionLabels, locretExample } from '../src/kv/locret/labels.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { ropeInvFreq, type ModelConfig } from '../src/model/config.ts';
import { matrixF32 as f, type ModelWeights } from '../src/model/weights.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { Random } from '../src/tasks/random.ts';
import { writeCheckpoint } from './helpers/checkpoint.ts';
import * as k from './reference/kernels.ts';

/** Plain label definition: max over the group's query heads and query rows i ≥ from, i > j. */
function naiveLabels(probs: (h: number, i: number, j: number) => number, rows: number, heads: number, kvHeads: number, prefix: number, from: number): Float64Array {
  const out = new Float64Array(prefix * kvHeads), group = heads / kvHeads;
  for (let j = 0; j < prefix; j++) {
    for (let kvh = 0; kvh < kvHeads; kvh++) {
      let m = -Infinity;
      for (let g = 0; g < group; g++) for (let i = Math.max(from, j + 1); i < rows; i++) m = Math.max(m, probs(kvh * group + g, i, j));
      out[j * kvHeads + kvh] = m;
    }
  }
  return out;
}

const labels = suite('locret labels');

labels('attentionLabels is the max over the group and strictly later voting queries (exact)', () => {
  const rows = 13, heads = 6, kvHeads = 2, r = new Random(3);
  for (const [prefix, from] of [[9, 9], [9, 4], [12, 0], [1, 1]]) {
    const queries = rows - from;
    // Random values everywhere (not a real softmax): the diagonal and rows before `from` must be ignored.
    const tail = Float32Array.from({ length: heads * queries * rows }, () => r.next());
    for (let h = 0; h < heads; h++) for (let i = from; i < rows; i++) tail[(h * queries + i - from) * rows + i] = 5; // i = j
    const got = attentionLabels(tail, { rows, heads, kvHeads, prefix, queriesFrom: from });
    const want = naiveLabels((h, i, j) => tail[(h * queries + i - from) * rows + j], rows, heads, kvHeads, prefix, from);
    assert.equal(Array.from(got), Array.from(Float32Array.from(want)), `prefix ${prefix}, from ${from}`);
    assert.ok(got.every((v) => v < 5), 'a token\'s own query never counts');
  }
});

labels('attentionLabels refuses shapes it cannot label', () => {
  const ok = { rows: 8, heads: 4, kvHeads: 2, prefix: 5, queriesFrom: 5 };
  const n = (d: typeof ok) => d.heads * (d.rows - d.queriesFrom) * d.rows;
  assert.throws(() => attentionLabels(new Float32Array(n(ok) - 1), ok), /expected heads × queries × rows = 4 × 3 × 8/);
  assert.throws(() => attentionLabels(new Float32Array(64), { ...ok, prefix: 8 }), /prefix 8 must be in \[1, rows − 1 = 7\]/);
  assert.throws(() => attentionLabels(new Float32Array(64), { ...ok, prefix: 0 }), /prefix 0/);
  assert.throws(() => attentionLabels(new Float32Array(64), { ...ok, queriesFrom: 6 }), /queriesFrom 6 is after the prefix \(5\)/);
  assert.throws(() => attentionLabels(new Float32Array(64), { ...ok, heads: 5 }), /5 query heads do not split into groups over 2 KV heads/);
});

/** Float64 forward recording each layer's pre-RoPE q, k, v and causal attention probabilities [heads][T][T]. */
function referenceInternals(config: ModelConfig, w: ModelWeights, ids: number[]) {
  const T = ids.length, H = config.hiddenSize, D = config.headDim, nh = config.numHeads, nkv = config.numKvHeads;
  const invFreq = ropeInvFreq(config), positions = ids.map((_, i) => i), group = nh / nkv;
  let x = new Float64Array(T * H);
  const embed = f(w.embed);
  ids.forEach((id, t) => { for (let i = 0; i < H; i++) x[t * H + i] = embed[id * H + i]; });
  const layers: Array<{ q: Float64Array; k: Float64Array; v: Float64Array; probs: Float64Array }> = [];
  for (const lw of w.layers) {
    const xn = k.rmsnorm(x, lw.inputNorm, T, H, config.rmsNormEps);
    const q = k.matmul(xn, f(lw.wq), lw.bq, T, H, nh * D), kk = k.matmul(xn, f(lw.wk), lw.bk, T, H, nkv * D), v = k.matmul(xn, f(lw.wv), lw.bv, T, H, nkv * D);
    const qr = k.rope(q, T, nh, D, positions, invFreq), kr = k.rope(kk, T, nkv, D, positions, invFreq);
    const probs = new Float64Array(nh * T * T), attn = new Float64Array(T * nh * D);
    for (let h = 0; h < nh; h++) {
      const kvh = Math.floor(h / group);
      for (let i = 0; i < T; i++) {
        const s: number[] = [];
        for (let j = 0; j <= i; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += qr[(i * nh + h) * D + d] * kr[(j * nkv + kvh) * D + d];
          s.push(dot / Math.sqrt(D));
        }
        const m = Math.max(...s), e = s.map((z) => Math.exp(z - m)), z = e.reduce((a, b) => a + b, 0);
        e.forEach((p, j) => {
          probs[(h * T + i) * T + j] = p / z;
          for (let d = 0; d < D; d++) attn[(i * nh + h) * D + d] += (p / z) * v[(j * nkv + kvh) * D + d];
        });
      }
    }
    layers.push({ q, k: kk, v, probs });
    const proj = k.matmul(attn, f(lw.wo), null, T, nh * D, H);
    x = x.map((val, i) => val + proj[i]);
    const xn2 = k.rmsnorm(x, lw.postNorm, T, H, config.rmsNormEps);
    const act = k.siluMul(k.matmul(xn2, f(lw.wGate), null, T, H, config.intermediateSize), k.matmul(xn2, f(lw.wUp), null, T, H, config.intermediateSize), T * config.intermediateSize);
    const down = k.matmul(act, f(lw.wDown), null, T, config.intermediateSize, H);
    x = x.map((val, i) => val + down[i]);
  }
  return layers;
}

labels('locretExample: pre-RoPE q, k, v and labels of the frozen model match a float64 forward (GQA 6/2, head_dim 6, qwen2 biases)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'duet-locret-labels-'));
  try {
    await writeCheckpoint(dir, { modelType: 'qwen2', hidden: 18, intermediate: 26, layers: 2, heads: 6, kvHeads: 2, headDim: 6, vocab: 37, seed: 11, scale: 1.2 });
    const { config, weights } = await loadCheckpoint(nodeModelFiles(dir));
    const model = await frozenModel(config, weights, 40);
    const r = new Random(5);
    const ids = Array.from({ length: 29 }, () => r.int(0, 37));
    const ref = referenceInternals(config, weights, ids);
    const { numHeads: nh, numKvHeads: nkv, headDim: D } = config;
    const inDim = (nh + 2 * nkv) * D;
    for (const [prefix, from] of [[21, 21], [21, 6]]) {
      const ex = await locretExample(model, Int32Array.from(ids), prefix, from);
      assert.is(ex.tokens, prefix);
      assert.is(ex.layers.length, 2);
      ex.layers.forEach((layer, l) => {
        assert.is(layer.x.length, prefix * inDim);
        // Float32 through up to two layers against float64: agreement to 2e-5 + 1e-4·|ref|.
        let worstX = 0;
        for (let t = 0; t < prefix; t++) {
          for (let i = 0; i < inDim; i++) {
            const want = i < nh * D ? ref[l].q[t * nh * D + i] : i < (nh + nkv) * D ? ref[l].k[t * nkv * D + i - nh * D] : ref[l].v[t * nkv * D + i - (nh + nkv) * D];
            worstX = Math.max(worstX, Math.abs(layer.x[t * inDim + i] - want) / (2e-5 + 1e-4 * Math.abs(want)));
          }
        }
        assert.ok(worstX <= 1, `layer ${l}: q/k/v off by ${worstX.toFixed(2)}× the tolerance`);
        const T = ids.length;
        const want = naiveLabels((h, i, j) => ref[l].probs[(h * T + i) * T + j], T, nh, nkv, prefix, from);
        const diff = k.maxAbsDiff(layer.labels, want);
        assert.ok(diff <= 1e-5, `layer ${l}, prefix ${prefix}, from ${from}: labels off by ${diff}`);
        assert.ok(layer.labels.every((v) => v > 0 && v <= 1));
      });
    }
    const err = await locretExample(model, Int32Array.from(ids), 29).then(() => null, (e: Error) => e);
    assert.match(err?.message ?? '', /prefix 29 must be in \[1, rows − 1 = 28\]/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

labels.run();
