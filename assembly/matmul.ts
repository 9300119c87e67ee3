// Matrix multiplication against Hugging Face weights ([outDim][inDim]): out = x · Wᵀ (+ bias).
//
// The core is gemmAdd: out[r][o] += Σ_i x[r][i] · w[o][i] with arbitrary row strides, built from
// register-blocked micro-kernels (4 rows × 2 outputs, 1 × 4, 4 × 1, 1 × 1) that run f32x4 over
// the inner dimension with a scalar tail. For several rows the inner dimension is cut into
// KC-element panels and the outputs into OC-wide panels so that a panel of weights stays in cache
// while every row block passes over it; a single row (GEMV) streams whole weight rows instead.
// The attention kernels use gemmSet (the same, overwriting out) for their Q·Kᵀ score blocks.
import { hsum, hsum4 } from './simd';

/** Inner-dimension panel (floats) when several rows share the weights. Multiple of 4. */
const KC: i32 = 256;
/** Output panel (weight rows) per pass over the row blocks. */
const OC: i32 = 32;

// 4 rows × 2 outputs. x rows at x + r·ldx, weight rows at w + o·ldw, out rows at out + r·ldo
// (strides in bytes); k inner elements. 8 accumulators + 2 weight vectors + 1 row vector stay in
// registers (x64 has 16 vector registers, one of them V8's scratch; a 4 × 4 block spilled and
// ran at 26 GFLOP/s where this one reaches 36 on the bench machine).
// @ts-ignore: decorator
@inline
function mk4x2(out: usize, ldo: usize, x: usize, ldx: usize, w: usize, ldw: usize, k: i32, acc: bool): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0), c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0), c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  const x1 = x + ldx, x2 = x1 + ldx, x3 = x2 + ldx;
  const w1 = w + ldw;
  const end: usize = (<usize>(k & ~3)) << 2;
  for (let i: usize = 0; i < end; i += 16) {
    const b0 = v128.load(w + i), b1 = v128.load(w1 + i);
    let a = v128.load(x + i);
    c00 = f32x4.add(c00, f32x4.mul(a, b0)); c01 = f32x4.add(c01, f32x4.mul(a, b1));
    a = v128.load(x1 + i);
    c10 = f32x4.add(c10, f32x4.mul(a, b0)); c11 = f32x4.add(c11, f32x4.mul(a, b1));
    a = v128.load(x2 + i);
    c20 = f32x4.add(c20, f32x4.mul(a, b0)); c21 = f32x4.add(c21, f32x4.mul(a, b1));
    a = v128.load(x3 + i);
    c30 = f32x4.add(c30, f32x4.mul(a, b0)); c31 = f32x4.add(c31, f32x4.mul(a, b1));
  }
  // [r0·w0, r0·w1, r1·w0, r1·w1] and the same for rows 2, 3.
  let s01 = hsum4(c00, c01, c10, c11), s23 = hsum4(c20, c21, c30, c31);
  const kb: usize = (<usize>k) << 2;
  for (let i = end; i < kb; i += 4) {
    const b = f32x4(load<f32>(w + i), load<f32>(w1 + i), load<f32>(w + i), load<f32>(w1 + i));
    s01 = f32x4.add(s01, f32x4.mul(f32x4(load<f32>(x + i), load<f32>(x + i), load<f32>(x1 + i), load<f32>(x1 + i)), b));
    s23 = f32x4.add(s23, f32x4.mul(f32x4(load<f32>(x2 + i), load<f32>(x2 + i), load<f32>(x3 + i), load<f32>(x3 + i)), b));
  }
  putPair(out, s01, 0, acc); putPair(out + ldo, s01, 1, acc);
  putPair(out + 2 * ldo, s23, 0, acc); putPair(out + 3 * ldo, s23, 1, acc);
}

