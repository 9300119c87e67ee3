// Packed weight storage: f32, IEEE half (f16), and GGUF's Q8_0, Q4_0 and Q4_K blocks, byte for byte as
// ggml lays them out (ggml-common.h: block_q8_0, block_q4_0, block_q4_K), so a row of a PackedMatrix is a
// row of the GGUF tensor and the kernels can read either without conversion.
//
// Rows whose length is not a multiple of the block (32, or 256 for Q4_K) are zero-padded to whole blocks
// in memory: `cols` stays the true length, rowBytes(dtype, cols) counts the padded blocks, and the padding
// dequantizes to exact zeros (it is quantized from zeros). GGUF itself requires whole blocks, so a GGUF
// writer stores such a tensor in another type (as llama.cpp falls back for them) rather than these bytes.

export type WeightDType = 'f32' | 'f16' | 'q8_0' | 'q4_0' | 'q4_k';
export const WEIGHT_DTYPES: readonly WeightDType[] = ['f32', 'f16', 'q8_0', 'q4_0', 'q4_k'];

/** ggml's type ids (enum ggml_type), as GGUF tensor infos carry them. */
export const GGML_TYPE = { f32: 0, f16: 1, q4_0: 2, q8_0: 8, q4_k: 12, bf16: 30 } as const;

export interface PackedMatrix {
  dtype: WeightDType;
  rows: number;
  cols: number;
  /** f32: the values, row-major. Otherwise the raw bytes: `rows` rows of rowBytes(dtype, cols) each. */
  data: Float32Array | Uint8Array;
}

export const QK8_0 = 32;
export const QK4_0 = 32;
export const QK_K = 256;
/** Bytes of one block: Q8_0 = f16 d + 32 int8; Q4_0 = f16 d + 16 bytes of nibbles; Q4_K = f16 d, f16 dmin, 12 scale bytes, 128 bytes of nibbles. */
const BLOCK_BYTES: Record<WeightDType, number> = { f32: 4, f16: 2, q8_0: 34, q4_0: 18, q4_k: 144 };
const BLOCK_SIZE: Record<WeightDType, number> = { f32: 1, f16: 1, q8_0: QK8_0, q4_0: QK4_0, q4_k: QK_K };

export function isWeightDType(s: string): s is WeightDType {
  return (WEIGHT_DTYPES as readonly string[]).includes(s);
}

/** Elements per block (1 for f32 and f16). */
export function blockSize(dtype: WeightDType): number {
  const b = BLOCK_SIZE[dtype];
  if (b === undefined) throw new Error(`unknown weight dtype "${dtype}" (supported: ${WEIGHT_DTYPES.join(', ')})`);
  return b;
}

/** Bytes of one block (4 for f32, 2 for f16). */
export function blockBytes(dtype: WeightDType): number {
  blockSize(dtype);
  return BLOCK_BYTES[dtype];
}

/** Bytes of one row of `cols` elements, padded to whole blocks. */
export function rowBytes(dtype: WeightDType, cols: number): number {
  return Math.ceil(cols / blockSize(dtype)) * BLOCK_BYTES[dtype];
}

/** Bytes of the whole matrix's storage. */
export function packedBytes(m: PackedMatrix): number {
  return m.rows * rowBytes(m.dtype, m.cols);
}

// ---- half and bfloat16 scalars -----------------------------------------------------------------------

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** f32 → IEEE half bits, round to nearest even; overflow → ±Inf, NaN stays NaN, subnormals kept. */
export function f32ToF16(x: number): number {
  f32buf[0] = x;
  const b = u32buf[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal: ±0
    mant |= 0x800000;
    const shift = 14 - e; // 14..24
    const half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    return sign | (half + (rem > mid || (rem === mid && (half & 1)) ? 1 : 0));
  }
  const half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (and reaches 0x7c00 = Inf at the top).
  return sign | (half + (rem > 0x1000 || (rem === 0x1000 && (half & 1)) ? 1 : 0));
}

