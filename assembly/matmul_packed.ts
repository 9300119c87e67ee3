// Matrix multiplication against packed weights (src/model/quant.ts): f16, and GGUF's Q8_0, Q4_0 and
// Q4_K blocks, read in their stored form. A panel of PANEL weight rows is decoded with f32x4 into a
// per-thread scratch of PANEL padded rows (a few KB to a few hundred KB, never the matrix), then the
// f32 gemm runs every x row against the panel: the packed bytes are read once per call, and a prefill
// chunk reuses each decoded panel for all its rows.
import { gemmAdd } from './matmul';
import { hsum, storeS8 } from './simd';

/** Weight rows decoded per panel. */
const PANEL: i32 = 8;

// ggml type ids (quant.ts GGML_TYPE).
const F16: i32 = 1;
const Q4_0: i32 = 2;
const Q8_0: i32 = 8;
const Q4_K: i32 = 12;

/** Elements per block of a type (1 for f16). */
export function packedBlockSize(dtype: i32): i32 {
  return dtype == Q4_K ? 256 : dtype == F16 ? 1 : 32;
}

/** f32 elements of one decoded row of `cols` (whole blocks, rounded up to 4 for f16). */
export function packedScratchFloats(dtype: i32, cols: i32): i32 {
  const bs = packedBlockSize(dtype);
  const padded = ((cols + bs - 1) / bs) * bs;
  return PANEL * ((padded + 3) & ~3);
}

/** IEEE half → f32 (finite values; the exponent is rebased by a multiply by 2^112, subnormals included). */
// @ts-ignore: decorator
@inline
function half(h: u32): f32 {
  const mag = reinterpret<f32>((h & 0x7fff) << 13) * reinterpret<f32>(0x77800000);
  return reinterpret<f32>(reinterpret<u32>(mag) | ((h & 0x8000) << 16));
}

// Halves 0–3 (low) or 4–7 (high) of eight packed halves → four f32, in four ops: a byte shuffle puts
// each half in the top 16 bits of its lane (sign already at bit 31), an arithmetic shift by 3 moves
// exponent and mantissa to f32's positions (copying the sign into bits 28–30, which the mask clears),
// and the multiply by 2^112 rebases the exponent (subnormals included, as in `half`).
// @ts-ignore: decorator
@inline
function halvesLow(h: v128): v128 {
  const v = i8x16.shuffle(h, i32x4.splat(0), 16, 16, 0, 1, 16, 16, 2, 3, 16, 16, 4, 5, 16, 16, 6, 7);
  return f32x4.mul(v128.and(i32x4.shr_s(v, 3), i32x4.splat(0x8fffffff)), f32x4.splat(reinterpret<f32>(0x77800000)));
}

// @ts-ignore: decorator
@inline
function halvesHigh(h: v128): v128 {
  const v = i8x16.shuffle(h, i32x4.splat(0), 16, 16, 8, 9, 16, 16, 10, 11, 16, 16, 12, 13, 16, 16, 14, 15);
  return f32x4.mul(v128.and(i32x4.shr_s(v, 3), i32x4.splat(0x8fffffff)), f32x4.splat(reinterpret<f32>(0x77800000)));
}

// 16 unsigned bytes × d − m → 16 floats at dst (converted as signed, as in dotU8).
// @ts-ignore: decorator
@inline
function storeU8(dst: usize, v: v128, d: v128, m: v128): void {
  const lo = i16x8.extend_low_i8x16_u(v), hi = i16x8.extend_high_i8x16_u(v);
  v128.store(dst, f32x4.sub(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_u(lo)), d), m));
  v128.store(dst + 16, f32x4.sub(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_u(lo)), d), m));
  v128.store(dst + 32, f32x4.sub(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_u(hi)), d), m));
  v128.store(dst + 48, f32x4.sub(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_u(hi)), d), m));
}

// Q4_K sub-block j's 6-bit scale (which = 0) or min (which = 1) from the 12 bytes at q (get_scale_min_k4).
// @ts-ignore: decorator
@inline
function scaleMinK4(j: i32, q: usize, which: i32): u32 {
  if (j < 4) return <u32>load<u8>(q + <usize>(j + 4 * which)) & 63;
  const b = <u32>load<u8>(q + <usize>(j + 4));
  return which == 0
    ? (b & 0xf) | ((<u32>load<u8>(q + <usize>(j - 4)) >> 6) << 4)
    : (b >> 4) | ((<u32>load<u8>(q + <usize>j) >> 6) << 4);
}

