// DuoAttention's gate optimisation. The model is frozen; each (layer, KV head) has a gate α,
// initialised to 1, mixing full and streaming attention. Loss per step: mean squared error between
// the final hidden states of the full-attention model and of the gated model on the rows that
// predict answer tokens, plus reg·Σ|α|. Adam on α (lr 0.02), then α is clamped to [0, 1].
import type { StreamingWindow } from '../engine/backend.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import type { FillerStyle } from '../tasks/filler.js';
import { Random } from '../tasks/random.js';
import { AdamW } from '../train/adamw.js';
import type { TrainModel } from '../train/model.js';
import { passkeySample, type IdentifySample } from './data.js';

export interface DuoOptions {
  steps: number;
  lr: number;
  reg: number;
  lengths: [number, number];
  window: StreamingWindow;
  seed: number;
  style: FillerStyle;
  passkeys?: number;
  onStep?: (step: number, loss: number, distill: number) => void;
  /** Training sequences (default: DuoAttention-style passkey haystacks). */
  sample?: (r: Random, length: number) => IdentifySample;
}

export interface DuoResult { alphas: number[][]; losses: number[]; distill: number[]; data: string[] }

export function optimiseGates(model: TrainModel, tokenizer: TextTokenizer, o: DuoOptions): DuoResult {
  const { layers, kvHeads, hidden: d } = model.c;
  const n = layers * kvHeads;
  const alphas = new Float32Array(n).fill(1);
  const grad = new Float32Array(n);
  // Plain Adam on the gates: no weight decay (the L1 term regularises), no clipping.
  const adam = new AdamW(alphas, [], { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, clip: Infinity });
  const gates = { alphas, window: o.window };
  const losses: number[] = [], distill: number[] = [], data: string[] = [];
  for (let step = 0; step < o.steps; step++) {
    const r = new Random(o.seed * 100_003 + step);
    const length = r.int(o.lengths[0], o.lengths[1] + 1);
    // DuoAttention uses 10 passkeys at 1K–32K tokens; short contexts get fewer (one per ~400 tokens, 1–4).
    const sample = o.sample ? o.sample(r, length) : passkeySample(tokenizer, r, length, o.style, o.passkeys ?? Math.min(4, Math.max(1, Math.floor(length / 400))));
    if (step < 3) data.push(sample.description);
    const positions = Int32Array.from(sample.ids, (_, i) => i);
    // Teacher: full attention.
    model.forward(sample.ids, positions, null);
    const rows = sample.answerRows;
    const ref = new Float32Array(rows.length * d);
    rows.forEach((row, k) => ref.set(model.hidden.subarray(row * d, (row + 1) * d), k * d));
    // Student: gated.
    model.forward(sample.ids, positions, gates);
    const h = model.hidden;
    const dh = new Float32Array(h.length);
    let mse = 0;
    const norm = 1 / (rows.length * d);
    rows.forEach((row, k) => {
      for (let i = 0; i < d; i++) {
        const diff = h[row * d + i] - ref[k * d + i];
        mse += diff * diff * norm;
        dh[row * d + i] = 2 * diff * norm;
      }
    });
    grad.fill(0);
    model.backward(dh, { weights: false, gateGrads: grad });
    let l1 = 0;
    for (let i = 0; i < n; i++) { l1 += Math.abs(alphas[i]); grad[i] += o.reg * Math.sign(alphas[i]); }
    adam.update(grad, o.lr);
    for (let i = 0; i < n; i++) alphas[i] = Math.min(1, Math.max(0, alphas[i]));
    const t = step + 1;
    losses.push(mse + o.reg * l1);
    distill.push(mse);
    o.onStep?.(t, mse + o.reg * l1, mse);
  }
  return { alphas: Array.from({ length: layers }, (_, l) => Array.from(alphas.subarray(l * kvHeads, (l + 1) * kvHeads))), losses, distill, data };
}
