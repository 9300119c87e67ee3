// Streaming rings stored as f16 / int8 on the GPU (the full caches' rows, src/backend/kv-dtype.ts),
// run through the f32 streaming kernels: the ring is decoded into a temporary f32 ring and the chunk
// rounded to its stored values (encoded by kv_append_packed.wgsl, the words the reference encoder
// writes, then decoded by kv_decode_packed.wgsl), so attention and the compensation sums see every
// key and value as stored, as on the CPU. Appends encode the kept rows straight into their slots.
import type { StreamingWindow } from '../backend/contract.js';
import { KV_DTYPE_ID, kvRowWords, type KvDType } from '../backend/kv-dtype.js';
import type { GpuContext } from './context.js';
import { GpuTensor } from './tensor.js';
import { recordKvAppend } from './attention.js';

function temp(ctx: GpuContext, floats: number, what: string): GpuTensor {
  return new GpuTensor(ctx.createBuffer(Math.max(floats, 1) * 4, what), floats);
}

/** Releases temporaries once the recorded work that reads them has been submitted. */
export function releaseAll(ctx: GpuContext, ts: GpuTensor[]): void {
  for (const t of ts) ctx.release(t.buffer);
}

function decode(ctx: GpuContext, kDst: GpuTensor, vDst: GpuTensor, kSrc: GpuTensor, vSrc: GpuTensor,
  n: number, numKvHeads: number, headDim: number, dtype: KvDType, tokenMajor: boolean, numValueHeads: number): void {
  const total = numKvHeads * n * headDim, totalV = numValueHeads * n * headDim;
  if (Math.max(total, totalV) === 0) return;
  ctx.dispatch(ctx.pipeline('kv_decode_packed', 'main', { KV_DTYPE: KV_DTYPE_ID[dtype] }), [kDst.buffer, vDst.buffer, kSrc.buffer, vSrc.buffer],
    new Uint32Array([n, numKvHeads, headDim, kvRowWords(headDim, dtype), tokenMajor ? 1 : 0, total, numValueHeads, totalV]).buffer,
    ctx.fold(Math.ceil(Math.max(total, totalV) / 256)));
}

/** f32 copies of a packed ring ([kvHeads][slots][headDim]; V: numValueHeads heads); the caller releases them. */
export function decodedRing(ctx: GpuContext, kRing: GpuTensor, vRing: GpuTensor, numKvHeads: number, headDim: number,
  window: StreamingWindow, dtype: KvDType, numValueHeads = numKvHeads): [GpuTensor, GpuTensor] {
  const slots = window.sink + window.recent;
  const k = temp(ctx, numKvHeads * slots * headDim, 'decoded ring K'), v = temp(ctx, numValueHeads * slots * headDim, 'decoded ring V');
  decode(ctx, k, v, kRing, vRing, slots, numKvHeads, headDim, dtype, false, numValueHeads);
  return [k, v];
}

/** The chunk ([rows][kvHeads][headDim] f32; v: numValueHeads heads) as a packed ring would store it, in f32; the caller releases it. */
export function roundedChunk(ctx: GpuContext, k: GpuTensor, v: GpuTensor, rows: number, numKvHeads: number, headDim: number,
  dtype: KvDType, numValueHeads = numKvHeads): [GpuTensor, GpuTensor] {
  const W = kvRowWords(headDim, dtype);
  const pk = temp(ctx, numKvHeads * rows * W, 'packed chunk K'), pv = temp(ctx, numValueHeads * rows * W, 'packed chunk V');
  recordKvAppend(ctx, pk, pv, k, v, rows, numKvHeads, headDim, rows, 0, dtype, numValueHeads);
  const rk = temp(ctx, rows * numKvHeads * headDim, 'rounded chunk K'), rv = temp(ctx, rows * numValueHeads * headDim, 'rounded chunk V');
  decode(ctx, rk, rv, pk, pv, rows, numKvHeads, headDim, dtype, true, numValueHeads);
  releaseAll(ctx, [pk, pv]);
  return [rk, rv];
}

/**
 * Encodes the chunk positions the ring keeps into their slots: at most three runs of consecutive
 * slots (the sinks, then the recent positions up to the ring's end, then those that wrapped), each
 * copied out of the chunk and appended as a full cache of `slots` positions starting at its slot.
 */
export function packedRingAppend(ctx: GpuContext, copy: (dst: GpuTensor, dstOffset: number, src: GpuTensor, srcOffset: number, length: number) => void,
  kRing: GpuTensor, vRing: GpuTensor, k: GpuTensor, v: GpuTensor, rows: number, numKvHeads: number, headDim: number,
  pastLen: number, window: StreamingWindow, dtype: KvDType, numValueHeads = numKvHeads): void {
  const { sink, recent } = window, slots = sink + recent, end = pastLen + rows;
  const runs: Array<[number, number]> = []; // [first position, last position + 1]
  if (pastLen < sink) runs.push([pastLen, Math.min(sink, end)]);
  const r0 = Math.max(sink, pastLen, end - recent);
  if (r0 < end) {
    const slot0 = sink + ((r0 - sink) % recent), first = Math.min(end - r0, slots - slot0);
    runs.push([r0, r0 + first]);
    if (r0 + first < end) runs.push([r0 + first, end]);
  }
  const kRow = numKvHeads * headDim, vRow = numValueHeads * headDim;
  for (const [p0, p1] of runs) {
    const n = p1 - p0, slot = p0 < sink ? p0 : sink + ((p0 - sink) % recent);
    const tk = temp(ctx, n * kRow, 'ring run K'), tv = temp(ctx, n * vRow, 'ring run V');
    copy(tk, 0, k, (p0 - pastLen) * kRow, n * kRow);
    copy(tv, 0, v, (p0 - pastLen) * vRow, n * vRow);
    recordKvAppend(ctx, kRing, vRing, tk, tv, n, numKvHeads, headDim, slots, slot, dtype, numValueHeads);
    releaseAll(ctx, [tk, tv]);
  }
}