/** Decodes one packed row (`nb` blocks from src) into `nb` × blockSize floats at dst. */
function decodeRow(dst: usize, src: usize, dtype: i32, cols: i32): void {
  if (dtype == F16) {
    let i = 0;
    for (; i + 8 <= cols; i += 8) {
      const h = v128.load(src + (<usize>i << 1));
      v128.store(dst + (<usize>i << 2), halvesLow(h));
      v128.store(dst + (<usize>i << 2) + 16, halvesHigh(h));
    }
    for (; i < cols; i++) store<f32>(dst + (<usize>i << 2), half(<u32>load<u16>(src + (<usize>i << 1))));
    return;
  }
  if (dtype == Q8_0) {
    const nb = (cols + 31) >> 5;
    for (let b = 0; b < nb; b++) {
      const p = src + <usize>b * 34, o = dst + (<usize>b << 7);
      const d = f32x4.splat(half(<u32>load<u16>(p)));
      storeS8(o, v128.load(p + 2), d);
      storeS8(o + 64, v128.load(p + 18), d);
    }
    return;
  }
  if (dtype == Q4_0) {
    const nb = (cols + 31) >> 5;
    const mask = i8x16.splat(0x0f), eight = i8x16.splat(8);
    for (let b = 0; b < nb; b++) {
      const p = src + <usize>b * 18, o = dst + (<usize>b << 7);
      const d = f32x4.splat(half(<u32>load<u16>(p)));
      const v = v128.load(p + 2);
      storeS8(o, i8x16.sub(v128.and(v, mask), eight), d); // elements 0..15: low nibbles
      storeS8(o + 64, i8x16.sub(i8x16.shr_u(v, 4), eight), d); // 16..31: high nibbles
    }
    return;
  }
  // Q4_K: 256-element super-blocks of 144 bytes; each 64-element chunk is 32 bytes, low nibbles first.
  const nb = (cols + 255) >> 8;
  const mask = i8x16.splat(0x0f);
  for (let b = 0; b < nb; b++) {
    const p = src + <usize>b * 144, o = dst + (<usize>b << 10);
    const d = half(<u32>load<u16>(p)), dmin = half(<u32>load<u16>(p + 2));
    const sc = p + 4, qs = p + 16;
    for (let c = 0; c < 4; c++) {
      const d1 = f32x4.splat(d * <f32>scaleMinK4(2 * c, sc, 0)), m1 = f32x4.splat(dmin * <f32>scaleMinK4(2 * c, sc, 1));
      const d2 = f32x4.splat(d * <f32>scaleMinK4(2 * c + 1, sc, 0)), m2 = f32x4.splat(dmin * <f32>scaleMinK4(2 * c + 1, sc, 1));
      const q = qs + (<usize>c << 5), oc = o + (<usize>c << 8);
      const v0 = v128.load(q), v1 = v128.load(q + 16);
      storeU8(oc, v128.and(v0, mask), d1, m1);
      storeU8(oc + 64, v128.and(v1, mask), d1, m1);
      storeU8(oc + 128, i8x16.shr_u(v0, 4), d2, m2);
      storeU8(oc + 192, i8x16.shr_u(v1, 4), d2, m2);
    }
  }
}

/**
 * Quantizes x (`cols` floats, zero-padded to `nb` blocks of 32) to int16 at xq (nb·64 bytes) with one
 * f32 scale per block at sx (nb floats): q = nearest-even(x · (32767/maxabs)), scale maxabs/32767, an
 * all-zero block scale 0. int16 rather than int8: with int8 the logits moved by up to 7%; the int16
 * rounding error is at most scale/2 per element. tmp: 128 bytes for a partial last block.
 */
