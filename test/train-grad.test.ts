// Finite-difference checks of every backward pass used in training, and of the whole model's
// gradient. Objective: L = Σ R ⊙ y for a fixed random R, so ∂L/∂y = R. Central differences in f32
// with step 1e-2 on O(1) inputs; tolerance |fd − analytic| ≤ 2e-3 + 2e-2·|analytic|.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Arena } from '../src/train/arena.ts';
import {
  attentionBackward, attentionForward, crossEntropy, linearBackward, linearForward, rmsnormBackward, rmsnormForward, rope,
  swigluBackward, swigluForward,
} from '../src/train/ops.ts';
import { cpuTrainModel, type TrainConfig } from '../src/train/model.ts';
import { Random } from '../src/tasks/random.ts';
import { checkGradient } from './helpers/finite-difference.ts';
import * as ref from './reference/kernels.ts';

let ar: Arena;
const rnd = new Random(42);
function filled(n: number, scale = 1): Float32Array {
  const t = ar.f32(n);
  for (let i = 0; i < n; i++) t[i] = (rnd.next() * 2 - 1) * scale;
  return t;
}
const dot = (a: Float32Array, b: Float32Array) => { let s = 0; for (let i = 0; i < a.length; i++) s += a[i] * b[i]; return s; };

const check = (what: string, param: Float32Array, grad: ArrayLike<number>, objective: () => number, eps = 1e-2, indices?: number[]) =>
  checkGradient(rnd, what, param, grad, objective, eps, indices);

test.before(async () => { ar = await Arena.create(64 << 20); });

test('linear: dx and dW', () => {
  const rows = 5, inD = 7, outD = 6;
  const x = filled(rows * inD), w = filled(outD * inD), y = ar.f32(rows * outD), R = filled(rows * outD);
  const scratch = { wT: ar.f32(inD * outD), dyT: ar.f32(rows * outD), xT: ar.f32(rows * inD) };
  const dx = ar.f32(rows * inD), dw = ar.f32(outD * inD);
  linearBackward(ar, dx, dw, R, x, w, rows, inD, outD, scratch);
  const L = () => { linearForward(ar, y, x, w, rows, inD, outD); return dot(y, R); };
  check('linear dx', x, dx, L);
  check('linear dW', w, dw, L);
});

test('rmsnorm: dx and dg', () => {
  const rows = 3, d = 9;
  const x = filled(rows * d), g = filled(d), y = ar.f32(rows * d), rinv = ar.f32(rows), R = filled(rows * d);
  const L = () => { rmsnormForward(y, rinv, x, g, rows, d, 1e-5); return dot(y, R); };
  L();
  const dx = ar.f32(rows * d), dg = ar.f32(d);
  rmsnormBackward(dx, dg, R, x, rinv, g, rows, d);
  check('rmsnorm dx', x, dx, L);
  check('rmsnorm dg', g, dg, L);
});

test('rope: the inverse rotation is the backward pass', () => {
  const rows = 4, heads = 3, hd = 8;
  const x = filled(rows * heads * hd), R = filled(rows * heads * hd);
  const pos = Int32Array.from([0, 5, 6, 900]);
  const inv = new Float32Array(hd / 2).map((_, i) => 1 / 10000 ** ((2 * i) / hd));
  const dx = Float32Array.from(R);
  rope(dx, rows, heads, hd, pos, inv, true);
  const L = () => { const y = Float32Array.from(x); rope(y, rows, heads, hd, pos, inv); return dot(y, R); };
  check('rope dx', x, dx, L);
});

/** Forward against the float64 masked reference (|Δ| ≤ 1e-4·(1+|ref|)), then dq, dk, dv by finite differences. */
function attentionCase(label: string, dims: { rows: number; heads: number; kvHeads: number; hd: number; scale: number }, window?: { sink: number; recent: number }): void {
  const { rows: T, heads: H, kvHeads: KV, hd } = dims;
  const q = filled(T * H * hd), k = filled(T * KV * hd), v = filled(T * KV * hd), R = filled(T * H * hd);
  const o = ar.f32(T * H * hd), probs = ar.f32(H * T * T);
  const scratch = ar.f32(ar.kernels.trainAttentionScratchFloats(T, hd));
  const L = () => { attentionForward(ar, o, probs, q, k, v, dims, scratch, window); return dot(o, R); };
  L();
  const at = (t: Float32Array) => (h: number, j: number) => t.subarray((j * KV + h) * hd, (j * KV + h + 1) * hd);
  const visible = window ? ref.streamingVisible(window.sink, window.recent) : ref.causalVisible;
  const expected = ref.maskedAttention(q, T, H, KV, hd, 0, dims.scale, at(k), at(v), visible);
  for (let i = 0; i < expected.length; i++) assert.ok(Math.abs(o[i] - expected[i]) <= 1e-4 * (1 + Math.abs(expected[i])), `${label} o[${i}] ${o[i]} vs ${expected[i]}`);
  const dq = ar.f32(q.length), dk = ar.f32(k.length), dv = ar.f32(v.length);
  attentionBackward(ar, dq, dk, dv, R, probs, q, k, v, dims, scratch);
  check(`${label} dq`, q, dq, L);
  check(`${label} dk`, k, dk, L);
  check(`${label} dv`, v, dv, L);
}

