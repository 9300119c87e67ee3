// Locret's retaining heads: the MLP's hand-written backward and the loss gradient against float64
// central differences, scores' shape and determinism, and the weights file (round trip, bad files).
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { LOCRET_JSON, LOCRET_WEIGHTS, loadLocretHeads, type LocretModelShape } from '../src/kv/locret/file.ts';
import { locretLoss, LOCRET_SMOOTHNESS_WEIGHT } from '../src/kv/locret/loss.ts';
import {
  defaultRetainingHidden, initRetainingHeads, retainingBackward, retainingForward, retainingHeadShape,
  type RetainingHeadParams, type RetainingHeads,
} from '../src/kv/locret/retaining-heads.ts';
import { encodeSafetensorsF32 } from '../src/model/safetensors.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { saveLocretHeads } from '../src/node/locret-file.ts';
import { Random } from '../src/tasks/random.ts';

// Odd sizes with GQA: 6 query heads over 3 KV heads, head_dim 5 → in_dim (6 + 2·3)·5 = 60.
const MODEL: LocretModelShape = { modelType: 'llama', numLayers: 3, numHeads: 6, numKvHeads: 3, headDim: 5, hiddenSize: 30 };

const grad = suite('locret gradients');

// Float64 central differences, step 1e-5. Truncation error ~h²·f''' and round-off ~ε·|f|/h are both
// below 1e-10 here, so an analytic gradient must agree to |a − n| ≤ 1e-8 + 1e-6·|n|.
const STEP = 1e-5;
const ABS_TOL = 1e-8, REL_TOL = 1e-6;

interface Problem {
  heads: RetainingHeadParams<Float64Array>[];
  xs: Float64Array[];
  labels: Float64Array[];
  tokens: number;
  lambda: number;
}

function problem(tokens: number, hidden: number, lambda: number, seed: number): Problem {
  const shape = retainingHeadShape(MODEL, hidden);
  const init = initRetainingHeads(shape, 2, seed);
  const rng = new Random(seed + 1);
  const uniform = (n: number, scale: number) => Float64Array.from({ length: n }, () => (2 * rng.next() - 1) * scale);
  return {
    heads: init.layers.map((p) => ({ ...p, fc1: Float64Array.from(p.fc1), fc2: Float64Array.from(p.fc2) })),
    xs: init.layers.map(() => uniform(tokens * shape.inDim, 2)),
    // Labels spread over ±2 so both SmoothL1 branches (|d| < 1 and ≥ 1) occur.
    labels: init.layers.map(() => uniform(tokens * shape.outDim, 2)),
    tokens, lambda,
  };
}

function lossOf(p: Problem): number {
  const layers = p.heads.map((h, l) => ({ scores: retainingForward(h, p.xs[l], p.tokens).scores, labels: p.labels[l] }));
  return locretLoss(layers, p.tokens, MODEL.numKvHeads, p.lambda).loss;
}

/** Analytic gradients of every weight and input value, flattened in a fixed order. */
function analytic(p: Problem, smoothnessGrad = true): Float64Array {
  const fwds = p.heads.map((h, l) => retainingForward(h, p.xs[l], p.tokens));
  const loss = locretLoss(fwds.map((f, l) => ({ scores: f.scores, labels: p.labels[l] })), p.tokens, MODEL.numKvHeads, p.lambda);
  let dScores = loss.grads;
  if (!smoothnessGrad) {
    // The mutation: the data term's gradient only, as if the smoothness term's were forgotten.
    dScores = locretLoss(fwds.map((f, l) => ({ scores: f.scores, labels: p.labels[l] })), p.tokens, MODEL.numKvHeads, 0).grads;
  }
  const out: number[] = [];
  p.heads.forEach((h, l) => {
    const g = retainingBackward(h, p.xs[l], fwds[l], dScores[l]);
    out.push(...g.fc1, ...g.fc2, ...g.x);
  });
  return Float64Array.from(out);
}

