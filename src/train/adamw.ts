// AdamW over the flat parameter array, with linear warm-up, cosine decay to a floor, and global
// gradient-norm clipping. Weight decay applies to matrices only (not to norm gains).
import type { NamedTensor } from './model.js';

export interface Schedule { lr: number; warmup: number; steps: number; minLrFraction: number }

export function learningRate(step: number, s: Schedule): number {
  if (step < s.warmup) return (s.lr * (step + 1)) / s.warmup;
  const t = Math.min(1, (step - s.warmup) / Math.max(1, s.steps - s.warmup));
  return s.lr * (s.minLrFraction + (1 - s.minLrFraction) * 0.5 * (1 + Math.cos(Math.PI * t)));
}

/** 1 where weight decay applies (matrices), 0 elsewhere (norm gains), over the flat parameters. */
export function decayMask(n: number, named: Array<NamedTensor<unknown>>): Uint8Array {
  const mask = new Uint8Array(n);
  for (const t of named) if (t.decay) mask.fill(1, t.offset, t.offset + t.shape.reduce((a, b) => a * b, 1));
  return mask;
}

export class AdamW {
  readonly m: Float32Array;
  readonly v: Float32Array;
  step = 0;
  private readonly decayMask: Uint8Array;

  constructor(readonly params: Float32Array, named: Array<NamedTensor<unknown>>, readonly opts = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, clip: 1.0 }) {
    this.m = new Float32Array(params.length);
    this.v = new Float32Array(params.length);
    this.decayMask = new Uint8Array(params.length);
    this.decayMask.set(decayMask(params.length, named));
  }

  /** Applies one update with learning rate lr; returns the gradient norm before clipping. */
  update(grads: Float32Array, lr: number): number {
    const { beta1, beta2, eps, weightDecay, clip } = this.opts;
    let ss = 0;
    for (let i = 0; i < grads.length; i++) ss += grads[i] * grads[i];
    const norm = Math.sqrt(ss);
    const scale = norm > clip ? clip / norm : 1;
    this.step++;
    const c1 = 1 - beta1 ** this.step, c2 = 1 - beta2 ** this.step;
    const p = this.params, m = this.m, v = this.v;
    for (let i = 0; i < p.length; i++) {
      const g = grads[i] * scale;
      m[i] = beta1 * m[i] + (1 - beta1) * g;
      v[i] = beta2 * v[i] + (1 - beta2) * g * g;
      if (this.decayMask[i]) p[i] -= lr * weightDecay * p[i];
      p[i] -= (lr * (m[i] / c1)) / (Math.sqrt(v[i] / c2) + eps);
    }
    return norm;
  }
}
