// DuoAttention's gate optimisation. The model is frozen; each (layer, KV head) has a gate α,
// initialised to 1, mixing full and streaming attention. Loss per step: mean squared error between
// the final hidden states of the full-attention model and of the gated model on the rows that
// predict answer tokens, plus reg·Σ|α|. With ties (a DHA model's query heads that share a key
// head, which the runtime streams together) each tie has one gate: the heads' gradients add up, and
// the L1 term counts the gate once per head, so Σ|α| is the untied objective restricted to ties. Adam on α (lr 0.02), then α is clamped to [0, 1]. The
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
  /** Per (layer, KV head) the gate it shares (ScorerInput.ties); default: a gate each. */
  ties?: Int32Array;
}

export interface DuoResult { alphas: number[][]; losses: number[]; distill: number[]; data: string[] }

export async function optimiseGates<T>(model: TrainModel<T>, tokenizer: TextTokenizer, o: DuoOptions): Promise<DuoResult> {
  const { layers, kvHeads, hidden: d } = model.c;
  const k = model.k, dist = model.distill;
  if (!dist) throw new Error('optimiseGates needs a model built with { gated: true }');
  const n = layers * kvHeads;
  const ties = o.ties ?? Int32Array.from({ length: n }, (_, i) => i);
  if (ties.length !== n) throw new RangeError(`gate ties: ${ties.length} given for ${n} (layer, KV head) gates`);
  const m = Math.max(0, ...ties) + 1;
  const free = new Float32Array(m).fill(1), heads = new Float32Array(m);
  for (const t of ties) heads[t]++;
  if (heads.some((c) => c === 0)) throw new RangeError('gate ties: every tie from 0 to the largest must hold a head');
  const alphas = new Float32Array(n).fill(1);
  // Plain Adam on the gates: no weight decay (the L1 term regularises), no clipping.
  const adam = new AdamW(free, [], { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, clip: Infinity });
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
    const headGrad = await k.read(dist.gateGrads, n);
    const [mse] = await k.read(model.loss, 1);
    const grad = new Float32Array(m);
    for (let i = 0; i < n; i++) grad[ties[i]] += headGrad[i];
    let l1 = 0;
    for (let j = 0; j < m; j++) { l1 += heads[j] * Math.abs(free[j]); grad[j] += o.reg * heads[j] * Math.sign(free[j]); }
    adam.update(grad, o.lr);
    for (let j = 0; j < m; j++) free[j] = Math.min(1, Math.max(0, free[j]));
    for (let i = 0; i < n; i++) alphas[i] = free[ties[i]];
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
  async score({ model, tokenizer, style, settings: c, sample, ties, onProgress }) {
    const kinds = c.data === 'words' ? undefined : c.data;
    const counter = tokenCounter(tokenizer);
    const r = await optimiseGates(model, tokenizer, {
      steps: c.steps, lr: c.lr, reg: c.reg, lengths: c.lengths, window: { sink: c.sink, recent: c.recent }, seed: c.seed, style,
      sample: sample ?? (kinds ? (rng, length) => taskSample(tokenizer, rng, length, kinds, style, counter) : undefined), ties,
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