function numeric(p: Problem): Float64Array {
  const out: number[] = [];
  const diff = (arr: Float64Array, i: number) => {
    const v = arr[i];
    arr[i] = v + STEP; const up = lossOf(p);
    arr[i] = v - STEP; const down = lossOf(p);
    arr[i] = v;
    return (up - down) / (2 * STEP);
  };
  p.heads.forEach((h, l) => {
    for (const arr of [h.fc1, h.fc2, p.xs[l]]) for (let i = 0; i < arr.length; i++) out.push(diff(arr, i));
  });
  return Float64Array.from(out);
}

/** Indices where analytic and numeric disagree beyond the tolerance. */
function mismatches(a: Float64Array, n: Float64Array): number[] {
  assert.is(a.length, n.length);
  const bad: number[] = [];
  for (let i = 0; i < a.length; i++) if (!(Math.abs(a[i] - n[i]) <= ABS_TOL + REL_TOL * Math.abs(n[i]))) bad.push(i);
  return bad;
}

for (const [tokens, hidden, lambda] of [[7, 5, 0.5], [1, 3, 0.5], [5, 4, LOCRET_SMOOTHNESS_WEIGHT]] as const) {
  grad(`backward + loss match central differences (tokens ${tokens}, hidden ${hidden}, λ ${lambda})`, () => {
    const p = problem(tokens, hidden, lambda, 11 + tokens);
    const a = analytic(p), n = numeric(p);
    assert.equal(mismatches(a, n), []);
    // Not vacuous: the gradients are not all (near) zero.
    assert.ok(n.reduce((m, v) => Math.max(m, Math.abs(v)), 0) > 1e-3);
  });
}

grad('the check catches a mutated gradient', () => {
  const p = problem(7, 5, 0.5, 3);
  const n = numeric(p);
  const a = analytic(p);
  // One weight of each kind nudged by 1e-6 (100× the absolute tolerance) fails.
  const per = p.heads[0].fc1.length + p.heads[0].fc2.length + p.xs[0].length;
  for (const i of [0, p.heads[0].fc1.length + 2, per - 1, per + 17]) {
    const m = Float64Array.from(a);
    m[i] += 1e-6 + 1e-5 * Math.abs(m[i]);
    assert.equal(mismatches(m, n), [i]);
  }
  // Dropping the smoothness term's gradient fails too, so the λ term's gradient is what is checked.
  assert.ok(mismatches(analytic(p, false), n).length > 0);
});

grad('loss values by hand: SmoothL1 (β = 1) mean + λ·adjacent-token MSE', () => {
  // 2 tokens, 1 head: scores [0, 3], labels [0.5, 0] → SmoothL1 [0.125, 2.5], mean 1.3125;
  // smoothness (0 − 3)² / 1 pair = 9.
  const r = locretLoss([{ scores: Float64Array.of(0, 3), labels: Float64Array.of(0.5, 0) }], 2, 1);
  assert.is(r.smoothL1, 1.3125);
  assert.is(r.smoothness, 9);
  assert.is(r.loss, 1.3125 + 0.0025 * 9);
  // Over layers the data term is a mean and the smoothness term a sum (as Locret's train.py).
  const two = locretLoss([{ scores: Float64Array.of(0, 3), labels: Float64Array.of(0.5, 0) }, { scores: Float64Array.of(1, 1), labels: Float64Array.of(1, 1) }], 2, 1);
  assert.is(two.smoothL1, 1.3125 / 2);
  assert.is(two.smoothness, 9);
  assert.throws(() => locretLoss([{ scores: new Float64Array(3), labels: new Float64Array(4) }], 2, 2), /layer 0: scores have 3 values, expected tokens × kvHeads = 2 × 2/);
});

grad.run();

const heads = suite('locret retaining heads');

