// MagicPIG SimHash codes on a WebGPU device (src/kv/magicpig/simhash.wgsl): the main device hashes the query
// each step and the keys as they are appended (centered by the offloaded keys' mean), and the codes
// go to the CPU side (cpu.ts) in its layout, [n][cs] u16 (cs = codeStride(L)).
import type { GpuContext } from '../../gpu/context.js';
import { checkLshParams, codeStride, type LshParams } from './params.js';

const WORKGROUP = 64;

export interface GpuHashInputs extends LshParams {
  /** Rows: row r starts at float xOffset + r·xStride of x (default offset 0, stride d). */
  x: GPUBuffer;
  n: number;
  d: number;
  xStride?: number;
  xOffset?: number;
  /** [K·L][d] f32 hyperplanes. */
  planes: GPUBuffer;
  /** d f32 subtracted from every row before hashing (keys); omit for queries. */
  center?: GPUBuffer;
  /** Output: at least n·cs·2 bytes. */
  codes: GPUBuffer;
}

function check(cond: boolean, message: string): void {
  if (!cond) throw new RangeError(`MagicPIG GPU hash: ${message}`);
}

/** Records the hashing dispatch on `gpu` (runs at the next flush/read). */
export function recordSimhash(gpu: GpuContext, a: GpuHashInputs): void {
  checkLshParams(a);
  const stride = a.xStride ?? a.d, offset = a.xOffset ?? 0, cs = codeStride(a.L);
  check(Number.isInteger(a.n) && a.n >= 0, `row count n must be a non-negative integer (got ${a.n})`);
  check(Number.isInteger(a.d) && a.d > 0, `head dim d must be a positive integer (got ${a.d})`);
  check(Number.isInteger(stride) && stride >= a.d && Number.isInteger(offset) && offset >= 0, `xStride ${stride} must be ≥ d ${a.d} and xOffset ${offset} ≥ 0`);
  if (a.n === 0) return;
  check(a.x.size >= (offset + (a.n - 1) * stride + a.d) * 4, `x buffer of ${a.x.size} bytes is too small for ${a.n} rows`);
  check(a.planes.size >= a.K * a.L * a.d * 4, `planes buffer of ${a.planes.size} bytes is smaller than K·L·d floats (${a.K * a.L * a.d * 4} bytes)`);
  check(!a.center || a.center.size >= a.d * 4, `center buffer of ${a.center?.size} bytes is smaller than d floats`);
  check(a.codes.size >= a.n * cs * 2, `codes buffer of ${a.codes.size} bytes is smaller than n·cs u16 (${a.n * cs * 2} bytes)`);
  const params = new Uint32Array([a.n, a.d, a.K, a.L, stride, offset, cs / 2, a.center ? 1 : 0]);
  const groups = Math.ceil((a.n * cs / 2) / WORKGROUP);
  gpu.dispatch(gpu.pipeline('simhash'), [a.x, a.planes, a.center ?? a.planes, a.codes], params.buffer, gpu.fold(groups));
}

/** Uploads x ([n][d]) and planes, hashes, and reads the codes back ([n][cs] u16). */
export async function simhashOnGpu(gpu: GpuContext, x: Float32Array, n: number, d: number, planes: Float32Array, p: LshParams,
  center?: Float32Array): Promise<Uint16Array> {
  checkLshParams(p);
  const cs = codeStride(p.L);
  if (n === 0) return new Uint16Array(0);
  const xb = gpu.bufferWith(x, GPUBufferUsage.STORAGE, 'simhash x');
  const pb = gpu.bufferWith(planes, GPUBufferUsage.STORAGE, 'simhash planes');
  const cb = center ? gpu.bufferWith(center, GPUBufferUsage.STORAGE, 'simhash center') : undefined;
  const out = gpu.createBuffer(Math.max(4, n * cs * 2), 'simhash codes');
  try {
    recordSimhash(gpu, { ...p, x: xb, n, d, planes: pb, center: cb, codes: out });
    return new Uint16Array(await gpu.readBuffer(out, 0, n * cs * 2));
  } finally {
    gpu.release(xb); gpu.release(pb); if (cb) gpu.release(cb); gpu.release(out);
  }
}
