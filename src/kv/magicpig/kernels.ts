// MagicPIG's SimHash codes reached by name (Backend.run, src/backend/kernels.ts):
//   code_ℓ(x) = Σ_{b<K} [(x − center)·planes[ℓK + b] > 0]·2^b     planes [K·L][d] f32
// of n rows that sit in a tensor at a float offset and row stride of their own, each row centered by
// its own center row (or one center for all, or none). The same declaration runs
// src/kv/magicpig/magicpig.as.ts's `simhashRows` on the CPU (in a Web Worker too) and
// src/kv/magicpig/simhash.wgsl on the GPU.
//
// The codes tensor is an ordinary f32 tensor whose bytes are the [n][cs] u16 codes (cs =
// codeStride(L) = L rounded up to 8, columns ≥ L zero), row r's starting at element codesOffset +
// r·cs/2: the CPU layout (src/kv/magicpig/cpu.ts) byte for byte. A caller reads it back and views
// the bytes as a Uint16Array (`new Uint16Array(f32.buffer, f32.byteOffset, n * cs)`); the f32 values
// themselves mean nothing and may be NaN patterns, so copy them only as bytes (typed-array
// set/slice), never through arithmetic.
//
// The uses: a KV cache hashes the key row of every KV head at ring slot s of [H][slots][d] in one call
// (n = H, xOffset = s·d, xStride = slots·d), centered by the per-head means [H][d] (centerStride =
// d), and the queries [H·G][d] uncentered (n = H·G).
import type { Backend, DeviceTensor } from '../../backend/contract.js';
import type { KernelDef } from '../../backend/kernels.js';
import { checkLshParams, codeStride, type LshParams } from './params.js';

/**
 * `pairs` is u32 words of codes per row, codeStride(L) / 2 (runSimhash passes it; a direct call
 * with 2·pairs < L traps on the CPU). `centered` is 0 or 1; with 0 the center tensor is not read.
 */
export const SIMHASH_KERNEL: KernelDef = {
  name: 'simhash',
  tensors: ['x', 'planes', 'center', 'codes'],
  scalars: ['n', 'd', 'K', 'L', 'pairs', 'xStride', 'xOffset', 'centered', 'centerStride', 'centerOffset', 'codesOffset'],
  writes: ['codes'],
  sizes: {
    x: 'xOffset + (n - 1) * xStride + d',
    planes: 'K * L * d',
    // Not read when centered = 0.
    center: 'centered * (centerOffset + (n - 1) * centerStride + d)',
    codes: 'codesOffset + n * pairs',
  },
  cpu: {
    export: 'simhashRows',
    args: [{ tensor: 'codes', offset: 'codesOffset' }, { tensor: 'x', offset: 'xOffset' }, 'xStride',
      { tensor: 'center', offset: 'centerOffset' }, 'centerStride', 'centered', 'n', 'd', 'planes', 'K', 'L', 'pairs', 'scratch'],
    scratch: { export: 'simhashScratchFloats', args: ['K', 'L', 'd'] },
  },
  gpu: {
    shader: 'simhash',
    uniforms: ['n', 'd', 'K', 'L', 'xStride', 'xOffset', 'pairs', 'centered', 'centerStride', 'centerOffset', 'codesOffset'],
    workgroups: { count: 'n * pairs', per: 64 },
  },
};

/** Rows of a tensor: row r starts at element offset + r·stride. */
export interface HashRows { tensor: DeviceTensor; stride: number; offset?: number }

export interface SimhashCall extends LshParams {
  /** Rows to hash and their width. */
  n: number;
  d: number;
  /** Default stride d, offset 0. */
  x: HashRows | DeviceTensor;
  /** [K·L][d] f32 hyperplanes. */
  planes: DeviceTensor;
  /**
   * Subtracted from the rows before hashing (keys): row r's center starts at element offset +
   * r·stride (stride 0, the default: one center for every row). Omit for queries.
   */
  center?: HashRows | DeviceTensor;
  /** Output: [n][codeStride(L)] u16 as bytes, from element `codesOffset` (default 0) on. */
  codes: DeviceTensor;
  codesOffset?: number;
}

const rowsOf = (r: HashRows | DeviceTensor, stride: number): HashRows => ('tensor' in r ? r : { tensor: r, stride });

/**
 * Records the hashing of `n` rows on `be` (the kernel's own checks, then Backend.run's tensor
 * sizes). K, L, the shape and the strides are refused here, naming the field, on every backend alike:
 * a row stride below d would overlap rows.
 */
export function runSimhash(be: Backend, a: SimhashCall): void {
  const fail = (why: string): never => { throw new RangeError(`MagicPIG hash: ${why}`); };
  checkLshParams(a);
  if (!(Number.isInteger(a.n) && a.n >= 0)) fail(`row count n must be a non-negative integer (got ${a.n})`);
  if (!(Number.isInteger(a.d) && a.d > 0)) fail(`head dim d must be a positive integer (got ${a.d})`);
  const x = rowsOf(a.x, a.d), center = a.center && rowsOf(a.center, 0);
  const int = (v: number) => Number.isInteger(v) && v >= 0;
  if (!(int(x.stride) && x.stride >= a.d)) fail(`x row stride ${x.stride} must be an integer ≥ d ${a.d}`);
  if (!int(x.offset ?? 0)) fail(`x offset ${x.offset} must be a non-negative integer`);
  if (center && !int(center.stride)) fail(`center row stride ${center.stride} must be a non-negative integer (0: one center for every row)`);
  if (center && !int(center.offset ?? 0)) fail(`center offset ${center.offset} must be a non-negative integer`);
  if (!int(a.codesOffset ?? 0)) fail(`codes offset ${a.codesOffset} must be a non-negative integer`);
  be.run(SIMHASH_KERNEL, [x.tensor, a.planes, center?.tensor ?? a.planes, a.codes], {
    n: a.n, d: a.d, K: a.K, L: a.L, pairs: codeStride(a.L) / 2,
    xStride: x.stride, xOffset: x.offset ?? 0,
    centered: center ? 1 : 0, centerStride: center?.stride ?? 0, centerOffset: center?.offset ?? 0,
    codesOffset: a.codesOffset ?? 0,
  });
}

/** The codes a read of the codes tensor holds, as u16 ([n][codeStride(L)] from the read's start). */
export function codesOf(read: Float32Array): Uint16Array {
  return new Uint16Array(read.buffer, read.byteOffset, read.length * 2);
}