const F16_TABLE = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
    t[h] = exp === 0 ? sign * frac * 2 ** -24 : exp === 31 ? (frac ? NaN : sign * Infinity) : sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return t;
})();

/** IEEE half bits → f32 (exact). */
export function f16ToF32(h: number): number {
  return F16_TABLE[h & 0xffff];
}

/** bfloat16 bits → f32 (exact: the top half of an f32). */
export function bf16ToF32(h: number): number {
  u32buf[0] = (h & 0xffff) << 16;
  return f32buf[0];
}

/** Rounds an f32 through half precision. */
export function roundF16(x: number): number {
  return F16_TABLE[f32ToF16(x)];
}

export function f32ArrayToF16(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToF16(src[i]);
  return out;
}

export function f16ArrayToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = F16_TABLE[src[i]];
  return out;
}

export function bf16ArrayToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const u = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) u[i] = src[i] << 16;
  return out;
}

// ---- block codecs (one block at `o` in `dst`, from `n` ≤ block values at x[xo..]; the rest are zeros) -----

function setF16(dst: Uint8Array, o: number, h: number): void {
  dst[o] = h & 0xff;
  dst[o + 1] = h >>> 8;
}
function getF16(src: Uint8Array, o: number): number {
  return F16_TABLE[src[o] | (src[o + 1] << 8)];
}

