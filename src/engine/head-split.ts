// Reorders a layer's attention weights once, at load, so that each head group's heads (the KV heads
// of one KV method, src/kv/) are contiguous: a group's Q/K/V rows and O columns form one set of
// matrices. Every query head of a GQA group follows its KV head. Packed weights are split in their
// own format: rows are whole, and O's columns are cut at block boundaries when a KV head's group of
// query heads fills whole blocks (any f16 matrix; Q8_0/Q4_0 for group·head_dim a multiple of 32,
// Q4_K of 256). Otherwise that group's O columns are stored as the f32 values they decode to (exact).
import { blockBytes, blockSize, rowBytes, type PackedMatrix } from '../model/quant.js';
import { asPacked, matrixF32, type WeightMatrix } from '../model/weights.js';

export interface AttentionWeights {
  wq: WeightMatrix; wk: WeightMatrix; wv: WeightMatrix; wo: WeightMatrix;
  bq: Float32Array | null; bk: Float32Array | null; bv: Float32Array | null;
}

export interface HeadGeometry {
  hidden: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
}

/** One head group's slice of a layer: the KV heads it owns and their weights. */
export interface GroupWeights {
  kvHeads: number[];
  numHeads: number;
  numKvHeads: number;
  wq: PackedMatrix; wk: PackedMatrix; wv: PackedMatrix;
  bq: Float32Array | null; bk: Float32Array | null; bv: Float32Array | null;
  /** O projection columns of this group's query heads, as an [hidden][numHeads·headDim] matrix. */
  wo: PackedMatrix;
}

/** Storage units (floats for f32, bytes otherwise) of one row. */
function rowUnits(m: PackedMatrix): number {
  return m.dtype === 'f32' ? m.cols : rowBytes(m.dtype, m.cols);
}

function emptyLike(m: PackedMatrix, units: number): Float32Array | Uint8Array {
  return m.dtype === 'f32' ? new Float32Array(units) : new Uint8Array(units);
}

/** Row blocks `rowBlocks` of `blockRows` rows each, in that order (a block may repeat). */
export function gatherRows(m: PackedMatrix, rowBlocks: number[], blockRows: number): PackedMatrix {
  const span = blockRows * rowUnits(m);
  const out = emptyLike(m, rowBlocks.length * span);
  rowBlocks.forEach((b, i) => out.set(m.data.subarray(b * span, (b + 1) * span), i * span));
  return { dtype: m.dtype, rows: rowBlocks.length * blockRows, cols: m.cols, data: out };
}

function gatherCols(m: PackedMatrix, colBlocks: number[], blockCols: number): PackedMatrix {
  const bs = blockSize(m.dtype);
  if (blockCols % bs !== 0) {
    // Blocks straddle the heads: cut the decoded values instead (f32, exact).
    return gatherCols({ dtype: 'f32', rows: m.rows, cols: m.cols, data: matrixF32(m) }, colBlocks, blockCols);
  }
  const perElem = m.dtype === 'f32' ? 1 : blockBytes(m.dtype) / bs; // storage units per column
  const inRow = rowUnits(m), span = blockCols * perElem;
  const outCols = colBlocks.length * blockCols, outRow = colBlocks.length * span;
  const out = emptyLike(m, m.rows * outRow);
  for (let r = 0; r < m.rows; r++) {
    colBlocks.forEach((b, i) => out.set(m.data.subarray(r * inRow + b * span, r * inRow + (b + 1) * span), r * outRow + i * span));
  }
  return { dtype: m.dtype, rows: m.rows, cols: outCols, data: out };
}

/** The query heads of the given KV heads, in order. */
export function queryHeadsOf(kvHeads: number[], group: number): number[] {
  return kvHeads.flatMap((kv) => Array.from({ length: group }, (_, g) => kv * group + g));
}

export function splitGroup(w: AttentionWeights, geo: HeadGeometry, kvHeads: number[]): GroupWeights {
  const { hidden, numHeads, numKvHeads, headDim } = geo;
  const group = numHeads / numKvHeads;
  const qHeads = queryHeadsOf(kvHeads, group);
  const wq = asPacked(w.wq, numHeads * headDim, hidden), wk = asPacked(w.wk, numKvHeads * headDim, hidden);
  const wv = asPacked(w.wv, numKvHeads * headDim, hidden), wo = asPacked(w.wo, hidden, numHeads * headDim);
  // One group with every head: the layer's own matrices, no copy.
  if (kvHeads.length === numKvHeads && kvHeads.every((h, i) => h === i)) {
    return { kvHeads, numHeads, numKvHeads, wq, wk, wv, wo, bq: w.bq, bk: w.bk, bv: w.bv };
  }
  const pick = (b: Float32Array | null, heads: number[]) =>
    (b ? gatherRows({ dtype: 'f32', rows: b.length, cols: 1, data: b }, heads, headDim).data as Float32Array : null);
  return {
    kvHeads,
    numHeads: qHeads.length,
    numKvHeads: kvHeads.length,
    wq: gatherRows(wq, qHeads, headDim),
    wk: gatherRows(wk, kvHeads, headDim),
    wv: gatherRows(wv, kvHeads, headDim),
    bq: pick(w.bq, qHeads), bk: pick(w.bk, kvHeads), bv: pick(w.bv, kvHeads),
    // A KV head's query heads are adjacent: its O columns are one block of group·headDim.
    wo: gatherCols(wo, kvHeads, group * headDim),
  };
}

/**
 * A decoupled (DHA) layer's group: Q rows and O columns of its query heads, K rows of its key heads,
 * V rows of its value heads (a value head in two groups is in both). `heads` covering the whole
 * layer in order gives the layer's own matrices.
 */
export function splitDecoupled(w: AttentionWeights, dims: { hidden: number; numHeads: number; keyHeads: number; valueHeads: number; headDim: number },
  kvHeads: number[], heads: { query: number[]; key: number[]; value: number[] }): GroupWeights {
  const { hidden, numHeads, keyHeads, valueHeads, headDim } = dims;
  const wq = asPacked(w.wq, numHeads * headDim, hidden), wk = asPacked(w.wk, keyHeads * headDim, hidden);
  const wv = asPacked(w.wv, valueHeads * headDim, hidden), wo = asPacked(w.wo, hidden, numHeads * headDim);
  const all = (hs: number[], n: number) => hs.length === n && hs.every((h, i) => h === i);
  if (all(heads.query, numHeads) && all(heads.key, keyHeads) && all(heads.value, valueHeads)) {
    return { kvHeads, numHeads, numKvHeads: keyHeads, wq, wk, wv, wo, bq: w.bq, bk: w.bk, bv: w.bv };
  }
  const pick = (b: Float32Array | null, hs: number[]) =>
    (b ? gatherRows({ dtype: 'f32', rows: b.length, cols: 1, data: b }, hs, headDim).data as Float32Array : null);
  return {
    kvHeads, numHeads: heads.query.length, numKvHeads: heads.key.length,
    wq: gatherRows(wq, heads.query, headDim), wk: gatherRows(wk, heads.key, headDim), wv: gatherRows(wv, heads.value, headDim),
    bq: pick(w.bq, heads.query), bk: pick(w.bk, heads.key), bv: pick(w.bv, heads.value),
    wo: gatherCols(wo, heads.query, headDim),
  };
}
