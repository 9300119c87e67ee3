// Locret's retaining-head scores (src/kv/locret/retaining-heads.ts has the reference):
//   scores[t] = fc2 · silu(fc1 · [q_t; k_t; v_t])     fc1 [hidden][qd + 2·kvd], fc2 [outDim][hidden]
// for n tokens whose pre-RoPE q, k, v rows lie in three tensors with their own row strides, so the
// caller's projections are read where they are instead of being concatenated. fc1's columns split
// into the q, k and v blocks, so fc1 · x is three GEMMs on column slices of fc1 (row stride inDim).
// Tokens go in tiles of TILE rows: the hidden activations of one tile are the scratch.
import { gemmAdd, gemmSet } from '../../../assembly/matmul';
import { expv, exps } from '../../../assembly/simd';

const TILE: i32 = 64;

/** Scratch floats locretScores needs. */
export function locretScratchFloats(hidden: i32): i32 {
  return TILE * hidden;
}

/** x[i] = silu(x[i]) = x / (1 + e^−x) for i < n. */
function siluInPlace(x: usize, n: i32): void {
  const end4: usize = (<usize>(n & ~3)) << 2, end: usize = (<usize>n) << 2;
  const one = f32x4.splat(1);
  let i: usize = 0;
  for (; i < end4; i += 16) {
    const z = v128.load(x + i);
    v128.store(x + i, f32x4.div(z, f32x4.add(one, expv(f32x4.neg(z)))));
  }
  for (; i < end; i += 4) {
    const z = load<f32>(x + i);
    store<f32>(x + i, z / (1 + exps(-z)));
  }
}

/**
 * scores [n][outDim] (row stride outDim) of n tokens; q rows qStride floats apart (qd used), k and v
 * rows kStride / vStride apart (kvd used). Byte addresses; scratch: locretScratchFloats(hidden).
 */
export function locretScores(scores: usize, q: usize, qStride: i32, k: usize, kStride: i32, v: usize, vStride: i32,
  n: i32, qd: i32, kvd: i32, fc1: usize, hidden: i32, fc2: usize, outDim: i32, scratch: usize): void {
  const inDim = qd + 2 * kvd;
  const kCols = fc1 + ((<usize>qd) << 2), vCols = fc1 + ((<usize>(qd + kvd)) << 2);
  for (let r0 = 0; r0 < n; r0 += TILE) {
    const nr = min(TILE, n - r0);
    const r: usize = <usize>r0;
    gemmSet(scratch, hidden, q + ((r * <usize>qStride) << 2), qStride, fc1, inDim, nr, qd, hidden);
    gemmAdd(scratch, hidden, k + ((r * <usize>kStride) << 2), kStride, kCols, inDim, nr, kvd, hidden);
    gemmAdd(scratch, hidden, v + ((r * <usize>vStride) << 2), vStride, vCols, inDim, nr, kvd, hidden);
    siluInPlace(scratch, nr * hidden);
    gemmSet(scores + ((r * <usize>outDim) << 2), outDim, scratch, hidden, fc2, hidden, nr, hidden, outDim);
  }
}