heads('shape: scores are tokens × KV heads; default hidden is a quarter of the model width, at least 16', () => {
  assert.is(defaultRetainingHidden({ hiddenSize: 64 }), 16);
  assert.is(defaultRetainingHidden({ hiddenSize: 4096 }), 1024);
  const shape = retainingHeadShape(MODEL);
  assert.equal(shape, { inDim: 60, hidden: 16, outDim: 3 });
  const h = initRetainingHeads(shape, MODEL.numLayers, 5);
  assert.is(h.layers.length, 3);
  const x = new Float32Array(9 * 60).map((_, i) => Math.sin(i));
  const f = retainingForward(h.layers[2], x, 9);
  assert.ok(f.scores instanceof Float32Array);
  assert.is(f.scores.length, 9 * 3);
  assert.ok(f.scores.every(Number.isFinite));
  assert.throws(() => retainingForward(h.layers[0], new Float32Array(59), 1), /input has 59 values, expected tokens × inDim = 1 × 60/);
});

heads('deterministic for a seed, different across seeds and layers', () => {
  const shape = retainingHeadShape(MODEL);
  const a = initRetainingHeads(shape, 3, 42), b = initRetainingHeads(shape, 3, 42), c = initRetainingHeads(shape, 3, 43);
  const x = new Float32Array(4 * 60).map((_, i) => Math.cos(i));
  const sa = retainingForward(a.layers[1], x, 4).scores;
  assert.equal(Array.from(sa), Array.from(retainingForward(b.layers[1], x, 4).scores));
  assert.not.equal(Array.from(sa), Array.from(retainingForward(c.layers[1], x, 4).scores));
  assert.not.equal(Array.from(a.layers[0].fc1), Array.from(a.layers[1].fc1));
  // Weights within PyTorch's default Linear bound ±1/√fanIn.
  assert.ok(a.layers[0].fc1.every((w) => Math.abs(w) <= 1 / Math.sqrt(60)));
  assert.ok(a.layers[0].fc2.every((w) => Math.abs(w) <= 1 / Math.sqrt(16)));
});

heads.run();

const file = suite('locret weights file');
let dir = '';
file.before.each(() => { dir = mkdtempSync(join(tmpdir(), 'duet-locret-')); });
file.after.each(() => rmSync(dir, { recursive: true, force: true }));

const META = { modelName: 'odd-test-model', training: { steps: 120, seed: 7, data: 'passkey@512', loss: 0.0123 } };

function sample(): RetainingHeads {
  const h = initRetainingHeads(retainingHeadShape(MODEL), MODEL.numLayers, 9);
  // Values whose bits a lossy path would change: −0, a subnormal, the largest float.
  h.layers[1].fc1[0] = -0; h.layers[1].fc1[1] = 1e-40; h.layers[1].fc1[2] = 3.4028234663852886e38;
  return h;
}

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

