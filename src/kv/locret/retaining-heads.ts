// Locret's retaining heads (Huang et al., arXiv 2410.01805): one small MLP per attention layer that
// reads the pre-RoPE q, k and v projections of a token and predicts a causal importance score (CIS)
// for that token per KV head, at the moment the token is written to the cache.
//
//   x = [q (numHeads·headDim); k (numKvHeads·headDim); v (numKvHeads·headDim)]
//   score = fc2 · silu(fc1 · x)          fc1: hidden × inDim, fc2: numKvHeads × hidden, no biases
//
// As in Locret's modeling code, fc1 has no bias and the activation is the model's hidden_act, which is
// SiLU for every architecture Duet loads (llama, mistral, qwen2). We give fc2 no bias either.
// Weights are row-major [out][in], the layout of a PyTorch Linear weight. Scores are token-major:
// scores[t·numKvHeads + h].
//
// Everything is generic over Float32Array / Float64Array so the gradient check can run in float64;
// accumulation is in JS numbers (float64) either way.
import type { ModelConfig } from '../../model/config.js';
import { Random } from '../../tasks/random.js';

export type Vec = Float32Array | Float64Array;

/** The sizes of one layer's retaining head. */
export interface RetainingHeadShape {
  /** numHeads·headDim + 2·numKvHeads·headDim. */
  inDim: number;
  hidden: number;
  /** One score per KV head. */
  outDim: number;
}

/** One layer's retaining head. */
export interface RetainingHeadParams<A extends Vec = Float32Array> extends RetainingHeadShape {
  /** hidden × inDim, row-major. */
  fc1: A;
  /** outDim × hidden, row-major. */
  fc2: A;
}

/** Every layer's retaining head, in layer order. */
export interface RetainingHeads<A extends Vec = Float32Array> {
  layers: RetainingHeadParams<A>[];
}

/**
 * Locret uses hidden = 1024 for Llama-3.1-8B (model hidden size 4096) and Phi-3-mini (3072). We keep
 * Llama's ratio, a quarter of the model's hidden size, with a floor of 16 so tiny models still get a
 * usable MLP: the bundled model (hidden 64) gets 16.
 */
export function defaultRetainingHidden(config: Pick<ModelConfig, 'hiddenSize'>): number {
  return Math.max(16, Math.round(config.hiddenSize / 4));
}

export function retainingHeadShape(config: Pick<ModelConfig, 'numHeads' | 'numKvHeads' | 'headDim' | 'hiddenSize'>, hidden = defaultRetainingHidden(config)): RetainingHeadShape {
  if (!Number.isInteger(hidden) || hidden < 1) throw new Error(`retaining head hidden size must be a positive integer (got ${hidden})`);
  return { inDim: (config.numHeads + 2 * config.numKvHeads) * config.headDim, hidden, outDim: config.numKvHeads };
}

/**
 * Deterministic initialisation from a seed: every weight uniform in ±1/√fanIn (PyTorch's default
 * Linear bound), drawn from one mulberry32 stream, layer by layer, fc1 then fc2.
 */
export function initRetainingHeads(shape: RetainingHeadShape, numLayers: number, seed: number): RetainingHeads {
  const rng = new Random(seed);
  const fill = (n: number, fanIn: number): Float32Array => {
    const bound = 1 / Math.sqrt(fanIn);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = (2 * rng.next() - 1) * bound;
    return out;
  };
  const layers: RetainingHeadParams[] = [];
  for (let l = 0; l < numLayers; l++) {
    layers.push({ ...shape, fc1: fill(shape.hidden * shape.inDim, shape.inDim), fc2: fill(shape.outDim * shape.hidden, shape.hidden) });
  }
  return { layers };
}

/** What the backward pass needs from the forward pass. */
export interface RetainingForward<A extends Vec = Float32Array> {
  tokens: number;
  /** tokens × outDim. */
  scores: A;
  /** fc1 · x before the activation, tokens × hidden. */
  pre: A;
  /** silu(pre), tokens × hidden. */
  act: A;
}

