// DHA conversion pieces: head similarity (Gram matrices under the attention-input covariance),
// the adaptive allocation under a KV budget, the GQA mean-pool baseline's groups, and the fusion
// parameterisation with its gradients (finite differences as in train-grad.test.ts: central, f32,
// |fd − analytic| ≤ 2e-3 + 2e-2·|analytic|).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { allocateHeads, budgetHeads, groupsLayout, type HeadGroups } from '../src/dha/allocate.ts';
import { dhaCacheHeads, dhaConfigJson, parseDhaConfig } from '../src/dha/config.ts';
import { HeadFusion, expandHeads, expandHeadsBackward, fusionConstraint } from '../src/dha/fusion.ts';
import { meanPoolGroups, poolHeads } from '../src/dha/meanpool.ts';
import { accumulateCovariance, headGram, measureHeads, mergeCost, type LayerGram } from '../src/dha/similarity.ts';
import { Arena } from '../src/train/arena.ts';
import { cpuTrainModel, type TrainConfig } from '../src/train/model.ts';
import { Random } from '../src/tasks/random.ts';
import { checkGradient } from './helpers/finite-difference.ts';

const rnd = new Random(7);
const randoms = (n: number, scale = 1) => Float32Array.from({ length: n }, () => (rnd.next() * 2 - 1) * scale);
const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => { let s = 0; for (let i = 0; i < a.length; i++) s += a[i] * b[i]; return s; };

const check = (what: string, param: Float32Array, grad: ArrayLike<number>, objective: () => number, eps = 1e-2, indices?: number[]) =>
  checkGradient(rnd, what, param, grad, objective, eps, indices);

// Inputs x ∈ R^d of an anisotropic distribution and heads W_h [hd][d].
const d = 5, hd = 3, H = 4;
const X = (() => { const rows = 50, x = randoms(rows * d); for (let t = 0; t < rows; t++) x[t * d] *= 4; return { x, rows }; })();
const covariance = () => { const s = new Float64Array(d * d); accumulateCovariance(s, X.x, X.rows, d); return s.map((v) => v / X.rows); };
const headOut = (w: Float32Array, h: number, t: number) => Array.from({ length: hd }, (_, r) => { let s = 0; for (let a = 0; a < d; a++) s += w[(h * hd + r) * d + a] * X.x[t * d + a]; return s; });

test('head Gram matrix: M_ij is the mean inner product of the heads\' outputs; mergeCost is the output error of the group mean', () => {
  const w = randoms(H * hd * d);
  const gram = headGram(w, covariance(), H, hd, d);
  for (let i = 0; i < H; i++) for (let j = 0; j < H; j++) {
    let s = 0;
    for (let t = 0; t < X.rows; t++) s += dot(headOut(w, i, t), headOut(w, j, t));
    s /= X.rows;
    assert.ok(Math.abs(gram[i * H + j] - s) <= 1e-9 * (1 + Math.abs(s)), `M[${i}][${j}] ${gram[i * H + j]} vs ${s}`);
  }
  const group = [0, 2, 3], energy = 0.7;
  let err = 0;
  for (let t = 0; t < X.rows; t++) {
    const outs = group.map((h) => headOut(w, h, t));
    const mean = outs[0].map((_, r) => outs.reduce((a, o) => a + o[r], 0) / outs.length);
    for (const o of outs) for (let r = 0; r < hd; r++) err += (o[r] - mean[r]) ** 2;
  }
  err /= X.rows * energy;
  assert.ok(Math.abs(mergeCost(gram, H, group, energy) - err) <= 1e-9 * (1 + err));
  assert.is(mergeCost(gram, H, [1], energy), 0);
});

