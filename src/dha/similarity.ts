// Head similarity for DHA's allocation, measured on activations of task data rather than on raw
// weights: what merging heads costs is the change of their outputs, and a head's output on input
// x is W_h·x, so the right metric on weights is the input covariance Σ = E[x xᵀ] of the attention
// input (the normed residual stream). For heads i, j of one side (keys or values) of a layer the
// Gram matrix M_ij = tr(W_i Σ W_jᵀ) = E[⟨W_i x, W_j x⟩] gives every quantity the allocation needs:
// ‖outputs of i − outputs of j‖² = M_ii + M_jj − 2M_ij, and replacing a group's heads by their mean
// costs Σ_{i∈g} M_ii − (1/|g|)·Σ_{i,j∈g} M_ij. RoPE rotates both keys of a position alike, so the
// distance before RoPE is the distance after it.
//
// Raw-weight similarity (Σ = I) ignores that the residual stream is far from isotropic; a rotation-
// invariant measure (CKA) would call heads similar that a mean cannot merge (the same function in
// another basis).

/** One layer's Gram matrices [heads][heads] (row-major) of its key and value heads under Σ. */
export interface LayerGram { key: Float64Array; value: Float64Array }

/** Adds the rows of x [rows][d] into acc [d][d] as Σ_t x_t x_tᵀ (divide by the row count later). */
export function accumulateCovariance(acc: Float64Array, x: Float32Array, rows: number, d: number): void {
  for (let t = 0; t < rows; t++) {
    const o = t * d;
    for (let a = 0; a < d; a++) {
      const xa = x[o + a];
      if (xa === 0) continue;
      const row = a * d;
      for (let b = 0; b < d; b++) acc[row + b] += xa * x[o + b];
    }
  }
}

/**
 * M_ij = tr(W_i Σ W_jᵀ) for the heads of w [heads·hd][d] (row-major, head h's rows h·hd…(h+1)·hd),
 * with Σ [d][d] symmetric.
 */
export function headGram(w: Float32Array, sigma: Float64Array, heads: number, hd: number, d: number): Float64Array {
  // WΣ once, then row dot products.
  const ws = new Float64Array(heads * hd * d);
  for (let r = 0; r < heads * hd; r++) {
    for (let a = 0; a < d; a++) {
      const v = w[r * d + a];
      if (v === 0) continue;
      for (let b = 0; b < d; b++) ws[r * d + b] += v * sigma[a * d + b];
    }
  }
  const m = new Float64Array(heads * heads);
  for (let i = 0; i < heads; i++) {
    for (let j = 0; j < heads; j++) {
      let s = 0;
      for (let r = 0; r < hd; r++) {
        const wi = (i * hd + r) * d, wj = (j * hd + r) * d;
        for (let b = 0; b < d; b++) s += ws[wi + b] * w[wj + b];
      }
      m[i * heads + j] = s;
    }
  }
  // Symmetrise the rounding.
  for (let i = 0; i < heads; i++) for (let j = 0; j < i; j++) { const s = (m[i * heads + j] + m[j * heads + i]) / 2; m[i * heads + j] = s; m[j * heads + i] = s; }
  return m;
}

/** Output energy of the side's average head: (1/heads)·Σ_h M_hh, the unit merge costs are given in. */
export function meanHeadEnergy(gram: Float64Array, heads: number): number {
  let s = 0;
  for (let h = 0; h < heads; h++) s += gram[h * heads + h];
  return s / heads;
}

/**
 * What replacing the heads of `group` by their mean does to their outputs,
 * Σ_{i∈g} E‖W_i x − W̄ x‖², in units of `energy`. 0 for a single head.
 */
export function mergeCost(gram: Float64Array, heads: number, group: number[], energy: number): number {
  let diag = 0, all = 0;
  for (const i of group) {
    diag += gram[i * heads + i];
    for (const j of group) all += gram[i * heads + j];
  }
  return Math.max(0, diag - all / group.length) / energy;
}

/** The normalised output distance of two heads, ‖W_i x − W_j x‖² / (‖W_i x‖² + ‖W_j x‖²) in expectation: 0 = equal, 1 = orthogonal, 2 = opposite. */
export function headDistance(gram: Float64Array, heads: number, i: number, j: number): number {
  const ii = gram[i * heads + i], jj = gram[j * heads + j];
  return (ii + jj - 2 * gram[i * heads + j]) / (ii + jj);
}

/** What the measurement runs on: a CPU training model and sequences of task data. */
interface Forwardable {
  c: { layers: number; hidden: number; heads: number; kvHeads: number; headDim: number };
  p: { layers: Array<{ wk: Float32Array; wv: Float32Array }> };
  forward(ids: Int32Array, positions: Int32Array): void;
  normedInput(layer: number): Float32Array;
}

/** Per layer: Σ of the attention inputs over `sequences` (forward passes of `model`) and the K and V Gram matrices under it. */
export function measureHeads(model: Forwardable, sequences: Array<{ ids: Int32Array; positions: Int32Array }>): { sigma: Float64Array[]; gram: LayerGram[]; rows: number } {
  const { layers, hidden: d, heads, kvHeads, headDim: hd } = model.c;
  if (kvHeads !== heads) throw new Error(`head similarity needs a multi-head model (num_key_value_heads ${kvHeads} ≠ num_attention_heads ${heads})`);
  const sigma = Array.from({ length: layers }, () => new Float64Array(d * d));
  let rows = 0;
  for (const s of sequences) {
    model.forward(s.ids, s.positions);
    for (let l = 0; l < layers; l++) accumulateCovariance(sigma[l], model.normedInput(l), s.ids.length, d);
    rows += s.ids.length;
  }
  if (rows === 0) throw new Error('head similarity needs at least one sequence');
  for (const m of sigma) for (let i = 0; i < m.length; i++) m[i] /= rows;
  const gram = sigma.map((s, l) => ({ key: headGram(model.p.layers[l].wk, s, heads, hd, d), value: headGram(model.p.layers[l].wv, s, heads, hd, d) }));
  return { sigma, gram, rows };
}