function quantizeX16(xq: usize, sx: usize, x: usize, cols: i32, nb: i32, tmp: usize): void {
  for (let b = 0; b < nb; b++) {
    let src = x + (<usize>b << 7);
    if (b * 32 + 32 > cols) {
      const n = cols - b * 32;
      memory.copy(tmp, src, (<usize>n) << 2);
      memory.fill(tmp + ((<usize>n) << 2), 0, (<usize>(32 - n)) << 2);
      src = tmp;
    }
    const v0 = v128.load(src), v1 = v128.load(src + 16), v2 = v128.load(src + 32), v3 = v128.load(src + 48);
    const v4 = v128.load(src + 64), v5 = v128.load(src + 80), v6 = v128.load(src + 96), v7 = v128.load(src + 112);
    const m = f32x4.max(f32x4.max(f32x4.max(f32x4.abs(v0), f32x4.abs(v1)), f32x4.max(f32x4.abs(v2), f32x4.abs(v3))),
      f32x4.max(f32x4.max(f32x4.abs(v4), f32x4.abs(v5)), f32x4.max(f32x4.abs(v6), f32x4.abs(v7))));
    const t = f32x4.max(m, v128.shuffle<f32>(m, m, 2, 3, 0, 1));
    const mx = max<f32>(f32x4.extract_lane(t, 0), f32x4.extract_lane(t, 1));
    // A NaN or infinite block keeps a NaN/inf scale (and zero codes), so the output is not finite either.
    store<f32>(sx + (<usize>b << 2), mx / <f32>32767);
    const inv = f32x4.splat(mx > 0 && mx < Infinity ? <f32>32767 / mx : <f32>0);
    const q = xq + (<usize>b << 6);
    v128.store(q, i16x8.narrow_i32x4_s(round16(v0, inv), round16(v1, inv)));
    v128.store(q + 16, i16x8.narrow_i32x4_s(round16(v2, inv), round16(v3, inv)));
    v128.store(q + 32, i16x8.narrow_i32x4_s(round16(v4, inv), round16(v5, inv)));
    v128.store(q + 48, i16x8.narrow_i32x4_s(round16(v6, inv), round16(v7, inv)));
  }
}

// x · inv rounded to the nearest integer (ties to even), as i32 lanes.
// @ts-ignore: decorator
@inline
function round16(v: v128, inv: v128): v128 {
  return i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v, inv)));
}

// Block b of a Q8_0 or Q4_0 row against the block's int16 x codes q0..q3 (8 each) and x scale sxb:
// the 32 products summed exactly in i32 (32 · 128 · 32767 < 2^31) as four lanes, converted to f32
// and scaled by (weight scale × x scale).
// @ts-ignore: decorator
@inline
function blockDot(row: usize, b: i32, dtype: i32, q0: v128, q1: v128, q2: v128, q3: v128, sxb: f32): v128 {
  let lo: v128, hi: v128, p: usize;
  if (dtype == Q8_0) {
    p = row + <usize>b * 34;
    lo = v128.load(p + 2); hi = v128.load(p + 18);
  } else {
    p = row + <usize>b * 18;
    const v = v128.load(p + 2);
    lo = i8x16.sub(v128.and(v, i8x16.splat(0x0f)), i8x16.splat(8)); // elements 0..15: low nibbles
    hi = i8x16.sub(i8x16.shr_u(v, 4), i8x16.splat(8)); // 16..31: high nibbles
  }
  let s = i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(lo), q0);
  s = i32x4.add(s, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(lo), q1));
  s = i32x4.add(s, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(hi), q2));
  s = i32x4.add(s, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(hi), q3));
  return f32x4.mul(f32x4.convert_i32x4_s(s), f32x4.splat(half(<u32>load<u16>(p)) * sxb));
}

// One row (GEMV) against Q8_0 or Q4_0 rows with x quantized by quantizeX16.
function gemvBlocks(out: usize, xq: usize, sx: usize, w: usize, rowBytes: i32, outDim: i32, nb: i32, dtype: i32): void {
  for (let o = 0; o < outDim; o++) {
    const row = w + <usize>o * <usize>rowBytes;
    let acc = f32x4.splat(0);
    for (let b = 0; b < nb; b++) {
      const qb = xq + (<usize>b << 6);
      acc = f32x4.add(acc, blockDot(row, b, dtype, v128.load(qb), v128.load(qb + 16), v128.load(qb + 32), v128.load(qb + 48), load<f32>(sx + (<usize>b << 2))));
    }
    const po = out + (<usize>o << 2);
    store<f32>(po, load<f32>(po) + hsum(acc));
  }
}

