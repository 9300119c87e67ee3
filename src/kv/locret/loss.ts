// Locret's training loss for the retaining heads, as its train.py computes it for one sequence:
//
//   loss = (1 / (L·K·T)) · Σ_l Σ_h Σ_t SmoothL1(s[l][t,h] − y[l][t,h])
//        + λ · Σ_l (1 / (K·(T−1))) · Σ_h Σ_{t<T−1} (s[l][t,h] − s[l][t+1,h])²
//
// SmoothL1 with β = 1 (PyTorch's default): ½d² where |d| < 1, |d| − ½ elsewhere. The data term is the
// mean over layers, KV heads and tokens. The smoothness term is Locret's MSE between each predicted
// score and the next token's score of the same head (`mse_loss(s[:, :-1], s[:, 1:])` on a
// [KV head, token] tensor) — the mean within a layer, *summed* over layers, weighted λ = 0.0025. It
// acts on predictions only, never on labels. With fewer than two tokens it is 0 (PyTorch would
// give NaN for the mean of nothing).
//
// Scores and labels are token-major (t·K + h), as retainingForward returns them.
import type { Vec } from './retaining-heads.js';

export const LOCRET_SMOOTHNESS_WEIGHT = 0.0025;

export interface LayerScores<A extends Vec = Float32Array> {
  /** Predicted scores, tokens × kvHeads. */
  scores: A;
  /** Labels (max attention later queries pay to each token), tokens × kvHeads. */
  labels: A;
}

export interface LocretLoss<A extends Vec = Float32Array> {
  loss: number;
  /** The mean SmoothL1 term. */
  smoothL1: number;
  /** The smoothness term before λ (summed over layers). */
  smoothness: number;
  /** d loss / d scores, one array per layer. */
  grads: A[];
}

function like<A extends Vec>(a: A, n: number): A {
  return (a instanceof Float64Array ? new Float64Array(n) : new Float32Array(n)) as A;
}

/** The loss over all layers of one sequence of `tokens` tokens with `kvHeads` scores each. */
export function locretLoss<A extends Vec>(layers: LayerScores<A>[], tokens: number, kvHeads: number, lambda = LOCRET_SMOOTHNESS_WEIGHT): LocretLoss<A> {
  if (layers.length === 0) throw new Error('locretLoss needs at least one layer');
  if (!Number.isInteger(tokens) || tokens < 1) throw new Error(`tokens must be a positive integer (got ${tokens})`);
  if (!Number.isInteger(kvHeads) || kvHeads < 1) throw new Error(`kvHeads must be a positive integer (got ${kvHeads})`);
  const n = tokens * kvHeads;
  const dataScale = 1 / (layers.length * n);
  const pairs = (tokens - 1) * kvHeads;
  const smoothScale = pairs > 0 ? 1 / pairs : 0;
  let sl1 = 0, smooth = 0;
  const grads: A[] = [];
  layers.forEach(({ scores: s, labels: y }, l) => {
    if (s.length !== n) throw new Error(`layer ${l}: scores have ${s.length} values, expected tokens × kvHeads = ${tokens} × ${kvHeads}`);
    if (y.length !== n) throw new Error(`layer ${l}: labels have ${y.length} values, expected tokens × kvHeads = ${tokens} × ${kvHeads}`);
    const g = like(s, n);
    for (let i = 0; i < n; i++) {
      const d = s[i] - y[i];
      const a = Math.abs(d);
      sl1 += a < 1 ? 0.5 * d * d : a - 0.5;
      g[i] = (a < 1 ? d : Math.sign(d)) * dataScale;
    }
    let layerSmooth = 0;
    for (let t = 0; t + 1 < tokens; t++) {
      for (let h = 0; h < kvHeads; h++) {
        const i = t * kvHeads + h, j = i + kvHeads;
        const d = s[i] - s[j];
        layerSmooth += d * d;
        const gd = 2 * d * smoothScale * lambda;
        g[i] += gd;
        g[j] -= gd;
      }
    }
    smooth += layerSmooth * smoothScale;
    grads.push(g);
  });
  const smoothL1 = sl1 * dataScale;
  return { loss: smoothL1 + lambda * smooth, smoothL1, smoothness: smooth, grads };
}
