// The locret method's settings: how many positions each KV head keeps, how many of the most recent
// ones are kept whatever their score (Locret's stabilizers), and where the retaining heads come from.
import type { KvGroupShape } from '../method.js';
import type { RetainingHeadParams, RetainingHeads } from './retaining-heads.js';

/** Where a locret cache finds its layer's retaining head and RoPE's frequencies (to undo RoPE). */
export interface LocretHeads {
  /** Layer `layer`'s retaining head; the cache checks it against its group's shape. */
  head(layer: number, shape: KvGroupShape): RetainingHeadParams;
  /** RoPE's inverse frequencies for `headDim` (headDim/2 values, scaling folded in, as Backend.rope takes). */
  invFreq(headDim: number): Float32Array;
}

export interface LocretSettings {
  /** Positions each KV head keeps after a chunk (≥ 1). */
  budget: number;
  /** The most recent positions always kept (0 … budget). */
  stabilizers: number;
  heads: LocretHeads;
}

/** A model's trained retaining heads (one per layer) and its RoPE frequencies as LocretHeads. */
export function locretHeadsOf(heads: RetainingHeads, invFreq: Float32Array): LocretHeads {
  return {
    head(layer) {
      const p = heads.layers[layer];
      if (!p) throw new Error(`locret: no retaining head for layer ${layer} (the weights have ${heads.layers.length} layers)`);
      return p;
    },
    invFreq(headDim) {
      if (invFreq.length !== headDim / 2) throw new Error(`locret: ${invFreq.length} RoPE frequencies, expected headDim/2 = ${headDim / 2}`);
      return invFreq;
    },
  };
}

/** Checks budget and stabilizers; returns the settings. */
export function checkLocretSettings(s: LocretSettings | undefined): LocretSettings {
  if (!s) throw new Error('the locret method needs settings.locret ({ budget, stabilizers, heads })');
  if (!Number.isInteger(s.budget) || s.budget < 1) throw new Error(`locret: budget must be a positive integer (got ${s.budget})`);
  if (!Number.isInteger(s.stabilizers) || s.stabilizers < 0 || s.stabilizers > s.budget) {
    throw new Error(`locret: stabilizers must be an integer in [0, budget = ${s.budget}] (got ${s.stabilizers})`);
  }
  return s;
}