// out[0..1] (+)= the lane pair `half` (0: lanes 0, 1; 1: lanes 2, 3) of s.
// @ts-ignore: decorator
@inline
function putPair(out: usize, s: v128, half: u8, acc: bool): void {
  let t = half == 0 ? s : v128.shuffle<f32>(s, s, 2, 3, 0, 1);
  if (acc) t = f32x4.add(v128.load64_zero(out), t);
  v128.store64_lane(out, t, 0);
}

// out[0..3] (+)= s.
// @ts-ignore: decorator
@inline
function put4(out: usize, s: v128, acc: bool): void {
  v128.store(out, acc ? f32x4.add(v128.load(out), s) : s);
}

// *out (+)= s.
// @ts-ignore: decorator
@inline
function put1(out: usize, s: f32, acc: bool): void {
  store<f32>(out, acc ? load<f32>(out) + s : s);
}

// 1 row × 4 outputs, two f32x4 accumulators per output (8 independent chains).
function mk1x4(out: usize, x: usize, w: usize, ldw: usize, k: i32, acc: bool): void {
  let c0 = f32x4.splat(0), c1 = f32x4.splat(0), c2 = f32x4.splat(0), c3 = f32x4.splat(0);
  let d0 = f32x4.splat(0), d1 = f32x4.splat(0), d2 = f32x4.splat(0), d3 = f32x4.splat(0);
  const w0 = w, w1 = w + ldw, w2 = w + 2 * ldw, w3 = w + 3 * ldw;
  const end8: usize = (<usize>(k & ~7)) << 2;
  let i: usize = 0;
  for (; i < end8; i += 32) {
    const a = v128.load(x + i), e = v128.load(x + i, 16);
    c0 = f32x4.add(c0, f32x4.mul(a, v128.load(w0 + i)));
    c1 = f32x4.add(c1, f32x4.mul(a, v128.load(w1 + i)));
    c2 = f32x4.add(c2, f32x4.mul(a, v128.load(w2 + i)));
    c3 = f32x4.add(c3, f32x4.mul(a, v128.load(w3 + i)));
    d0 = f32x4.add(d0, f32x4.mul(e, v128.load(w0 + i, 16)));
    d1 = f32x4.add(d1, f32x4.mul(e, v128.load(w1 + i, 16)));
    d2 = f32x4.add(d2, f32x4.mul(e, v128.load(w2 + i, 16)));
    d3 = f32x4.add(d3, f32x4.mul(e, v128.load(w3 + i, 16)));
  }
  const end4: usize = (<usize>(k & ~3)) << 2;
  if (i < end4) {
    const a = v128.load(x + i);
    c0 = f32x4.add(c0, f32x4.mul(a, v128.load(w0 + i)));
    c1 = f32x4.add(c1, f32x4.mul(a, v128.load(w1 + i)));
    c2 = f32x4.add(c2, f32x4.mul(a, v128.load(w2 + i)));
    c3 = f32x4.add(c3, f32x4.mul(a, v128.load(w3 + i)));
    i += 16;
  }
  let s = hsum4(f32x4.add(c0, d0), f32x4.add(c1, d1), f32x4.add(c2, d2), f32x4.add(c3, d3));
  const kb: usize = (<usize>k) << 2;
  for (; i < kb; i += 4) {
    const b = f32x4(load<f32>(w0 + i), load<f32>(w1 + i), load<f32>(w2 + i), load<f32>(w3 + i));
    s = f32x4.add(s, f32x4.mul(v128.load_splat<f32>(x + i), b));
  }
  put4(out, s, acc);
}