function like<A extends Vec>(a: A, n: number): A {
  return (a instanceof Float64Array ? new Float64Array(n) : new Float32Array(n)) as A;
}

function checkParams(p: RetainingHeadParams<Vec>): void {
  if (p.fc1.length !== p.hidden * p.inDim) throw new Error(`retaining head fc1 has ${p.fc1.length} values, expected hidden × inDim = ${p.hidden} × ${p.inDim}`);
  if (p.fc2.length !== p.outDim * p.hidden) throw new Error(`retaining head fc2 has ${p.fc2.length} values, expected outDim × hidden = ${p.outDim} × ${p.hidden}`);
}

const sigmoid = (z: number): number => 1 / (1 + Math.exp(-z));

/** Scores of a batch of `tokens` tokens; x is tokens × inDim (concat of pre-RoPE q, k, v per token). */
export function retainingForward<A extends Vec>(p: RetainingHeadParams<A>, x: A, tokens: number): RetainingForward<A> {
  checkParams(p);
  const { inDim, hidden, outDim } = p;
  if (!Number.isInteger(tokens) || tokens < 0) throw new Error(`tokens must be a non-negative integer (got ${tokens})`);
  if (x.length !== tokens * inDim) throw new Error(`retaining head input has ${x.length} values, expected tokens × inDim = ${tokens} × ${inDim}`);
  const pre = like(x, tokens * hidden), act = like(x, tokens * hidden), scores = like(x, tokens * outDim);
  for (let t = 0; t < tokens; t++) {
    const xo = t * inDim;
    for (let h = 0; h < hidden; h++) {
      let s = 0;
      const wo = h * inDim;
      for (let i = 0; i < inDim; i++) s += p.fc1[wo + i] * x[xo + i];
      pre[t * hidden + h] = s;
      act[t * hidden + h] = s * sigmoid(s);
    }
    for (let k = 0; k < outDim; k++) {
      let s = 0;
      const wo = k * hidden;
      for (let h = 0; h < hidden; h++) s += p.fc2[wo + h] * act[t * hidden + h];
      scores[t * outDim + k] = s;
    }
  }
  return { tokens, scores, pre, act };
}

export interface RetainingGrads<A extends Vec = Float32Array> {
  fc1: A;
  fc2: A;
  /** d loss / d x, tokens × inDim. */
  x: A;
}

/** Gradients of a loss with respect to the weights and the input, given d loss / d scores. */
export function retainingBackward<A extends Vec>(p: RetainingHeadParams<A>, x: A, fwd: RetainingForward<A>, dScores: A): RetainingGrads<A> {
  const { inDim, hidden, outDim } = p;
  const T = fwd.tokens;
  if (dScores.length !== T * outDim) throw new Error(`dScores has ${dScores.length} values, expected tokens × outDim = ${T} × ${outDim}`);
  const dFc1 = like(x, hidden * inDim), dFc2 = like(x, outDim * hidden), dX = like(x, T * inDim);
  const dPre = new Float64Array(hidden);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < hidden; h++) {
      const a = fwd.act[t * hidden + h];
      let da = 0;
      for (let k = 0; k < outDim; k++) {
        const ds = dScores[t * outDim + k];
        dFc2[k * hidden + h] += ds * a;
        da += ds * p.fc2[k * hidden + h];
      }
      // silu'(z) = σ(z)·(1 + z·(1 − σ(z)))
      const z = fwd.pre[t * hidden + h], sg = sigmoid(z);
      dPre[h] = da * sg * (1 + z * (1 - sg));
    }
    const xo = t * inDim;
    for (let h = 0; h < hidden; h++) {
      const g = dPre[h];
      if (g === 0) continue;
      const wo = h * inDim;
      for (let i = 0; i < inDim; i++) {
        dFc1[wo + i] += g * x[xo + i];
        dX[xo + i] += g * p.fc1[wo + i];
      }
    }
  }
  return { fc1: dFc1, fc2: dFc2, x: dX };
}
