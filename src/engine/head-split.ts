// Reorders a layer's attention weights once, at load, so that each side's heads are contiguous:
// the retrieval side's Q/K/V rows and O columns form one set of matrices and the streaming side's
// another. Every query head of a GQA group follows its KV head.

export interface AttentionWeights {
  wq: Float32Array; wk: Float32Array; wv: Float32Array; wo: Float32Array;
  bq: Float32Array | null; bk: Float32Array | null; bv: Float32Array | null;
}

export interface HeadGeometry {
  hidden: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
}

/** One side's slice of a layer: the KV heads it owns and their weights. */
export interface SideWeights {
  kvHeads: number[];
  numHeads: number;
  numKvHeads: number;
  wq: Float32Array; wk: Float32Array; wv: Float32Array;
  bq: Float32Array | null; bk: Float32Array | null; bv: Float32Array | null;
  /** O projection columns of this side's query heads, as an [hidden][numHeads·headDim] matrix. */
  wo: Float32Array;
}

function gatherRows(w: Float32Array, rowBlocks: number[], blockRows: number, cols: number): Float32Array {
  const out = new Float32Array(rowBlocks.length * blockRows * cols);
  rowBlocks.forEach((b, i) => out.set(w.subarray(b * blockRows * cols, (b + 1) * blockRows * cols), i * blockRows * cols));
  return out;
}

function gatherCols(w: Float32Array, rows: number, cols: number, colBlocks: number[], blockCols: number): Float32Array {
  const outCols = colBlocks.length * blockCols;
  const out = new Float32Array(rows * outCols);
  for (let r = 0; r < rows; r++) {
    colBlocks.forEach((b, i) => out.set(w.subarray(r * cols + b * blockCols, r * cols + (b + 1) * blockCols), r * outCols + i * blockCols));
  }
  return out;
}

/** The query heads of the given KV heads, in order. */
export function queryHeadsOf(kvHeads: number[], group: number): number[] {
  return kvHeads.flatMap((kv) => Array.from({ length: group }, (_, g) => kv * group + g));
}

export function splitSide(w: AttentionWeights, geo: HeadGeometry, kvHeads: number[]): SideWeights {
  const { hidden, numHeads, numKvHeads, headDim } = geo;
  const group = numHeads / numKvHeads;
  const qHeads = queryHeadsOf(kvHeads, group);
  const pick = (b: Float32Array | null, heads: number[]) => (b ? gatherRows(b, heads, headDim, 1) : null);
  return {
    kvHeads,
    numHeads: qHeads.length,
    numKvHeads: kvHeads.length,
    wq: gatherRows(w.wq, qHeads, headDim, hidden),
    wk: gatherRows(w.wk, kvHeads, headDim, hidden),
    wv: gatherRows(w.wv, kvHeads, headDim, hidden),
    bq: pick(w.bq, qHeads), bk: pick(w.bk, kvHeads), bv: pick(w.bv, kvHeads),
    wo: gatherCols(w.wo, hidden, numHeads * headDim, qHeads, headDim),
  };
}