/** ggml's nearest_int / roundf for the magnitudes here: round half away from zero. */
function roundAway(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

function quantizeBlockQ8_0(x: Float32Array, dst: Uint8Array, o: number): void {
  let amax = 0;
  for (let i = 0; i < QK8_0; i++) amax = Math.max(amax, Math.abs(x[i]));
  const d = amax / 127;
  const id = d ? 1 / d : 0;
  setF16(dst, o, f32ToF16(d));
  for (let i = 0; i < QK8_0; i++) dst[o + 2 + i] = roundAway(x[i] * id) & 0xff;
}
function dequantizeBlockQ8_0(src: Uint8Array, o: number, y: Float32Array, yo: number, n: number): void {
  const d = getF16(src, o);
  for (let i = 0; i < n; i++) y[yo + i] = d * ((src[o + 2 + i] << 24) >> 24);
}

function quantizeBlockQ4_0(x: Float32Array, dst: Uint8Array, o: number): void {
  // The value of largest magnitude, with its sign, maps to -8: d = max / -8.
  let amax = 0, max = 0;
  for (let i = 0; i < QK4_0; i++) {
    if (Math.abs(x[i]) > amax) { amax = Math.abs(x[i]); max = x[i]; }
  }
  const d = max / -8;
  const id = d ? 1 / d : 0;
  setF16(dst, o, f32ToF16(d));
  for (let j = 0; j < QK4_0 / 2; j++) {
    const lo = Math.min(15, Math.trunc(x[j] * id + 8.5));
    const hi = Math.min(15, Math.trunc(x[j + QK4_0 / 2] * id + 8.5));
    dst[o + 2 + j] = lo | (hi << 4);
  }
}
function dequantizeBlockQ4_0(src: Uint8Array, o: number, y: Float32Array, yo: number, n: number): void {
  const d = getF16(src, o);
  for (let j = 0; j < QK4_0 / 2; j++) {
    const b = src[o + 2 + j];
    if (j < n) y[yo + j] = ((b & 0xf) - 8) * d;
    if (j + 16 < n) y[yo + j + 16] = ((b >> 4) - 8) * d;
  }
}

/** Sub-block j's 6-bit scale and min from the 12 packed bytes at `q` (ggml's get_scale_min_k4). */
export function q4kScaleMin(j: number, src: Uint8Array, q: number): [number, number] {
  if (j < 4) return [src[q + j] & 63, src[q + j + 4] & 63];
  return [(src[q + j + 4] & 0xf) | ((src[q + j - 4] >> 6) << 4), (src[q + j + 4] >> 4) | ((src[q + j] >> 6) << 4)];
}

/**
 * Weighted least-squares fit of x ≈ scale·l − min with l in 0..nmax and min ≥ 0 (ggml's make_qkx2_quants
 * idea: start from the min/max grid, then try nstep nearby grid spacings and keep the best fit).
 */
function fitScaleMin(x: Float32Array, xo: number, w: Float32Array, n: number, nmax: number): { scale: number; min: number } {
  let lo = x[xo], hi = x[xo], sumW = 0, sumX = 0;
  for (let i = 0; i < n; i++) {
    const v = x[xo + i];
    lo = Math.min(lo, v); hi = Math.max(hi, v);
    sumW += w[i]; sumX += w[i] * v;
  }
  if (lo > 0) lo = 0;
  if (hi === lo) return { scale: 0, min: -lo };
  let scale = (hi - lo) / nmax, offset = lo, best = 0;
  for (let i = 0; i < n; i++) {
    const l = Math.max(0, Math.min(nmax, roundAway((x[xo + i] - lo) / scale)));
    const diff = scale * l + lo - x[xo + i];
    best += w[i] * diff * diff;
  }
  const L = new Uint8Array(n);
  for (let step = 0; step <= 20; step++) {
    const iscale = (-1 + 0.1 * step + nmax) / (hi - lo);
    let sl = 0, sl2 = 0, sxl = 0;
    for (let i = 0; i < n; i++) {
      const l = Math.max(0, Math.min(nmax, roundAway(iscale * (x[xo + i] - lo))));
      L[i] = l;
      sl += w[i] * l; sl2 += w[i] * l * l; sxl += w[i] * l * x[xo + i];
    }
    const D = sumW * sl2 - sl * sl;
    if (D <= 0) continue;
    let s = (sumW * sxl - sumX * sl) / D;
    let m = (sl2 * sumX - sl * sxl) / D;
    if (m > 0) { m = 0; s = sxl / sl2; }
    let err = 0;
    for (let i = 0; i < n; i++) {
      const diff = s * L[i] + m - x[xo + i];
      err += w[i] * diff * diff;
    }
    if (err < best) { best = err; scale = s; offset = m; }
  }
  return { scale, min: -offset };
}

function quantizeBlockQ4_K(x: Float32Array, dst: Uint8Array, o: number): void {
  let sumX2 = 0;
  for (let i = 0; i < QK_K; i++) sumX2 += x[i] * x[i];
  const avX = Math.sqrt(sumX2 / QK_K);
  const w = new Float32Array(32);
  const scales = new Float32Array(8), mins = new Float32Array(8);
  for (let j = 0; j < 8; j++) {
    for (let l = 0; l < 32; l++) w[l] = avX + Math.abs(x[32 * j + l]);
    const f = fitScaleMin(x, 32 * j, w, 32, 15);
    scales[j] = f.scale; mins[j] = f.min;
  }
  let maxScale = 0, maxMin = 0;
  for (let j = 0; j < 8; j++) { maxScale = Math.max(maxScale, scales[j]); maxMin = Math.max(maxMin, mins[j]); }
  const invScale = maxScale > 0 ? 63 / maxScale : 0;
  const invMin = maxMin > 0 ? 63 / maxMin : 0;
  const q = o + 4;
  for (let k = 0; k < 12; k++) dst[q + k] = 0;
  for (let j = 0; j < 8; j++) {
    const ls = Math.min(63, roundAway(invScale * scales[j]));
    const lm = Math.min(63, roundAway(invMin * mins[j]));
    if (j < 4) {
      dst[q + j] = ls;
      dst[q + j + 4] = lm;
    } else {
      dst[q + j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
      dst[q + j - 4] |= (ls >> 4) << 6;
      dst[q + j] |= (lm >> 4) << 6;
    }
  }
  setF16(dst, o, f32ToF16(maxScale / 63));
  setF16(dst, o + 2, f32ToF16(maxMin / 63));
  // Requantize against the scales as stored (rounded to 6 bits and f16), so the nibbles fit what decodes.
  const d = getF16(dst, o), dmin = getF16(dst, o + 2);
  const L = new Uint8Array(QK_K);
  for (let j = 0; j < 8; j++) {
    const [sc, m] = q4kScaleMin(j, dst, q);
    const dj = d * sc;
    if (!dj) continue;
    const dm = dmin * m;
    for (let l = 0; l < 32; l++) L[32 * j + l] = Math.max(0, Math.min(15, roundAway((x[32 * j + l] + dm) / dj)));
  }
  // Each 64-element chunk is 32 bytes: low nibbles are its first 32 elements, high nibbles the next 32.
  for (let c = 0; c < 4; c++) {
    for (let l = 0; l < 32; l++) dst[o + 16 + 32 * c + l] = L[64 * c + l] | (L[64 * c + 32 + l] << 4);
  }
}
function dequantizeBlockQ4_K(src: Uint8Array, o: number, y: Float32Array, yo: number, n: number): void {
  const d = getF16(src, o), dmin = getF16(src, o + 2);
  for (let c = 0; c < 4; c++) {
    const [s1, m1] = q4kScaleMin(2 * c, src, o + 4);
    const [s2, m2] = q4kScaleMin(2 * c + 1, src, o + 4);
    const d1 = d * s1, o1 = dmin * m1, d2 = d * s2, o2 = dmin * m2;
    for (let l = 0; l < 32; l++) {
      const b = src[o + 16 + 32 * c + l];
      const i1 = 64 * c + l, i2 = 64 * c + 32 + l;
      if (i1 < n) y[yo + i1] = d1 * (b & 0xf) - o1;
      if (i2 < n) y[yo + i2] = d2 * (b >> 4) - o2;
    }
  }
}

type BlockQuantizer = (x: Float32Array, dst: Uint8Array, o: number) => void;
type BlockDequantizer = (src: Uint8Array, o: number, y: Float32Array, yo: number, n: number) => void;
const QUANTIZERS: Partial<Record<WeightDType, BlockQuantizer>> = { q8_0: quantizeBlockQ8_0, q4_0: quantizeBlockQ4_0, q4_k: quantizeBlockQ4_K };
const DEQUANTIZERS: Partial<Record<WeightDType, BlockDequantizer>> = { q8_0: dequantizeBlockQ8_0, q4_0: dequantizeBlockQ4_0, q4_k: dequantizeBlockQ4_K };

function checkShape(what: string, rows: number, cols: number): void {
  if (!Number.isInteger(rows) || rows < 0 || !Number.isInteger(cols) || cols < 0) throw new Error(`${what}: invalid shape [${rows}, ${cols}]`);
}

/**
 * Packs a row-major [rows, cols] f32 matrix into `dtype`. A value the format cannot hold (non-finite,
 * beyond f16's ±65504, or a block whose f16 scale would overflow) is an error naming `what` (the
 * tensor) and the element, never a silent Inf: BF16 and f32 checkpoints can hold such values.
 */
export function quantizeMatrix(dtype: WeightDType, values: Float32Array, rows: number, cols: number, what = 'matrix'): PackedMatrix {
  checkShape(`quantizeMatrix(${dtype})`, rows, cols);
  if (values.length !== rows * cols) throw new Error(`quantizeMatrix(${dtype}): ${values.length} values for shape [${rows}, ${cols}] (needs ${rows * cols})`);
  const bs = blockSize(dtype);
  if (dtype === 'f32') return { dtype, rows, cols, data: values.slice() };
  const rb = rowBytes(dtype, cols);
  const out = new Uint8Array(rows * rb);
  if (dtype === 'f16') {
    for (let i = 0; i < rows * cols; i++) {
      const h = f32ToF16(values[i]);
      if ((h & 0x7c00) === 0x7c00) throw unrepresentable(what, dtype, values[i], Math.floor(i / cols), i % cols);
      setF16(out, 2 * i, h);
    }
    return { dtype, rows, cols, data: out };
  }
  const quant = QUANTIZERS[dtype]!;
  const block = new Float32Array(bs);
  const nb = Math.ceil(cols / bs);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      const start = r * cols + b * bs, n = Math.min(bs, cols - b * bs);
      block.fill(0);
      block.set(values.subarray(start, start + n));
      const o = r * rb + b * BLOCK_BYTES[dtype];
      quant(block, out, o);
      // Each block starts with its f16 scale (Q4_K: d then dmin); Inf/NaN bits there mean the block overflowed.
      for (let k = 0; k < (dtype === 'q4_k' ? 2 : 1); k++) {
        if (((out[o + 2 * k] | (out[o + 2 * k + 1] << 8)) & 0x7c00) === 0x7c00) {
          const worst = block.subarray(0, n).reduce((m, v, j) => (!Number.isFinite(v) || Math.abs(v) > Math.abs(block[m]) ? j : m), 0);
          throw unrepresentable(what, dtype, block[worst], r, b * bs + worst);
        }
      }
    }
  }
  return { dtype, rows, cols, data: out };
}