// 4 rows × 1 output.
function mk4x1(out: usize, ldo: usize, x: usize, ldx: usize, w: usize, k: i32, acc: bool): void {
  let c0 = f32x4.splat(0), c1 = f32x4.splat(0), c2 = f32x4.splat(0), c3 = f32x4.splat(0);
  const x0 = x, x1 = x + ldx, x2 = x + 2 * ldx, x3 = x + 3 * ldx;
  const end: usize = (<usize>(k & ~3)) << 2;
  for (let i: usize = 0; i < end; i += 16) {
    const b = v128.load(w + i);
    c0 = f32x4.add(c0, f32x4.mul(v128.load(x0 + i), b));
    c1 = f32x4.add(c1, f32x4.mul(v128.load(x1 + i), b));
    c2 = f32x4.add(c2, f32x4.mul(v128.load(x2 + i), b));
    c3 = f32x4.add(c3, f32x4.mul(v128.load(x3 + i), b));
  }
  let s = hsum4(c0, c1, c2, c3);
  const kb: usize = (<usize>k) << 2;
  for (let i = end; i < kb; i += 4) {
    const a = f32x4(load<f32>(x0 + i), load<f32>(x1 + i), load<f32>(x2 + i), load<f32>(x3 + i));
    s = f32x4.add(s, f32x4.mul(a, v128.load_splat<f32>(w + i)));
  }
  put1(out, f32x4.extract_lane(s, 0), acc); put1(out + ldo, f32x4.extract_lane(s, 1), acc);
  put1(out + 2 * ldo, f32x4.extract_lane(s, 2), acc); put1(out + 3 * ldo, f32x4.extract_lane(s, 3), acc);
}

// 1 row × 1 output: four f32x4 accumulators, 16 floats per step (GEMV's whole-row kernel).
function mk1x1(out: usize, x: usize, w: usize, k: i32, acc: bool): void {
  let c0 = f32x4.splat(0), c1 = f32x4.splat(0), c2 = f32x4.splat(0), c3 = f32x4.splat(0);
  const end16: usize = (<usize>(k & ~15)) << 2, end4: usize = (<usize>(k & ~3)) << 2, kb: usize = (<usize>k) << 2;
  let i: usize = 0;
  for (; i < end16; i += 64) {
    c0 = f32x4.add(c0, f32x4.mul(v128.load(x + i), v128.load(w + i)));
    c1 = f32x4.add(c1, f32x4.mul(v128.load(x + i, 16), v128.load(w + i, 16)));
    c2 = f32x4.add(c2, f32x4.mul(v128.load(x + i, 32), v128.load(w + i, 32)));
    c3 = f32x4.add(c3, f32x4.mul(v128.load(x + i, 48), v128.load(w + i, 48)));
  }
  for (; i < end4; i += 16) c0 = f32x4.add(c0, f32x4.mul(v128.load(x + i), v128.load(w + i)));
  let s = hsum(f32x4.add(f32x4.add(c0, c1), f32x4.add(c2, c3)));
  for (; i < kb; i += 4) s += load<f32>(x + i) * load<f32>(w + i);
  put1(out, s, acc);
}

// GEMV reads every weight once, straight from DRAM, and WASM has no prefetch instruction. Rows of
// up to 4K floats go one after the other (mk1x1): the weights are then one sequential stream that
// the hardware prefetcher runs ahead on while the core computes, and x stays in L1. Measured on
// one thread against mk1x4 (four rows side by side, touched first): 1.24–1.35× faster for rows of
// 896 and 2K floats, 1.03× at 4K. Longer rows keep mk1x4: x no longer fits L1 next to the stream,
// and reusing each x load for four rows wins (row after row: 0.84× at 8K).
/** Longest weight row (floats) that GEMV reads row after row. */
const GEMV_ROW_MAX: i32 = 4096;

// out[o] += x · w[o] for o < outDim (rows of k floats, contiguous).
function gemvRows(out: usize, x: usize, w: usize, k: i32, outDim: i32): void {
  const rowBytes: usize = (<usize>k) << 2;
  for (let o = 0; o < outDim; o++) mk1x1(out + ((<usize>o) << 2), x, w + <usize>o * rowBytes, k, true);
}

/**
 * out[r][o] += Σ_{i<inDim} x[r][i] · w[o][i] for r < rows, o < outDim.
 * Pointers are byte addresses; ldo, ldx, ldw are row strides in elements.
 */