test('budgets: kept heads = budget·2·L·H exactly; out of range, fractional and sub-minimum budgets are refused', () => {
  assert.is(budgetHeads(0.5, 3, 4), 12);
  assert.is(budgetHeads(0.375, 3, 4), 9);
  assert.is(budgetHeads(0.25, 3, 4), 6);
  assert.throws(() => budgetHeads(0, 3, 4), /above 0 and below 1/);
  assert.throws(() => budgetHeads(1, 3, 4), /above 0 and below 1/);
  assert.throws(() => budgetHeads(0.3, 3, 4), /multiple of 1\/24 \(e\.g\. 0\.2916/);
  assert.throws(() => budgetHeads(0.125, 3, 4), /fewer than one key and one value head per layer \(6\); the smallest budget is 0\.25/);
});

/** Grams of heads built to be alike in chosen places: layer 0's keys 0≈1 and 2≈3, layer 1's values all alike. */
function structuredGrams(layers: number): LayerGram[] {
  const sigma = covariance();
  return Array.from({ length: layers }, (_, l) => {
    const make = (alike: number[][]) => {
      const w = randoms(H * hd * d);
      for (const g of alike) for (const h of g.slice(1)) for (let e = 0; e < hd * d; e++) w[h * hd * d + e] = w[g[0] * hd * d + e] + 0.01 * (rnd.next() - 0.5);
      return headGram(w, sigma, H, hd, d);
    };
    return { key: make(l === 0 ? [[0, 1], [2, 3]] : []), value: make(l === 1 ? [[0, 1, 2, 3]] : []) };
  });
}

test('allocation: meets every budget exactly (0.375 too), is adaptive, deterministic, and its layout validates', () => {
  const grams = structuredGrams(3);
  for (const budget of [0.75, 0.5, 0.375, 0.25]) {
    const { groups, merges } = allocateHeads(grams, H, budget);
    const layout = groupsLayout(groups, H);
    assert.is(dhaCacheHeads(layout), budget * 2 * 3 * H, `budget ${budget}`);
    assert.is(merges.length, 2 * 3 * H - budget * 2 * 3 * H);
    // Round trip through the config.json validator.
    assert.equal(parseDhaConfig(JSON.parse(JSON.stringify(dhaConfigJson(layout))), 3, H), layout);
    for (const l of layout.layers) assert.ok(l.keyHeads >= 1 && l.valueHeads >= 1);
    assert.equal(allocateHeads(grams, H, budget), { groups, merges }, 'deterministic');
  }
  // The near-duplicate heads go first: 2 key merges in layer 0, 3 value merges in layer 1.
  const { groups, merges } = allocateHeads(grams, H, 19 / 24);
  assert.equal(merges.map((m) => `${m.layer}${m.side[0]}`).sort(), ['0k', '0k', '1v', '1v', '1v']);
  assert.equal(groups[0].key, [[0, 1], [2, 3]]);
  assert.equal(groups[1].value, [[0, 1, 2, 3]]);
  assert.equal(groups[2], { key: [[0], [1], [2], [3]], value: [[0], [1], [2], [3]] });
  // At 50 % the layers differ (not uniform GQA).
  const half = groupsLayout(allocateHeads(grams, H, 0.5).groups, H);
  assert.ok(new Set(half.layers.map((l) => `${l.keyHeads},${l.valueHeads}`)).size > 1, JSON.stringify(half));
});

test('GQA mean-pool baseline: contiguous equal groups, and budgets it cannot express are refused naming DHA', () => {
  assert.equal(meanPoolGroups(2, 4, 0.5), [{ key: [[0, 1], [2, 3]], value: [[0, 1], [2, 3]] }, { key: [[0, 1], [2, 3]], value: [[0, 1], [2, 3]] }]);
  assert.equal(meanPoolGroups(1, 4, 0.25)[0].key, [[0, 1, 2, 3]]);
  assert.throws(() => meanPoolGroups(3, 4, 0.375), /1\.5 key and value heads per layer.*only DHA's per-layer allocation \(--method dha\)/);
  assert.throws(() => meanPoolGroups(1, 6, 5 / 12), /budgets 0\.16666.*, 0\.3333.*, 0\.5/);
  const w = Float32Array.from({ length: 4 * 2 }, (_, i) => i);
  assert.equal([...poolHeads(w, [[0, 3], [1], [2]], 2)], [3, 4, 2, 3, 4, 5]);
});

test('expandHeads: ω = I gives the base back exactly; ∂/∂base and ∂/∂ω by finite differences', () => {
  const block = 7;
  const support = [[0, 2], [1], [0, 2], [3]];
  const base = randoms(H * block), mix = new Float32Array(H * H);
  for (let h = 0; h < H; h++) mix[h * H + h] = 1;
  const out = new Float32Array(H * block);
  expandHeads(out, mix, support, base, block);
  assert.equal([...out], [...base]);
  for (const h of [0, 2]) for (const j of [0, 2]) mix[h * H + j] += (rnd.next() - 0.5) * 0.6;
  const R = randoms(H * block);
  const dBase = new Float32Array(H * block), dMix = new Float32Array(H * H);
  expandHeadsBackward(R, mix, support, base, block, dBase, dMix);
  const L = () => { expandHeads(out, mix, support, base, block); return dot(out, R); };
  check('expand dBase', base, dBase, L);
  check('expand dMix', mix, dMix, L, 1e-2, [0, 2, 5, 8, 10, 15]);
  // Entries outside a head's support get no gradient (they never enter the expansion).
  for (const i of [1, 3, 4, 6, 7]) assert.is(dMix[i], 0);
});

test('fusion constraint: 0 exactly when each group\'s heads are equal; its gradient by finite differences', () => {
  const sigma = covariance();
  const w = randoms(H * hd * d, 0.5);
  const groups = [[0, 3], [1, 2]];
  const c = fusionConstraint(w, groups, sigma, hd, d, 0.3);
  assert.ok(c > 0);
  const grad = new Float32Array(w.length);
  fusionConstraint(w, groups, sigma, hd, d, 0.3, grad, 1.7);
  check('constraint dW', w, grad, () => 1.7 * fusionConstraint(w, groups, sigma, hd, d, 0.3), 1e-2);
  const equal = Float32Array.from(w);
  for (const [a, b] of groups) equal.copyWithin(b * hd * d, a * hd * d, (a + 1) * hd * d);
  assert.is(fusionConstraint(equal, groups, sigma, hd, d, 0.3), 0);
  assert.is(fusionConstraint(w, [[0], [1], [2], [3]], sigma, hd, d, 0.3), 0);
});

const tiny: TrainConfig = { vocab: 13, hidden: 12, layers: 2, heads: 4, kvHeads: 4, headDim: 6, intermediate: 20, eps: 1e-5, ropeTheta: 10000, maxRows: 9 };
const seq = {
  ids: Int32Array.from([0, 5, 3, 12, 7, 7, 1, 2, 9]), positions: Int32Array.from([0, 1, 2, 3, 4, 5, 6, 7, 8]),
  targets: Int32Array.from([5, 3, 12, 7, 7, 1, 2, 9, 0]), weights: Float32Array.from([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.3, 0.3, 0]),
};
const groupsTiny: HeadGroups[] = [{ key: [[0, 2], [1], [3]], value: [[0, 1, 2, 3]] }, { key: [[0, 1], [2, 3]], value: [[1], [0, 3], [2]] }];

async function tinyModel() {
  const m = cpuTrainModel(await Arena.create(32 << 20), tiny);
  m.initialise(3);
  for (const t of m.named) for (let i = 0; i < t.data.length; i++) t.data[i] += (rnd.next() * 2 - 1) * (t.shape.length === 1 ? 0.3 : 0.25);
  return m;
}
const lossOf = (m: Awaited<ReturnType<typeof tinyModel>>) => { m.grads.fill(0); m.loss[0] = 0; m.step(seq.ids, seq.positions, seq.targets, seq.weights); return m.loss[0]; };

test('fusion step 0 is the original model exactly; gradients wrt ω, the base heads and the multiplier terms by finite differences', async () => {
  const m = await tinyModel();
  const original = Float32Array.from(m.params);
  const lossBefore = lossOf(m);
  const { sigma } = measureHeads(m, [seq]);
  const f = HeadFusion.fusion(m, groupsTiny, sigma);
  f.writeModel(m);
  assert.equal([...m.params], [...original], 'identity fusion writes the same parameters');
  assert.is(lossOf(m), lossBefore, 'step 0 loss equals the original loss');
  // Make the fusion non-trivial, with multipliers on.
  f.sides.forEach((ls) => (['key', 'value'] as const).forEach((s) => ls[s].support.forEach((sup, h) => { for (const j of sup) ls[s].mix[h * tiny.heads + j] += (rnd.next() - 0.5) * 0.5; })));
  f.lambda.fill(0.8); f.phi.fill(0.5);
  // Targets below and above c: the gap c − t changes sign between sides.
  const targets = Float64Array.from(f.constraints(), (c, i) => c * (i % 2 ? 1.3 : 0.4));
  const objective = () => { f.writeModel(m); const lm = lossOf(m); const c = f.constraints(); let p = 0; for (let i = 0; i < c.length; i++) p += f.lambda[i] * (c[i] - targets[i]) + f.phi[i] * (c[i] - targets[i]) ** 2; return lm + p; };
  const before = objective();
  const g = f.gradients(m.grads, targets);
  assert.ok(Math.abs(lossOf(m) + g.penalty - before) <= 1e-5 * before, 'gradients() reports the penalty of the objective');
  f.writeModel(m);
  lossOf(m);
  const mixIdx: number[] = [];
  f.sides.forEach((ls, l) => (['key', 'value'] as const).forEach((s, k) => ls[s].support.forEach((sup, h) => { for (const j of sup) mixIdx.push((l * 2 + k) * 16 + h * 4 + j); })));
  check('ω', f.mix, g.mix, objective, 1e-2, mixIdx);
  const kOff = m.named.find((t) => t.name === 'model.layers.0.self_attn.k_proj.weight')!.offset;
  const vOff = m.named.find((t) => t.name === 'model.layers.1.self_attn.v_proj.weight')!.offset;
  const qOff = m.named.find((t) => t.name === 'model.layers.1.self_attn.q_proj.weight')!.offset;
  const pick = (off: number, n: number) => Array.from({ length: 12 }, () => off + rnd.int(0, n));
  check('base k_proj', f.params, g.params, objective, 1e-2, pick(kOff, 4 * 6 * 12));
  check('base v_proj', f.params, g.params, objective, 1e-2, pick(vOff, 4 * 6 * 12));
  check('q_proj (untouched by the fusion)', f.params, g.params, objective, 1e-2, pick(qOff, 4 * 6 * 12));
});

test('multiplier ascent: λ += η·(c − t), φ += η·(c − t)²', async () => {
  const m = await tinyModel();
  const { sigma } = measureHeads(m, [seq]);
  const f = HeadFusion.fusion(m, groupsTiny, sigma);
  const c = Float64Array.from([0.5, 0.2, 0.1, 0.4]), t = Float64Array.from([0.3, 0.4, 0, 0.4]);
  f.ascend(c, 2, t);
  f.ascend(c, 2, t);
  assert.equal([...f.lambda].map((x) => +x.toFixed(12)), [0.8, -0.8, 0.4, 0]);
  assert.equal([...f.phi].map((x) => +x.toFixed(12)), [0.16, 0.16, 0.04, 0]);
});

test('collapse: one head per group (the mean of the fused heads); the tied model shares K/V rows and sums their gradients', async () => {
  const m = await tinyModel();
  const { sigma } = measureHeads(m, [seq]);
  const f = HeadFusion.fusion(m, groupsTiny, sigma);
  const kExpanded = f.expanded(0, 'key');
  const tied = f.collapse(m);
  const tensors = tied.checkpointTensors(m.named);
  const k0 = tensors.find((t) => t.name === 'model.layers.0.self_attn.k_proj.weight')!;
  const v0 = tensors.find((t) => t.name === 'model.layers.0.self_attn.v_proj.weight')!;
  assert.equal(k0.shape, [3 * 6, 12]);
  assert.equal(v0.shape, [1 * 6, 12]);
  assert.equal([...k0.data], [...poolHeads(kExpanded, [[0, 2], [1], [3]], 72)]);
  assert.is(tensors.length, m.named.length);
  tied.writeModel(m);
  // Query heads 0 and 2 read the same key rows; all four the same value rows.
  const wk = m.p.layers[0].wk, wv = m.p.layers[0].wv, B = 72;
  assert.equal([...wk.subarray(0, B)], [...wk.subarray(2 * B, 3 * B)]);
  for (const h of [1, 2, 3]) assert.equal([...wv.subarray(h * B, (h + 1) * B)], [...wv.subarray(0, B)]);
  // The tied gradient is the finite difference of the loss wrt a kept head's weights.
  lossOf(m);
  const g = tied.gradients(m.grads);
  assert.is(g.mix.every((x) => x === 0), true, 'ω is fixed when tied');
  const kOff = m.named.find((t) => t.name === 'model.layers.0.self_attn.k_proj.weight')!.offset;
  const vOff = m.named.find((t) => t.name === 'model.layers.0.self_attn.v_proj.weight')!.offset;
  const objective = () => { tied.writeModel(m); return lossOf(m); };
  check('tied k head 0 (query heads 0, 2)', tied.params, g.params, objective, 1e-2, Array.from({ length: 10 }, () => kOff + rnd.int(0, B)));
  check('tied v head 0 (all query heads)', tied.params, g.params, objective, 1e-2, Array.from({ length: 10 }, () => vOff + rnd.int(0, B)));
  // Rows past the kept heads are unused: no gradient.
  assert.ok(g.params.subarray(vOff + B, vOff + 4 * B).every((x) => x === 0));
});

test('fusion refuses a non-multi-head model and groups that are not a partition', async () => {
  const gqa = cpuTrainModel(await Arena.create(16 << 20), { ...tiny, kvHeads: 2 });
  assert.throws(() => HeadFusion.fusion(gqa, groupsTiny, []), /multi-head model: num_key_value_heads 2 ≠ num_attention_heads 4/);
  const m = await tinyModel();
  const { sigma } = measureHeads(m, [seq]);
  assert.throws(() => HeadFusion.fusion(m, [{ key: [[0, 1], [1, 2, 3]], value: [[0, 1, 2, 3]] }, groupsTiny[1]], sigma), /layer 0 key head 1 is in two groups/);
  assert.throws(() => HeadFusion.fusion(m, [{ key: [[0, 1], [3]], value: [[0, 1, 2, 3]] }, groupsTiny[1]], sigma), /leave a head out/);
});

test.run();