function unrepresentable(what: string, dtype: WeightDType, v: number, r: number, c: number): Error {
  const why = !Number.isFinite(v) ? 'not finite' : dtype === 'f16' ? "beyond f16's range (±65504)" : `too large for ${dtype}'s f16 block scale`;
  return new RangeError(`${what}: value ${v} at [${r}, ${c}] is ${why}; keep this tensor in f32 (--weights f32)`);
}

/** Row `r` of a packed matrix as f32 (the true `cols` values, padding dropped), into `out` at `outOffset`. */
export function dequantizeRow(m: PackedMatrix, r: number, out: Float32Array, outOffset = 0): void {
  const { dtype, cols } = m;
  if (dtype === 'f32') {
    out.set((m.data as Float32Array).subarray(r * cols, (r + 1) * cols), outOffset);
    return;
  }
  const data = m.data as Uint8Array;
  const rb = rowBytes(dtype, cols);
  if (dtype === 'f16') {
    for (let c = 0; c < cols; c++) out[outOffset + c] = getF16(data, r * rb + 2 * c);
    return;
  }
  const bs = blockSize(dtype), deq = DEQUANTIZERS[dtype]!;
  for (let b = 0; b * bs < cols; b++) deq(data, r * rb + b * BLOCK_BYTES[dtype], out, outOffset + b * bs, Math.min(bs, cols - b * bs));
}

/** The f32 values a packed matrix stands for, row-major [rows, cols]. */
export function dequantizeMatrix(m: PackedMatrix): Float32Array {
  checkPacked(m, 'dequantizeMatrix');
  const out = new Float32Array(m.rows * m.cols);
  for (let r = 0; r < m.rows; r++) dequantizeRow(m, r, out, r * m.cols);
  return out;
}

/** Throws unless `m`'s storage has exactly the size its dtype and shape need. */
export function checkPacked(m: PackedMatrix, what: string): void {
  checkShape(what, m.rows, m.cols);
  const want = m.dtype === 'f32' ? m.rows * m.cols : packedBytes(m);
  const isF32 = m.data instanceof Float32Array;
  if ((m.dtype === 'f32') !== isF32) throw new Error(`${what}: ${m.dtype} matrix needs ${m.dtype === 'f32' ? 'a Float32Array' : 'a Uint8Array'} of storage`);
  if (m.data.length !== want) throw new Error(`${what}: ${m.dtype} [${m.rows}, ${m.cols}] needs ${want} ${isF32 ? 'values' : 'bytes'}, got ${m.data.length}`);
}
