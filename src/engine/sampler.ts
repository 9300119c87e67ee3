// Token selection from logits: greedy, or temperature with optional top-k / top-p, seeded.
import { DuetError } from '../errors.js';
import { DEVICE_MAX_TOP_K, nonFiniteLogits, type DeviceChoice } from '../backend/device-sampler.js';

export interface SamplingOptions {
  /** 0 (default) = greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
}

/** Deterministic uniform [0, 1) generator (mulberry32). */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/** One pass over the row the sampler reads: NaN/Inf there means the forward pass broke. */
export function assertFiniteLogits(logits: ArrayLike<number>): void {
  for (let i = 0; i < logits.length; i++) if (!Number.isFinite(logits[i])) throw nonFiniteLogits(logits[i], i);
}

export class Sampler {
  private readonly random: () => number;
  constructor(private readonly options: SamplingOptions = {}) {
    const { temperature = 0, topK, topP } = options;
    if (!(temperature >= 0)) throw new DuetError('temperature', `must be ≥ 0 (got ${temperature})`);
    if (topK !== undefined && !(Number.isInteger(topK) && topK >= 1)) throw new DuetError('topK', `must be a positive integer (got ${topK})`);
    if (topP !== undefined && !(topP > 0 && topP <= 1)) throw new DuetError('topP', `must be in (0, 1] (got ${topP})`);
    this.random = seededRandom(options.seed ?? 0);
  }

  /**
   * The next choice for a device sampler, or null when this configuration needs the whole row on
   * the host (temperature without top-k, or top-k above DEVICE_MAX_TOP_K). Consumes the random
   * number sample() would have consumed, so the two paths can be mixed within one stream.
   */
  deviceChoice(): DeviceChoice | null {
    const { temperature = 0, topK, topP = 1 } = this.options;
    if (temperature === 0) return { k: 1, temperature: 0, topP: 1, r: 0 };
    if (topK === undefined || topK > DEVICE_MAX_TOP_K) return null;
    return { k: topK, temperature, topP, r: this.random() };
  }

  /** Throws a clear Error when the row holds NaN/Inf (broken weights or activations), never picks from it. */
  sample(logits: Float32Array): number {
    assertFiniteLogits(logits);
    const { temperature = 0, topK, topP } = this.options;
    if (temperature === 0) return argmax(logits);
    let ids = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b);
    if (topK !== undefined) ids = ids.slice(0, topK);
    const max = logits[ids[0]];
    let probs = ids.map((i) => Math.exp((logits[i] - max) / temperature));
    let total = probs.reduce((a, b) => a + b, 0);
    if (topP !== undefined && topP < 1) {
      let cumulative = 0, keep = 0;
      while (keep < ids.length && cumulative < topP * total) cumulative += probs[keep++];
      ids = ids.slice(0, Math.max(1, keep));
      probs = probs.slice(0, ids.length);
      total = probs.reduce((a, b) => a + b, 0);
    }
    let r = this.random() * total;
    for (let i = 0; i < ids.length; i++) { r -= probs[i]; if (r < 0) return ids[i]; }
    return ids[ids.length - 1];
  }
}
