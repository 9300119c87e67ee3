// DuoAttention's gate optimisation. The model is frozen; each (layer, KV head) has a gate α,
// initialised to 1, mixing full and streaming attention. Loss per step: mean squared error between
// the final hidden states of the full-attention model and of the gated model on the rows that
// predict answer tokens, plus reg·Σ|α|. Adam on α (lr 0.02), then α is clamped to [0, 1]. The
// passes run on the model's device (CPU or GPU); the host reads back the loss and the gates'
// gradient once per step.
import type { StreamingWindow } from '../backend/contract.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import type { FillerStyle } from '../tasks/filler.js';
import { Random } from '../tasks/random.js';
import { AdamW } from '../train/adamw.js';
import type { TrainModel } from '../train/model.js';
import { passkeySample, taskSample, type IdentifySample } from './data.js';
import { tokenCounter } from '../eval/evaluate.js';
import type { HeadScorer } from './scorer.js';

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

export async function optimiseGates<T>(model: TrainModel<T>, tokenizer: TextTokenizer, o: DuoOptions): Promise<DuoResult> {
  const { layers, kvHeads, hidden: d } = model.c;
  const k = model.k, dist = model.distill;
  if (!dist) throw new Error('optimiseGates needs a model built with { gated: true }');
  const n = layers * kvHeads;
  const alphas = new Float32Array(n).fill(1);
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
    const T = sample.ids.length;
    // Teacher: full attention.
    model.forward(sample.ids, positions, null);
    k.copy(dist.ref, model.hidden, T * d);
    // Student: gated; MSE over the answer rows.
    model.forward(sample.ids, positions, gates);
    const rowWeights = new Float32Array(T);
    for (const row of sample.answerRows) rowWeights[row] = 1 / (sample.answerRows.length * d);
    k.zero(model.loss, 1);
    k.mse(dist.dh, model.hidden, dist.ref, rowWeights, d, model.loss);
    k.zero(dist.gateGrads, n);
    model.backward(dist.dh, { weights: false, gateGrads: dist.gateGrads });
    const grad = await k.read(dist.gateGrads, n);
    const [mse] = await k.read(model.loss, 1);
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

/** DuoAttention's gates as a head scorer: α per KV head after optimisation. */
export const duoScorer: HeadScorer = {
  name: 'duo',
  async score({ model, tokenizer, style, settings: c, sample, onProgress }) {
    const kinds = c.data === 'words' ? undefined : c.data;
    const counter = tokenCounter(tokenizer);
    const r = await optimiseGates(model, tokenizer, {
      steps: c.steps, lr: c.lr, reg: c.reg, lengths: c.lengths, window: { sink: c.sink, recent: c.recent }, seed: c.seed, style,
      sample: sample ?? (kinds ? (rng, length) => taskSample(tokenizer, rng, length, kinds, style, counter) : undefined),
      onStep: (s, loss, distill) => onProgress?.(s, c.steps, loss, distill),
    });
    return {
      scores: r.alphas,
      options: { steps: c.steps, lr: c.lr, reg: c.reg, data: kinds ? kinds.join(',') : 'words' },
      data: `${kinds ? 'evaluation tasks' : 'synthetic passkeys'}: ${r.data.join('; ')}…`,
      extra: { loss: r.losses, distill_loss: r.distill },
    };
  },
};
