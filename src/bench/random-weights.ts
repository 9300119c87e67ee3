// Seeded random weights of a config's exact shapes, built in memory (no checkpoint files), and a
// random head pattern of the right shape. Values only need to be finite and of sane scale: kernel
// speed does not depend on them.
import type { ModelConfig } from '../model/config.js';
import { convertMatrix, type LayerWeights, type LoadWeights, type ModelWeights, type WeightMatrix } from '../model/weights.js';

/** Fills `out` with uniform values in [lo, hi) from a mulberry32 stream seeded by `seed`. */
function fillUniform(out: Float32Array, seed: number, lo: number, hi: number): Float32Array {
  let state = (seed >>> 0) ^ 0x9e3779b9;
  const span = (hi - lo) / 4294967296;
  for (let i = 0; i < out.length; i++) {
    let t = (state = (state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = lo + ((t ^ (t >>> 14)) >>> 0) * span;
  }
  return out;
}

/**
 * Random weights for `config`: matrices uniform in ±1/sqrt(fan_in), norms near 1. The LM head is
 * the embedding array itself (tied or not: the bench only needs the bytes each step reads). With a
 * `dtype`, every matrix is stored packed in it as it is drawn (no f32 copy of the model).
 */
export function randomWeights(config: ModelConfig, seed = 0, onLayer?: (done: number, total: number) => void, dtype: LoadWeights = 'keep'): ModelWeights {
  const { hiddenSize: H, intermediateSize: I, numHeads, numKvHeads, headDim: D, vocabSize: V } = config;
  let stream = seed * 1000;
  // Each matrix is packed as soon as it is drawn: only one f32 matrix exists at a time.
  const pack = (f: Float32Array, rows: number, cols: number): WeightMatrix => convertMatrix(f, rows, cols, dtype);
  const mat = (rows: number, cols: number) => {
    const a = 1 / Math.sqrt(cols);
    return pack(fillUniform(new Float32Array(rows * cols), stream++, -a, a), rows, cols);
  };
  const norm = (n: number) => fillUniform(new Float32Array(n), stream++, 0.9, 1.1);
  const bias = (n: number) => (config.attentionBias ? fillUniform(new Float32Array(n), stream++, -0.1, 0.1) : null);
  const embed = pack(fillUniform(new Float32Array(V * H), stream++, -1, 1), V, H);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    layers.push({
      inputNorm: norm(H),
      wq: mat(numHeads * D, H), wk: mat(numKvHeads * D, H), wv: mat(numKvHeads * D, H), wo: mat(H, numHeads * D),
      bq: bias(numHeads * D), bk: bias(numKvHeads * D), bv: bias(numKvHeads * D),
      postNorm: norm(H),
      wGate: mat(I, H), wUp: mat(I, H), wDown: mat(H, I),
    });
    onLayer?.(l + 1, config.numLayers);
  }
  return { embed, layers, finalNorm: norm(H), lmHead: embed };
}

/** Random gate values α per layer per KV head (uniform in [0, 1)), for binarize(). */
export function randomAlphas(layers: number, kvHeads: number, seed = 0): number[][] {
  const flat = fillUniform(new Float32Array(layers * kvHeads), 0x51ed + seed, 0, 1);
  return Array.from({ length: layers }, (_, l) => Array.from(flat.subarray(l * kvHeads, (l + 1) * kvHeads)));
}

/** Random token ids in [0, vocab). */
/** `n` floats in [−1, 1) from a linear congruential stream (fast; for operands whose values do not matter). */
export function noiseArray(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1103515245) + 12345) >>> 0; a[i] = s / 2147483648 - 1; }
  return a;
}

export function randomIds(n: number, vocab: number, seed = 0): number[] {
  const u = fillUniform(new Float32Array(n), 0x1d5 + seed, 0, 1);
  return Array.from(u, (x) => Math.min(vocab - 1, Math.floor(x * vocab)));
}
