// Rows of the full KV caches in their storage type (layout and rounding: src/backend/kv-dtype.ts,
// whose reference encoder these match bit for bit): encode at append time, decode blocks of rows
// to f32 for the attention kernel.
import { storeS8 } from './simd';

export const KV_F32: i32 = 0;
export const KV_F16: i32 = 1;
export const KV_INT8: i32 = 2;

/** Bytes of one row (one position of one KV head). */
export function kvRowBytes(headDim: i32, dtype: i32): usize {
  if (dtype == KV_F16) return (<usize>((headDim + 1) >> 1)) << 2;
  if (dtype == KV_INT8) return (<usize>((headDim + 3) >> 2) << 2) + 4;
  return (<usize>headDim) << 2;
}

/** f32 → IEEE half bits: round to nearest even, overflow → ±Inf, NaN stays NaN, subnormals kept. */
function toHalf(x: f32): u32 {
  const b = reinterpret<u32>(x);
  const sign = (b >> 16) & 0x8000;
  const exp = <i32>((b >> 23) & 0xff);
  let mant = b & 0x7fffff;
  if (exp == 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = <u32>(14 - e);
    const h = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid: u32 = 1 << (shift - 1);
    return sign | (h + (rem > mid || (rem == mid && (h & 1) != 0) ? 1 : 0));
  }
  const h = (<u32>e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  return sign | (h + (rem > 0x1000 || (rem == 0x1000 && (h & 1) != 0) ? 1 : 0));
}

/** Four halves (u32 lanes) → four f32, exactly (Inf and NaN included). */
// @ts-ignore: decorator
@inline
function half4(h: v128): v128 {
  const m = v128.and(h, i32x4.splat(0x7fff));
  const bits = i32x4.shl(m, 13);
  // Rebase the exponent by 2^112 (subnormals become normal); exponent 31 (Inf, NaN) maps to 255.
  const finite = f32x4.mul(bits, f32x4.splat(reinterpret<f32>(0x77800000)));
  const special = v128.or(bits, i32x4.splat(0x70000000));
  const mag = v128.bitselect(special, finite, i32x4.ge_s(m, i32x4.splat(0x7c00)));
  return v128.or(mag, i32x4.shl(v128.and(h, i32x4.splat(0x8000)), 16));
}

// @ts-ignore: decorator
@inline
function half(h: u32): f32 {
  return f32x4.extract_lane(half4(i32x4.splat(h)), 0);
}

/** Encodes headDim f32 at src into one row at dst. */
export function encodeRow(dst: usize, src: usize, headDim: i32, dtype: i32): void {
  if (dtype == KV_F32) { memory.copy(dst, src, (<usize>headDim) << 2); return; }
  if (dtype == KV_F16) {
    for (let i = 0; i < headDim; i++) store<u16>(dst + ((<usize>i) << 1), <u16>toHalf(load<f32>(src + ((<usize>i) << 2))));
    if (headDim & 1) store<u16>(dst + ((<usize>headDim) << 1), 0);
    return;
  }
  let amax: f32 = 0;
  for (let i = 0; i < headDim; i++) amax = max<f32>(amax, abs<f32>(load<f32>(src + ((<usize>i) << 2))));
  const inv: f32 = amax > 0 ? <f32>127 / amax : 0;
  const padded = (headDim + 3) & ~3;
  for (let i = 0; i < padded; i++) {
    let q: f32 = 0;
    if (i < headDim) {
      q = min<f32>(127, max<f32>(-127, nearest<f32>(load<f32>(src + ((<usize>i) << 2)) * inv)));
      if (q != q) q = 0; // NaN input: code 0, as the reference (the scale carries the NaN)
    }
    store<i8>(dst + <usize>i, <i8><i32>q);
  }
  store<f32>(dst + <usize>padded, amax / <f32>127);
}

/** Decodes n rows (rowBytes apart from src) into n dense f32 rows of headDim at dst. */
export function decodeRows(dst: usize, src: usize, rowBytes: usize, n: i32, headDim: i32, dtype: i32): void {
  const vecBytes: usize = (<usize>headDim) << 2;
  for (let j = 0; j < n; j++) {
    const s = src + <usize>j * rowBytes, d = dst + <usize>j * vecBytes;
    let i = 0;
    if (dtype == KV_F16) {
      for (; i + 8 <= headDim; i += 8) {
        const h = v128.load(s + ((<usize>i) << 1));
        v128.store(d + ((<usize>i) << 2), half4(i32x4.extend_low_i16x8_u(h)));
        v128.store(d + ((<usize>i) << 2) + 16, half4(i32x4.extend_high_i16x8_u(h)));
      }
      for (; i < headDim; i++) store<f32>(d + ((<usize>i) << 2), half(<u32>load<u16>(s + ((<usize>i) << 1))));
    } else {
      const scale = load<f32>(s + <usize>((headDim + 3) & ~3));
      const sc = f32x4.splat(scale);
      for (; i + 16 <= headDim; i += 16) storeS8(d + ((<usize>i) << 2), v128.load(s + <usize>i), sc);
      for (; i < headDim; i++) store<f32>(d + ((<usize>i) << 2), <f32>load<i8>(s + <usize>i) * scale);
    }
  }
}