export function gemmAdd(out: usize, ldo: i32, x: usize, ldx: i32, w: usize, ldw: i32,
  rows: i32, inDim: i32, outDim: i32): void {
  gemm(out, ldo, x, ldx, w, ldw, rows, inDim, outDim, true);
}

/** out[r][o] = Σ_{i<inDim} x[r][i] · w[o][i]: gemmAdd without reading out (no zeroing pass). */
export function gemmSet(out: usize, ldo: i32, x: usize, ldx: i32, w: usize, ldw: i32,
  rows: i32, inDim: i32, outDim: i32): void {
  gemm(out, ldo, x, ldx, w, ldw, rows, inDim, outDim, false);
}

// @ts-ignore: decorator
@inline
function gemm(out: usize, ldo: i32, x: usize, ldx: i32, w: usize, ldw: i32,
  rows: i32, inDim: i32, outDim: i32, accumulate: bool): void {
  const so: usize = (<usize>ldo) << 2, sx: usize = (<usize>ldx) << 2, sw: usize = (<usize>ldw) << 2;
  // One or a few rows: no reuse of weights to gain, stream whole weight rows.
  const kc = rows >= 8 ? KC : inDim;
  const oc = rows >= 8 ? OC : outDim;
  for (let k0 = 0; k0 < inDim; k0 += kc) {
    const kl = min(kc, inDim - k0);
    const kOff: usize = (<usize>k0) << 2;
    const acc = accumulate || k0 > 0;
    for (let o0 = 0; o0 < outDim; o0 += oc) {
      const o1 = min(outDim, o0 + oc);
      let r = 0;
      for (; r + 4 <= rows; r += 4) {
        const xr = x + <usize>r * sx + kOff, outr = out + <usize>r * so;
        let o = o0;
        for (; o + 2 <= o1; o += 2) mk4x2(outr + ((<usize>o) << 2), so, xr, sx, w + <usize>o * sw + kOff, sw, kl, acc);
        for (; o < o1; o++) mk4x1(outr + ((<usize>o) << 2), so, xr, sx, w + <usize>o * sw + kOff, kl, acc);
      }
      for (; r < rows; r++) {
        const xr = x + <usize>r * sx + kOff, outr = out + <usize>r * so;
        let o = o0;
        for (; o + 4 <= o1; o += 4) mk1x4(outr + ((<usize>o) << 2), xr, w + <usize>o * sw + kOff, sw, kl, acc);
        for (; o < o1; o++) mk1x1(outr + ((<usize>o) << 2), xr, w + <usize>o * sw + kOff, kl, acc);
      }
    }
  }
}

/**
 * out[r][o] (+)= Σ_i x[r][i] · w[o][i] + bias[o]. bias = 0 means no bias; accumulate ≠ 0 adds to
 * out instead of overwriting it. x points at the first row used (the caller applies xOffset).
 * ldo is out's row stride in elements (≥ outDim), so threads can each take a block of columns.
 */
export function matmul(out: usize, ldo: i32, x: usize, w: usize, bias: usize, rows: i32, inDim: i32, outDim: i32, accumulate: i32): void {
  const rowBytes: usize = (<usize>outDim) << 2;
  const strideBytes: usize = (<usize>ldo) << 2;
  for (let r = 0; r < rows; r++) {
    const o: usize = out + <usize>r * strideBytes;
    if (accumulate == 0) {
      if (bias != 0) memory.copy(o, bias, rowBytes);
      else memory.fill(o, 0, rowBytes);
    } else if (bias != 0) {
      let i: usize = 0;
      for (; i + 16 <= rowBytes; i += 16) v128.store(o + i, f32x4.add(v128.load(o + i), v128.load(bias + i)));
      for (; i < rowBytes; i += 4) store<f32>(o + i, load<f32>(o + i) + load<f32>(bias + i));
    }
  }
  if (rows == 1 && inDim <= GEMV_ROW_MAX) gemvRows(out, x, w, inDim, outDim);
  else gemmAdd(out, ldo, x, inDim, w, inDim, rows, inDim, outDim);
}
