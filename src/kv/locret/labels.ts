// Training examples for Locret's retaining heads, taken from a full-attention run of the frozen model.
//
// Locret (locret/train/data_gen.py) prefills a prompt, runs the response with exact attention and
// labels every prompt token j, per layer and KV head h, with the largest attention any response
// query of h's query group pays to j. The queries are response tokens only, all after the prompt, so
// a token's own query (i = j) never counts, and the retaining heads are trained on the prompt tokens.
// Here the prompt is the first `prefix` rows and the queries are rows [queriesFrom, rows), with
// queriesFrom = prefix by default (Locret's choice); a smaller queriesFrom also lets later prompt
// queries vote, still strictly later ones (i > j).
//
// The retaining heads read pre-RoPE q, k, v. The training forward rotates q and k in place, so the
// rotation is undone here (RoPE is orthogonal: exact up to float32 rounding, ~1e-7 relative).
import type { TrainModel } from '../../train/model.js';
import { rope } from '../../train/ops.js';

export interface LabelDims {
  /** Tokens in the sequence. */
  rows: number;
  heads: number;
  kvHeads: number;
  /** Labelled tokens: 0 … prefix − 1. */
  prefix: number;
  /** First query row that votes. */
  queriesFrom: number;
}

function checkDims(d: LabelDims): void {
  const { rows, heads, kvHeads, prefix, queriesFrom } = d;
  for (const [name, v] of Object.entries(d)) if (!Number.isInteger(v) || v < 0) throw new Error(`locret labels: ${name} must be a non-negative integer (got ${v})`);
  if (kvHeads < 1 || heads % kvHeads !== 0) throw new Error(`locret labels: ${heads} query heads do not split into groups over ${kvHeads} KV heads`);
  if (prefix < 1 || prefix >= rows) throw new Error(`locret labels: prefix ${prefix} must be in [1, rows − 1 = ${rows - 1}] (every labelled token needs a later query)`);
  if (queriesFrom > prefix) throw new Error(`locret labels: queriesFrom ${queriesFrom} is after the prefix (${prefix}); some prefix tokens would have no query`);
}

/**
 * Labels [prefix][kvHeads] (token-major, like the retaining heads' scores): for token j and KV head
 * h, the max over h's query heads and over query rows i ≥ queriesFrom with i > j of the attention
 * probability of i on j. `tail` holds the query rows' probabilities, tail[head][i − queriesFrom][j].
 */
export function attentionLabels(tail: Float32Array, d: LabelDims): Float32Array {
  checkDims(d);
  const { rows, heads, kvHeads, prefix, queriesFrom } = d;
  const queries = rows - queriesFrom, group = heads / kvHeads;
  if (tail.length !== heads * queries * rows) throw new Error(`locret labels: ${tail.length} probabilities, expected heads × queries × rows = ${heads} × ${queries} × ${rows}`);
  const out = new Float32Array(prefix * kvHeads);
  for (let h = 0; h < heads; h++) {
    const kvh = Math.floor(h / group);
    for (let i = queriesFrom; i < rows; i++) {
      const row = (h * queries + i - queriesFrom) * rows;
      const end = Math.min(prefix, i);
      for (let j = 0; j < end; j++) {
        const p = tail[row + j];
        if (p > out[j * kvHeads + kvh]) out[j * kvHeads + kvh] = p;
      }
    }
  }
  return out;
}

/** One sequence's training data for every layer's retaining head. */
export interface LocretExample {
  /** Labelled (prefix) tokens. */
  tokens: number;
  layers: Array<{
    /** Retaining-head inputs [tokens][inDim]: pre-RoPE q, then k, then v of each token. */
    x: Float32Array;
    /** [tokens][kvHeads]. */
    labels: Float32Array;
  }>;
}

/**
 * Runs `ids` (positions 0 … T − 1) through the frozen model with full attention and returns the
 * retaining heads' inputs and labels for the first `prefix` tokens (see attentionLabels).
 */
export async function locretExample<T>(model: TrainModel<T>, ids: Int32Array, prefix: number, queriesFrom = prefix): Promise<LocretExample> {
  const { c, k } = model;
  const rows = ids.length, hd = c.headDim, qd = c.heads * hd, kvd = c.kvHeads * hd, inDim = qd + 2 * kvd;
  checkDims({ rows, heads: c.heads, kvHeads: c.kvHeads, prefix, queriesFrom });
  const positions = Int32Array.from({ length: rows }, (_, i) => i);
  model.forward(ids, positions);
  const queries = rows - queriesFrom;
  const layers: LocretExample['layers'] = [];
  for (let l = 0; l < c.layers; l++) {
    const inputs = model.attentionQkv(l);
    const q = await k.read(inputs.q, prefix * qd), kk = await k.read(inputs.k, prefix * kvd), v = await k.read(inputs.v, prefix * kvd);
    rope(q, prefix, c.heads, hd, positions, model.invFreq, true);
    rope(kk, prefix, c.kvHeads, hd, positions, model.invFreq, true);
    const x = new Float32Array(prefix * inDim);
    for (let t = 0; t < prefix; t++) {
      x.set(q.subarray(t * qd, (t + 1) * qd), t * inDim);
      x.set(kk.subarray(t * kvd, (t + 1) * kvd), t * inDim + qd);
      x.set(v.subarray(t * kvd, (t + 1) * kvd), t * inDim + qd + kvd);
    }
    // Only the voting query rows of each head's [rows][rows] block are read back.
    const probs = model.attentionProbs(l);
    const tail = new Float32Array(c.heads * queries * rows);
    for (let h = 0; h < c.heads; h++) {
      const n = queries * rows;
      tail.set(await k.read(k.slice(probs, (h * rows + queriesFrom) * rows, n), n), h * n);
    }
    layers.push({ x, labels: attentionLabels(tail, { rows, heads: c.heads, kvHeads: c.kvHeads, prefix, queriesFrom }) });
  }
  return { tokens: prefix, layers };
}