// Σ_k x[k] · (16 unsigned bytes of v)[k], as dotS8. The lanes (0–255) convert as signed: x86 has no
// unsigned i32 → f32 instruction, and V8's emulation of one costs several.
// @ts-ignore: decorator
@inline
function dotU8(x: usize, v: v128): v128 {
  const lo = i16x8.extend_low_i8x16_u(v), hi = i16x8.extend_high_i8x16_u(v);
  let s = f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_u(lo)), v128.load(x));
  s = f32x4.add(s, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_u(lo)), v128.load(x + 16)));
  s = f32x4.add(s, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_u(hi)), v128.load(x + 32)));
  return f32x4.add(s, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_u(hi)), v128.load(x + 48)));
}

// One row (GEMV) against Q4_K rows, fused. A 32-element sub-block's weights are d·sc·q − dmin·m, so
// its dot with x is d·sc·Σq·x − dmin·m·Σx: the nibbles are multiplied in as they are, and the sums
// Σx of x's sub-blocks (xsum, computed once per call) carry the minimums. x holds whole super-blocks.
function gemvQ4K(out: usize, x: usize, xsum: usize, w: usize, rowBytes: i32, outDim: i32, nb: i32): void {
  const mask = i8x16.splat(0x0f);
  for (let o = 0; o < outDim; o++) {
    const row = w + <usize>o * <usize>rowBytes;
    let acc = f32x4.splat(0);
    let mins: f32 = 0;
    for (let b = 0; b < nb; b++) {
      const p = row + <usize>b * 144, sc = p + 4, qs = p + 16;
      const d = half(<u32>load<u16>(p)), dmin = half(<u32>load<u16>(p + 2));
      const xb = x + (<usize>b << 10), sb = xsum + (<usize>b << 5);
      for (let c = 0; c < 4; c++) {
        const q = qs + (<usize>c << 5), xc = xb + (<usize>c << 8);
        const v0 = v128.load(q), v1 = v128.load(q + 16);
        const lo = f32x4.add(dotU8(xc, v128.and(v0, mask)), dotU8(xc + 64, v128.and(v1, mask)));
        const hi = f32x4.add(dotU8(xc + 128, i8x16.shr_u(v0, 4)), dotU8(xc + 192, i8x16.shr_u(v1, 4)));
        acc = f32x4.add(acc, f32x4.mul(lo, f32x4.splat(d * <f32>scaleMinK4(2 * c, sc, 0))));
        acc = f32x4.add(acc, f32x4.mul(hi, f32x4.splat(d * <f32>scaleMinK4(2 * c + 1, sc, 0))));
        mins += dmin * (<f32>scaleMinK4(2 * c, sc, 1) * load<f32>(sb + (<usize>(2 * c) << 2))
          + <f32>scaleMinK4(2 * c + 1, sc, 1) * load<f32>(sb + (<usize>(2 * c + 1) << 2)));
      }
    }
    const t = f32x4.add(acc, v128.shuffle<f32>(acc, acc, 2, 3, 0, 1));
    const po = out + (<usize>o << 2);
    store<f32>(po, load<f32>(po) + (f32x4.extract_lane(t, 0) + f32x4.extract_lane(t, 1) - mins));
  }
}

// One row (GEMV) against f16 rows, fused: eight halves at a time are widened to f32 in registers and
// multiplied into four accumulators, with no decoded copy of the row (the panel path writes one and
// reads it back, which costs about as much again as the conversion).
function gemvF16(out: usize, x: usize, w: usize, rowBytes: i32, outDim: i32, cols: i32): void {
  const end16 = cols & ~15;
  for (let o = 0; o < outDim; o++) {
    const row = w + <usize>o * <usize>rowBytes;
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
    let i = 0;
    for (; i < end16; i += 16) {
      const h0 = v128.load(row + (<usize>i << 1)), h1 = v128.load(row + (<usize>i << 1) + 16);
      const xi = x + (<usize>i << 2);
      a0 = f32x4.add(a0, f32x4.mul(halvesLow(h0), v128.load(xi)));
      a1 = f32x4.add(a1, f32x4.mul(halvesHigh(h0), v128.load(xi + 16)));
      a2 = f32x4.add(a2, f32x4.mul(halvesLow(h1), v128.load(xi + 32)));
      a3 = f32x4.add(a3, f32x4.mul(halvesHigh(h1), v128.load(xi + 48)));
    }
    const t = f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3));
    let sum = f32x4.extract_lane(t, 0) + f32x4.extract_lane(t, 1) + f32x4.extract_lane(t, 2) + f32x4.extract_lane(t, 3);
    for (; i < cols; i++) sum += half(<u32>load<u16>(row + (<usize>i << 1))) * load<f32>(x + (<usize>i << 2));
    const po = out + (<usize>o << 2);
    store<f32>(po, load<f32>(po) + sum);
  }
}

