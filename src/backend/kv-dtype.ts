// Storage types of the full (retrieval-head) KV caches, their exact row layout, and the reference
// quantizers the kernels (src/kv/full/attention.as.ts, wgsl/kv_cache.wgsl) must match bit for bit.
//
// A cache holds one row per (KV head, position), head-major like the f32 cache, each row a whole
// number of 32-bit words so that caches are plain word tensors on both devices (copy, grow, read):
//  - f32:  headDim f32.                                               4·D bytes
//  - f16:  headDim IEEE halves (round to nearest even; overflow → ±Inf), element i in the low half
//          of word i/2 when i is even: 2·⌈D/2⌉ words.                  2·D bytes (D even)
//  - int8: symmetric, one f32 scale per row (per position and KV head): scale = max|x| / 127,
//          q[i] = round_half_even(x[i] · (127 / max|x|)) ∈ [−127, 127] (0 when the row is all zero),
//          x ≈ q · scale. ⌈D/4⌉ words of codes (element i in byte i), then the scale.  4·⌈D/4⌉ + 4 bytes
// Keys are quantized after RoPE, at append time; attention dequantizes as it reads.
import { f16ToF32, f32ToF16 } from '../model/quant.js';

export type KvDType = 'f32' | 'f16' | 'int8';
export const KV_DTYPES: readonly KvDType[] = ['f32', 'f16', 'int8'];

/** The kernels' id of a type (src/kv/full/attention.as.ts, wgsl KV_DTYPE). */
export const KV_DTYPE_ID: Record<KvDType, number> = { f32: 0, f16: 1, int8: 2 };

export function isKvDType(s: unknown): s is KvDType {
  return typeof s === 'string' && (KV_DTYPES as readonly string[]).includes(s);
}

/** A kernel call's dtype argument, checked (a programming error rather than a user's option). */
export function checkKvDType(dtype: unknown, what: string): KvDType {
  if (!isKvDType(dtype)) throw new RangeError(`${what}: KV cache dtype must be one of ${KV_DTYPES.join(', ')} (got ${JSON.stringify(dtype)})`);
  return dtype;
}

/** 32-bit words of one cache row (one position of one KV head). */
export function kvRowWords(headDim: number, dtype: KvDType): number {
  if (dtype === 'f32') return headDim;
  if (dtype === 'f16') return Math.ceil(headDim / 2);
  return Math.ceil(headDim / 4) + 1;
}

/** Bytes of one cache row (one position of one KV head, K or V). */
export function kvRowBytes(headDim: number, dtype: KvDType): number {
  return 4 * kvRowWords(headDim, dtype);
}

const f32 = Math.fround;

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Encodes x (headDim values) into `out` (kvRowWords words) at word `offset`, as the kernels do. */
export function encodeKvRow(x: ArrayLike<number>, dtype: KvDType, out: Uint32Array, offset = 0): void {
  const D = x.length, W = kvRowWords(D, dtype);
  out.fill(0, offset, offset + W);
  if (dtype === 'f32') {
    new Float32Array(out.buffer, out.byteOffset + offset * 4, D).set(x);
  } else if (dtype === 'f16') {
    for (let i = 0; i < D; i++) out[offset + (i >> 1)] |= f32ToF16(x[i]) << ((i & 1) * 16);
  } else {
    let amax = 0;
    for (let i = 0; i < D; i++) amax = Math.max(amax, Math.abs(x[i]));
    amax = f32(amax);
    const inv = amax > 0 ? f32(127 / amax) : 0;
    for (let i = 0; i < D; i++) {
      const q = Math.max(-127, Math.min(127, roundHalfEven(f32(f32(x[i]) * inv))));
      out[offset + (i >> 2)] |= (q & 0xff) << ((i & 3) * 8);
    }
    new Float32Array(out.buffer, out.byteOffset + (offset + W - 1) * 4, 1)[0] = amax / 127;
  }
}

/** Decodes a row of headDim values (the values attention reads). */
export function decodeKvRow(words: Uint32Array, offset: number, headDim: number, dtype: KvDType, out: Float32Array, outOffset = 0): void {
  const D = headDim;
  if (dtype === 'f32') {
    out.set(new Float32Array(words.buffer, words.byteOffset + offset * 4, D), outOffset);
  } else if (dtype === 'f16') {
    for (let i = 0; i < D; i++) out[outOffset + i] = f16ToF32((words[offset + (i >> 1)] >>> ((i & 1) * 16)) & 0xffff);
  } else {
    const scale = new Float32Array(words.buffer, words.byteOffset + (offset + kvRowWords(D, dtype) - 1) * 4, 1)[0];
    for (let i = 0; i < D; i++) {
      const q = ((words[offset + (i >> 2)] >>> ((i & 3) * 8)) << 24) >> 24;
      out[outOffset + i] = f32(q * scale);
    }
  }
}

/**
 * The reference full cache ([numKvHeads][capacity] rows) holding `k` ([positions][numKvHeads][headDim])
 * at positions 0…: what kvAppend must store, word for word.
 */
export function encodeKvCache(k: Float32Array, positions: number, numKvHeads: number, headDim: number, capacity: number, dtype: KvDType): Uint32Array {
  const W = kvRowWords(headDim, dtype);
  const out = new Uint32Array(numKvHeads * capacity * W);
  for (let p = 0; p < positions; p++) {
    for (let h = 0; h < numKvHeads; h++) {
      const src = k.subarray((p * numKvHeads + h) * headDim, (p * numKvHeads + h + 1) * headDim);
      encodeKvRow(src, dtype, out, (h * capacity + p) * W);
    }
  }
  return out;
}