test('causal GQA attention: forward matches the reference; dq, dk, dv (group 2, odd length spanning two query blocks)', () => {
  attentionCase('attention', { rows: 71, heads: 4, kvHeads: 2, hd: 6, scale: 1 / Math.sqrt(6) });
});

test('streaming-window attention: forward matches the masked reference; dq, dk, dv', () => {
  attentionCase('windowed attention', { rows: 70, heads: 6, kvHeads: 2, hd: 8, scale: 1 / Math.sqrt(8) }, { sink: 3, recent: 9 });
});

test('gated attention (DuoAttention gates): ∂/∂α through the frozen model', () => {
  const c: TrainConfig = { vocab: 13, hidden: 12, layers: 2, heads: 4, kvHeads: 2, headDim: 6, intermediate: 20, eps: 1e-5, ropeTheta: 10000, maxRows: 24 };
  const m = cpuTrainModel(ar, c, { gated: true });
  m.initialise(5);
  for (const t of m.named) for (let i = 0; i < t.data.length; i++) t.data[i] += (rnd.next() * 2 - 1) * (t.shape.length === 1 ? 0.3 : 0.4);
  const ids = Int32Array.from({ length: 24 }, () => rnd.int(0, 13));
  const positions = Int32Array.from({ length: 24 }, (_, i) => i);
  const alphas = Float32Array.from({ length: 4 }, () => 0.2 + 0.6 * rnd.next());
  const gates = { alphas, window: { sink: 2, recent: 5 } };
  const R = Float32Array.from({ length: 24 * 12 }, () => rnd.next() * 2 - 1);
  const L = () => { m.forward(ids, positions, gates); return dot(m.hidden, R); };
  L();
  const dalpha = new Float32Array(4);
  m.grads.fill(0);
  m.backward(Float32Array.from(R), { weights: false, gateGrads: dalpha });
  assert.ok(m.grads.every((x) => x === 0), 'a frozen backward leaves parameter gradients alone');
  check('gate α', alphas, dalpha, L, 1e-2);
  // α = 1 everywhere is full attention.
  alphas.fill(1);
  m.forward(ids, positions, gates);
  const gatedHidden = Float32Array.from(m.hidden);
  m.forward(ids, positions, null);
  for (let i = 0; i < gatedHidden.length; i++) assert.ok(Math.abs(gatedHidden[i] - m.hidden[i]) < 1e-5);
});

test('swiglu and weighted cross-entropy', () => {
  const n = 11;
  const gate = filled(n, 3), up = filled(n), h = ar.f32(n), R = filled(n);
  const dgate = ar.f32(n), dup = ar.f32(n);
  swigluBackward(dgate, dup, R, gate, up, n);
  const L = () => { swigluForward(h, gate, up, n); return dot(h, R); };
  check('swiglu dgate', gate, dgate, L);
  check('swiglu dup', up, dup, L);
  const rows = 4, V = 5;
  const logits = filled(rows * V, 2), dl = ar.f32(rows * V);
  const targets = Int32Array.from([1, 4, 0, 2]), weights = Float32Array.from([0.5, 0, 1, 0.25]);
  crossEntropy(dl, logits, targets, weights, rows, V);
  check('cross-entropy dlogits', logits, dl, () => crossEntropy(new Float32Array(rows * V), logits, targets, weights, rows, V));
});

test('the whole model: gradient of the loss w.r.t. every tensor kind', () => {
  const c: TrainConfig = { vocab: 13, hidden: 12, layers: 2, heads: 4, kvHeads: 2, headDim: 6, intermediate: 20, eps: 1e-5, ropeTheta: 10000, maxRows: 9 };
  const m = cpuTrainModel(ar, c);
  m.initialise(3);
  for (const t of m.named) for (let i = 0; i < t.data.length; i++) t.data[i] += (rnd.next() * 2 - 1) * (t.shape.length === 1 ? 0.3 : 0.25);
  const ids = Int32Array.from([0, 5, 3, 12, 7, 7, 1, 2, 9]);
  const positions = Int32Array.from([0, 1, 2, 3, 40, 41, 42, 43, 44]); // a PoSE-style jump
  const targets = Int32Array.from([5, 3, 12, 7, 7, 1, 2, 9, 0]);
  const weights = Float32Array.from([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.3, 0.3, 0]);
  m.grads.fill(0);
  m.step(ids, positions, targets, weights);
  const grads = Float32Array.from(m.grads);
  const L = () => { const keep = Float32Array.from(m.grads); m.loss[0] = 0; m.step(ids, positions, targets, weights); m.grads.set(keep); return m.loss[0]; };
  m.named.forEach((t, i) => {
    if (/layers\.0\.|embed|lm_head|model\.norm/.test(t.name)) check(t.name, t.data, grads.subarray(m.gradNamed[i].offset), L, 1e-2);
  });
});

test.run();
