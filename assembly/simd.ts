// Shared helpers for the kernels: horizontal sums, a vectorised exp, and the touch pass that
// pulls data the kernel is about to use from DRAM into cache.
// All pointers are byte addresses in linear memory; data is f32 unless a helper says otherwise.

/** [Σa0, Σa1, Σa2, Σa3]: the four horizontal sums as one vector. */
// @ts-ignore: decorator
@inline
export function hsum4(a0: v128, a1: v128, a2: v128, a3: v128): v128 {
  // t0 = [a0₀+a0₂, a1₀+a1₂, a0₁+a0₃, a1₁+a1₃], t1 likewise for a2, a3.
  const t0 = f32x4.add(v128.shuffle<f32>(a0, a1, 0, 4, 1, 5), v128.shuffle<f32>(a0, a1, 2, 6, 3, 7));
  const t1 = f32x4.add(v128.shuffle<f32>(a2, a3, 0, 4, 1, 5), v128.shuffle<f32>(a2, a3, 2, 6, 3, 7));
  return f32x4.add(v128.shuffle<f32>(t0, t1, 0, 1, 4, 5), v128.shuffle<f32>(t0, t1, 2, 3, 6, 7));
}

/** Σ of the four lanes. */
// @ts-ignore: decorator
@inline
export function hsum(a: v128): f32 {
  const t = f32x4.add(a, v128.shuffle<f32>(a, a, 2, 3, 0, 1));
  return f32x4.extract_lane(t, 0) + f32x4.extract_lane(t, 1);
}

/** max of the four lanes. */
// @ts-ignore: decorator
@inline
export function hmax(a: v128): f32 {
  const t = f32x4.max(a, v128.shuffle<f32>(a, a, 2, 3, 0, 1));
  return max<f32>(f32x4.extract_lane(t, 0), f32x4.extract_lane(t, 1));
}

const EXP_HI: f32 = 88.0;
const EXP_LO: f32 = -87.0;
/** 1.5·2^23: adding it rounds a float of magnitude < 2^22 to an integer. */
const ROUND_MAGIC: f32 = 12582912.0;

/**
 * e^x per lane. Relative error about 2e-7 for x in [-87, 88]; x < -87 (including -inf) gives 0,
 * x > 88 is clamped to e^88, NaN stays NaN. Range reduction x = n·ln2 + r with |r| ≤ ln2/2, a
 * degree-6 Taylor polynomial for e^r, and 2^n built in the exponent bits. n is rounded by adding
 * 1.5·2^23 (round-to-nearest-even leaves n in the low mantissa bits), which is also where the
 * exponent bits come from: cheaper than nearest + trunc_sat. pmin/pmax (plain minps/maxps) clamp.
 */
// @ts-ignore: decorator
@inline
export function expv(x: v128): v128 {
  const tooSmall = f32x4.lt(x, f32x4.splat(EXP_LO));
  const xc = f32x4.pmax(f32x4.pmin(x, f32x4.splat(EXP_HI)), f32x4.splat(EXP_LO));
  const shifted = f32x4.add(f32x4.mul(xc, f32x4.splat(1.4426950408889634)), f32x4.splat(ROUND_MAGIC));
  const n = f32x4.sub(shifted, f32x4.splat(ROUND_MAGIC));
  // ln2 split in a short high part (exact products with n) and a correction.
  let r = f32x4.sub(xc, f32x4.mul(n, f32x4.splat(0.693359375)));
  r = f32x4.sub(r, f32x4.mul(n, f32x4.splat(-2.12194440e-4)));
  let p = f32x4.add(f32x4.splat(1.0 / 120.0), f32x4.mul(r, f32x4.splat(1.0 / 720.0)));
  p = f32x4.add(f32x4.splat(1.0 / 24.0), f32x4.mul(r, p));
  p = f32x4.add(f32x4.splat(1.0 / 6.0), f32x4.mul(r, p));
  p = f32x4.add(f32x4.splat(0.5), f32x4.mul(r, p));
  p = f32x4.add(f32x4.splat(1.0), f32x4.mul(r, p));
  p = f32x4.add(f32x4.splat(1.0), f32x4.mul(r, p));
  // The low bits of `shifted` hold n (two's complement); shifting them into the exponent field
  // drops the magic number's own bits.
  const pow2 = i32x4.shl(i32x4.add(shifted, i32x4.splat(127)), 23);
  return v128.andnot(f32x4.mul(p, pow2), tooSmall);
}

/** Scalar e^x with the same algorithm (for tails, so results do not depend on alignment). */
// @ts-ignore: decorator
@inline
export function exps(x: f32): f32 {
  return f32x4.extract_lane(expv(f32x4.splat(x)), 0);
}

// WASM has no prefetch instruction. A bandwidth-bound kernel that reads each byte once straight
// from DRAM in a pattern the hardware prefetcher loses (column strips) first reads the data in a
// tight pass, one load per cache line, and then hits cache. The loads are OR-ed into a global so
// that they stay.
let touchSink: i32 = 0;

/** Reads one word per 64-byte line of [a, a + bytes) and [b, b + bytes), lines interleaved. */
// @ts-ignore: decorator
@inline
export function touchPair(a: usize, b: usize, bytes: usize): void {
  let s = touchSink;
  for (let c: usize = 0; c < bytes; c += 64) s |= load<i32>(a + c) | load<i32>(b + c);
  touchSink = s;
}

// 16 signed bytes × d → 16 floats at dst.
// @ts-ignore: decorator
@inline
export function storeS8(dst: usize, v: v128, d: v128): void {
  const lo = i16x8.extend_low_i8x16_s(v), hi = i16x8.extend_high_i8x16_s(v);
  v128.store(dst, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(lo)), d));
  v128.store(dst + 16, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(lo)), d));
  v128.store(dst + 32, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(hi)), d));
  v128.store(dst + 48, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(hi)), d));
}