/**
 * out[r][o] (+)= Σ_i x[r][i] · W[o][i] (+ bias[o]) for r < rows, o < outDim, where W's rows are packed
 * `dtype` rows of rowBytes bytes starting at w. ldo is out's row stride in elements; scratch holds
 * packedScratchFloats(dtype, inDim) floats (one per thread). bias = 0: none; accumulate ≠ 0 adds to out.
 */
export function matmulPacked(out: usize, ldo: i32, x: usize, w: usize, bias: usize, rows: i32, inDim: i32, outDim: i32,
  accumulate: i32, dtype: i32, rowBytes: i32, scratch: usize): void {
  const stride: usize = (<usize>ldo) << 2;
  for (let r = 0; r < rows; r++) {
    const o: usize = out + <usize>r * stride;
    for (let c = 0; c < outDim; c++) {
      const prev = accumulate != 0 ? load<f32>(o + (<usize>c << 2)) : <f32>0;
      store<f32>(o + (<usize>c << 2), prev + (bias != 0 ? load<f32>(bias + (<usize>c << 2)) : <f32>0));
    }
  }
  const bs = packedBlockSize(dtype);
  const ld = ((((inDim + bs - 1) / bs) * bs) + 3) & ~3;
  if (rows == 1 && dtype == F16) {
    gemvF16(out, x, w, rowBytes, outDim, inDim);
    return;
  }
  if (rows == 1 && dtype == Q4_K) {
    // x is copied, zero-padded to whole super-blocks, into the scratch when it ends inside one; its
    // sub-block sums follow it there.
    const nb = (inDim + 255) >> 8;
    let xs = x;
    if ((inDim & 255) != 0) {
      memory.copy(scratch, x, (<usize>inDim) << 2);
      memory.fill(scratch + ((<usize>inDim) << 2), 0, (<usize>(nb * 256 - inDim)) << 2);
      xs = scratch;
    }
    const xsum = scratch + ((<usize>nb) << 10);
    for (let t = 0; t < nb * 8; t++) {
      const xt = xs + (<usize>t << 7);
      let a = f32x4.add(f32x4.add(v128.load(xt), v128.load(xt + 16)), f32x4.add(v128.load(xt + 32), v128.load(xt + 48)));
      a = f32x4.add(a, f32x4.add(f32x4.add(v128.load(xt + 64), v128.load(xt + 80)), f32x4.add(v128.load(xt + 96), v128.load(xt + 112))));
      store<f32>(xsum + (<usize>t << 2), f32x4.extract_lane(a, 0) + f32x4.extract_lane(a, 1) + f32x4.extract_lane(a, 2) + f32x4.extract_lane(a, 3));
    }
    gemvQ4K(out, xs, xsum, w, rowBytes, outDim, nb);
    return;
  }
  if (rows == 1 && (dtype == Q8_0 || dtype == Q4_0)) {
    // Scratch (8 · 128 bytes per block, packedScratchFloats) holds the int16 codes (64 bytes per
    // block), the block scales (4) and a 128-byte buffer for a partial last block.
    const nb = (inDim + 31) >> 5;
    const sx = scratch + (<usize>nb << 6), tmp = sx + (<usize>nb << 2);
    quantizeX16(scratch, sx, x, inDim, nb, tmp);
    gemvBlocks(out, scratch, sx, w, rowBytes, outDim, nb, dtype);
    return;
  }
  for (let o0 = 0; o0 < outDim; o0 += PANEL) {
    const n = min(PANEL, outDim - o0);
    for (let j = 0; j < n; j++) decodeRow(scratch + <usize>j * (<usize>ld << 2), w + <usize>(o0 + j) * <usize>rowBytes, dtype, inDim);
    gemmAdd(out + (<usize>o0 << 2), ldo, x, inDim, scratch, ld, rows, inDim, n);
  }
}