/** Rewrites the weights file with `tensors` and makes locret.json's size and hash agree with it. */
function replaceWeights(tensors: Array<{ name: string; shape: number[]; data: Float32Array }>): void {
  const bytes = encodeSafetensorsF32(tensors);
  writeFileSync(join(dir, LOCRET_WEIGHTS), bytes);
  editJson((j) => { j.weights.bytes = bytes.byteLength; j.weights.sha256 = createHash('sha256').update(bytes).digest('hex'); });
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function editJson(edit: (j: any) => void): void {
  const j = JSON.parse(readFileSync(join(dir, LOCRET_JSON), 'utf8'));
  edit(j);
  writeFileSync(join(dir, LOCRET_JSON), JSON.stringify(j));
}

function tensorsOf(h: RetainingHeads) {
  return h.layers.flatMap((p, l) => [
    { name: `layers.${l}.fc1.weight`, shape: [p.hidden, p.inDim], data: p.fc1 },
    { name: `layers.${l}.fc2.weight`, shape: [p.outDim, p.hidden], data: p.fc2 },
  ]);
}

const load = (model: LocretModelShape = MODEL) => loadLocretHeads(nodeModelFiles(dir), model);

async function rejects(p: Promise<unknown>, re: RegExp): Promise<void> {
  try { await p; } catch (e) { assert.match((e as Error).message, re); return; }
  assert.unreachable(`expected an error matching ${re}`);
}

file('round trip is bit-exact and keeps the model and training facts', async () => {
  const h = sample();
  const paths = await saveLocretHeads(dir, h, MODEL, META);
  assert.equal(paths, [join(dir, LOCRET_WEIGHTS), join(dir, LOCRET_JSON)]);
  const r = await load();
  assert.is(r.heads.layers.length, 3);
  r.heads.layers.forEach((p, l) => {
    assert.equal({ inDim: p.inDim, hidden: p.hidden, outDim: p.outDim }, { inDim: 60, hidden: 16, outDim: 3 });
    assert.equal(bits(p.fc1), bits(h.layers[l].fc1));
    assert.equal(bits(p.fc2), bits(h.layers[l].fc2));
  });
  assert.equal(r.training, META.training);
  assert.equal((r.json as { model: unknown }).model, {
    name: 'odd-test-model', model_type: 'llama', num_hidden_layers: 3, num_attention_heads: 6, num_key_value_heads: 3, head_dim: 5, hidden_size: 30,
  });
});

file('saving refuses to overwrite without overwrite: true, and replaces with it', async () => {
  await saveLocretHeads(dir, sample(), MODEL, META);
  const before = readFileSync(join(dir, LOCRET_WEIGHTS));
  const other = initRetainingHeads(retainingHeadShape(MODEL), MODEL.numLayers, 10);
  await rejects(saveLocretHeads(dir, other, MODEL, META), /locret\.safetensors already exists; pass overwrite: true to replace it/);
  assert.equal(readFileSync(join(dir, LOCRET_WEIGHTS)), before);
  unlinkSync(join(dir, LOCRET_WEIGHTS));
  await rejects(saveLocretHeads(dir, other, MODEL, META), /locret\.json already exists; pass overwrite: true/);
  await saveLocretHeads(dir, other, MODEL, META, { overwrite: true });
  assert.equal(bits((await load()).heads.layers[2].fc2), bits(other.layers[2].fc2));
});

file('saving refuses non-finite weights and heads that do not fit the model', async () => {
  const h = sample();
  h.layers[0].fc2[4] = Infinity;
  await rejects(saveLocretHeads(dir, h, MODEL, META), /layers\.0\.fc2\.weight: value 4 is Infinity \(weights must be finite\)/);
  h.layers[0].fc2[4] = NaN;
  await rejects(saveLocretHeads(dir, h, MODEL, META), /value 4 is NaN/);
  await rejects(saveLocretHeads(dir, sample(), { ...MODEL, numLayers: 4 }, META), /retaining heads have 3 layers, the model has 4/);
  await rejects(saveLocretHeads(dir, sample(), MODEL, { ...META, training: { steps: -1, seed: 1 } }), /training\.steps must be a non-negative integer/);
  assert.throws(() => readFileSync(join(dir, LOCRET_JSON)), /ENOENT/);
});

const BAD: Array<[string, () => void, RegExp, LocretModelShape?]> = [
  ['no locret.json', () => unlinkSync(join(dir, LOCRET_JSON)), /locret\.json: missing from .* \(no retaining heads saved for this model\)/],
  ['not JSON', () => writeFileSync(join(dir, LOCRET_JSON), '{"format":'), /locret\.json: invalid JSON/],
  ['wrong format', () => editJson((j) => { j.format = 'something-else'; }), /locret\.json: field "format" is "something-else", expected "duet-locret-retaining-heads"/],
  ['newer version', () => editJson((j) => { j.version = 2; }), /locret\.json: field "version" is 2; this Duet reads version 1/],
  ['missing model.head_dim', () => editJson((j) => { delete j.model.head_dim; }), /locret\.json: missing field "model\.head_dim"/],
  ['missing training', () => editJson((j) => { delete j.training; }), /locret\.json: missing field "training"/],
  ['missing training.seed', () => editJson((j) => { delete j.training.seed; }), /locret\.json: missing field "training\.seed"/],
  ['missing weights.sha256', () => editJson((j) => { delete j.weights.sha256; }), /locret\.json: missing field "weights\.sha256"/],
  ['hidden not an integer', () => editJson((j) => { j.retaining_head.hidden = 2.5; }), /locret\.json: field "retaining_head\.hidden" must be an integer ≥ 1 \(got 2\.5\)/],
  ['another activation', () => editJson((j) => { j.retaining_head.activation = 'gelu'; }), /field "retaining_head\.activation" is "gelu"; only "silu" is implemented/],
  ['trained for a model with other KV heads', () => {}, /locret\.json: field "model\.num_key_value_heads" is 3, but the model has 2 \(trained for another model\?\)/, { ...MODEL, numHeads: 6, numKvHeads: 2 }],
  ['trained for a model with more layers', () => {}, /field "model\.num_hidden_layers" is 3, but the model has 2/, { ...MODEL, numLayers: 2 }],
  ['in_dim disagreeing with the model', () => editJson((j) => { j.retaining_head.in_dim = 61; }), /field "retaining_head\.in_dim" is 61, expected 60 for this model/],
  ['weights file a path out of the folder', () => editJson((j) => { j.weights.file = '../x.safetensors'; }), /field "weights\.file" must be a plain file name in the model folder/],
  ['weights file missing', () => unlinkSync(join(dir, LOCRET_WEIGHTS)), /locret\.safetensors: missing from .* \(named by locret\.json\)/],
  ['weights from another save', () => {
    const b = readFileSync(join(dir, LOCRET_WEIGHTS)); b[b.length - 1] ^= 1; writeFileSync(join(dir, LOCRET_WEIGHTS), b);
  }, /locret\.safetensors: SHA-256 [0-9a-f]{64} does not match locret\.json field "weights\.sha256"/],
  ['weights truncated', () => {
    const b = readFileSync(join(dir, LOCRET_WEIGHTS)); writeFileSync(join(dir, LOCRET_WEIGHTS), b.subarray(0, b.length - 4));
  }, /locret\.safetensors: \d+ bytes, but locret\.json field "weights\.bytes" says \d+/],
  ['a tensor transposed', () => {
    const t = tensorsOf(sample()); t[3] = { ...t[3], shape: [16, 3] }; replaceWeights(t);
  }, /locret\.safetensors: tensor "layers\.1\.fc2\.weight" has shape \[16,3\], expected \[3,16\]/],
  ['a tensor missing', () => replaceWeights(tensorsOf(sample()).filter((t) => t.name !== 'layers.2.fc1.weight')), /locret\.safetensors: missing tensor "layers\.2\.fc1\.weight"/],
  ['an extra tensor', () => {
    const t = tensorsOf(sample()); t.push({ name: 'layers.3.fc1.weight', shape: [1], data: new Float32Array(1) }); replaceWeights(t);
  }, /locret\.safetensors: unexpected tensor "layers\.3\.fc1\.weight" \(the model has 3 layers\)/],
  ['a NaN weight', () => {
    const t = tensorsOf(sample()); t[4].data[7] = NaN; replaceWeights(t);
  }, /locret\.safetensors: tensor "layers\.2\.fc1\.weight": value 7 is NaN \(weights must be finite\)/],
  ['an infinite weight', () => {
    const t = tensorsOf(sample()); t[1].data[0] = -Infinity; replaceWeights(t);
  }, /tensor "layers\.0\.fc2\.weight": value 0 is -Infinity/],
];

for (const [name, spoil, re, model] of BAD) {
  file(`loading rejects: ${name}`, async () => {
    await saveLocretHeads(dir, sample(), MODEL, META);
    await load(); // the unspoiled file loads
    spoil();
    await rejects(load(model), re);
  });
}

file.run();
