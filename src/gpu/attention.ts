// Host side of the attention kernels: KV cache writes (wgsl/kv_cache.wgsl), retrieval-head
// attention split over the sequence with a log-sum-exp merge (wgsl/attention.wgsl +
// attention_combine.wgsl), and streaming-head attention over ring + chunk (streaming_attention.wgsl).
import type { AttentionShape, StreamingWindow } from '../backend/contract.js';
import type { GpuContext } from './context.js';
import type { GpuTensor } from './tensor.js';
import { KV_DTYPE_ID, kvRowWords, type KvDType } from '../backend/kv-dtype.js';

const MAX_HEAD_DIM = 256;
/** Keys per split in decode; prefill uses fewer, longer splits to bound the partials buffer. */
const SPLIT_KEYS = 256;
/** Budget of the per-split partial states (floats). */
const PARTIALS_BUDGET = 8 * 1024 * 1024;

function checkHeads(shape: { numHeads: number; numKvHeads: number; headDim: number }, what: string): void {
  if (shape.headDim > MAX_HEAD_DIM) throw new Error(`${what}: head_dim ${shape.headDim} exceeds the GPU kernels' limit of ${MAX_HEAD_DIM}`);
  if (shape.numKvHeads < 1 || shape.numHeads % shape.numKvHeads !== 0) {
    throw new Error(`${what}: ${shape.numHeads} query heads cannot be grouped over ${shape.numKvHeads} KV heads`);
  }
}

function checkLength(t: GpuTensor, needed: number, what: string): void {
  if (t.length < needed) throw new Error(`${what}: tensor of ${t.length} elements, needs ${needed}`);
}

const partialBuffers = new WeakMap<GpuContext, GPUBuffer>();

/** The scratch buffer for split partials, grown on demand (an outgrown one is released after submit). */
function partials(ctx: GpuContext, floats: number): GPUBuffer {
  let buf = partialBuffers.get(ctx);
  if (!buf || buf.size < floats * 4) {
    if (buf) ctx.release(buf);
    buf = ctx.createBuffer(Math.max(floats, 4096) * 4, 'attention partials');
    partialBuffers.set(ctx, buf);
  }
  return buf;
}

function kvParams(rows: number, numKvHeads: number, headDim: number, pastLen: number, capacity: number, window: StreamingWindow | null): ArrayBuffer {
  const u = new Uint32Array([rows, numKvHeads, headDim, pastLen, capacity, window?.sink ?? 0, window?.recent ?? 1, rows * numKvHeads * headDim]);
  return u.buffer;
}

export function recordKvAppend(ctx: GpuContext, kCache: GpuTensor, vCache: GpuTensor, k: GpuTensor, v: GpuTensor,
  rows: number, numKvHeads: number, headDim: number, capacity: number, pastLen: number, dtype: KvDType): void {
  if (pastLen + rows > capacity) throw new Error(`kvAppend: positions up to ${pastLen + rows} exceed the cache capacity ${capacity}`);
  const W = kvRowWords(headDim, dtype);
  checkLength(kCache, numKvHeads * capacity * W, 'kvAppend kCache');
  checkLength(vCache, numKvHeads * capacity * W, 'kvAppend vCache');
  checkLength(k, rows * numKvHeads * headDim, 'kvAppend k');
  checkLength(v, rows * numKvHeads * headDim, 'kvAppend v');
  const total = rows * numKvHeads * headDim;
  if (total === 0) return;
  if (dtype !== 'f32') {
    // One thread per (row, KV head) encodes its row (wgsl/kv_append_packed.wgsl).
    const vectors = rows * numKvHeads;
    ctx.dispatch(ctx.pipeline('kv_append_packed', 'main', { KV_DTYPE: KV_DTYPE_ID[dtype] }), [kCache.buffer, vCache.buffer, k.buffer, v.buffer],
      new Uint32Array([rows, numKvHeads, headDim, pastLen, capacity, W, vectors, 0]).buffer, ctx.fold(Math.ceil(vectors / 64)));
    return;
  }
  ctx.dispatch(ctx.pipeline('kv_cache', 'append'), [kCache.buffer, vCache.buffer, k.buffer, v.buffer],
    kvParams(rows, numKvHeads, headDim, pastLen, capacity, null), ctx.fold(Math.ceil(total / 256)));
}

export function recordRingAppend(ctx: GpuContext, kRing: GpuTensor, vRing: GpuTensor, k: GpuTensor, v: GpuTensor,
  rows: number, numKvHeads: number, headDim: number, pastLen: number, window: StreamingWindow): void {
  if (window.recent < 1) throw new Error('ringAppend: recent must be at least 1');
  const slots = window.sink + window.recent;
  checkLength(kRing, numKvHeads * slots * headDim, 'ringAppend kRing');
  checkLength(vRing, numKvHeads * slots * headDim, 'ringAppend vRing');
  checkLength(k, rows * numKvHeads * headDim, 'ringAppend k');
  checkLength(v, rows * numKvHeads * headDim, 'ringAppend v');
  const total = rows * numKvHeads * headDim;
  if (total === 0) return;
  ctx.dispatch(ctx.pipeline('kv_cache', 'ring_append'), [kRing.buffer, vRing.buffer, k.buffer, v.buffer],
    kvParams(rows, numKvHeads, headDim, pastLen, 0, window), ctx.fold(Math.ceil(total / 256)));
}

export function recordAttention(ctx: GpuContext, out: GpuTensor, q: GpuTensor, kCache: GpuTensor, vCache: GpuTensor,
  shape: AttentionShape, capacity: number, dtype: KvDType): void {
  const { rows, numHeads, numKvHeads, headDim, pastLen, scale } = shape;
  checkHeads(shape, 'attention');
  if (pastLen + rows > capacity) throw new Error(`attention: positions up to ${pastLen + rows} exceed the cache capacity ${capacity}`);
  checkLength(q, rows * numHeads * headDim, 'attention q');
  checkLength(out, rows * numHeads * headDim, 'attention out');
  checkLength(kCache, numKvHeads * capacity * kvRowWords(headDim, dtype), 'attention kCache');
  checkLength(vCache, numKvHeads * capacity * kvRowWords(headDim, dtype), 'attention vCache');
  if (rows === 0 || numHeads === 0) return;
  const keys = pastLen + rows;
  const perSplit = rows * numHeads * (headDim + 2);
  let numSplits = Math.ceil(keys / SPLIT_KEYS);
  numSplits = Math.max(1, Math.min(numSplits, Math.floor(PARTIALS_BUDGET / perSplit)));
  const splitLen = Math.ceil(keys / numSplits);
  numSplits = Math.ceil(keys / splitLen);
  const scratch = partials(ctx, numSplits * perSplit);
  const params = new ArrayBuffer(36);
  new Uint32Array(params, 0, 8).set([rows, numHeads, numKvHeads, headDim, pastLen, capacity, splitLen, numSplits]);
  new Float32Array(params, 32, 1)[0] = scale;
  ctx.dispatch(ctx.pipeline('attention', 'main', { KV_DTYPE: KV_DTYPE_ID[dtype] }), [scratch, q.buffer, kCache.buffer, vCache.buffer], params, [numSplits, numHeads, rows]);
  ctx.dispatch(ctx.pipeline('attention_combine'), [out.buffer, scratch],
    new Uint32Array([rows, numHeads, headDim, numSplits]).buffer, [numHeads, rows]);
}

/** A streaming cache's compensation sums on the GPU ([numKvHeads][headDim] each). */
export interface GpuCompensation { kSum: GpuTensor; vSum: GpuTensor }

function checkCompensation(c: GpuCompensation, numKvHeads: number, headDim: number, what: string): void {
  checkLength(c.kSum, numKvHeads * headDim, `${what} compensation kSum`);
  checkLength(c.vSum, numKvHeads * headDim, `${what} compensation vSum`);
}

/** Adds the positions the chunk evicts to the compensation sums (before the ring append overwrites them). */
export function recordCompensationAppend(ctx: GpuContext, comp: GpuCompensation, kRing: GpuTensor, vRing: GpuTensor, k: GpuTensor, v: GpuTensor,
  rows: number, numKvHeads: number, headDim: number, pastLen: number, window: StreamingWindow): void {
  checkCompensation(comp, numKvHeads, headDim, 'ringAppend');
  if (pastLen + rows - window.recent <= Math.max(window.sink, pastLen - window.recent)) return;
  ctx.dispatch(ctx.pipeline('streaming_compensation'), [comp.kSum.buffer, comp.vSum.buffer, kRing.buffer, vRing.buffer, k.buffer, v.buffer],
    new Uint32Array([rows, numKvHeads, headDim, pastLen, window.sink, window.recent]).buffer, [Math.ceil(numKvHeads * headDim / 64)]);
}

export function recordStreamingAttention(ctx: GpuContext, out: GpuTensor, q: GpuTensor, k: GpuTensor, v: GpuTensor,
  kRing: GpuTensor, vRing: GpuTensor, shape: AttentionShape, window: StreamingWindow, comp: GpuCompensation | null = null): void {
  const { rows, numHeads, numKvHeads, headDim, pastLen, scale } = shape;
  checkHeads(shape, 'streamingAttention');
  if (window.recent < 1) throw new Error('streamingAttention: recent must be at least 1');
  checkLength(q, rows * numHeads * headDim, 'streamingAttention q');
  checkLength(out, rows * numHeads * headDim, 'streamingAttention out');
  checkLength(k, rows * numKvHeads * headDim, 'streamingAttention k');
  checkLength(kRing, numKvHeads * (window.sink + window.recent) * headDim, 'streamingAttention kRing');
  if (comp) checkCompensation(comp, numKvHeads, headDim, 'streamingAttention');
  if (rows === 0 || numHeads === 0) return;
  const params = new ArrayBuffer(48);
  new Uint32Array(params, 0, 7).set([rows, numHeads, numKvHeads, headDim, pastLen, window.sink, window.recent]);
  new Float32Array(params, 28, 1)[0] = scale;
  new Uint32Array(params, 32, 1)[0] = comp ? 1 : 0;
  // Without compensation the sums are not read; the ring stands in for them.
  const sums = comp ? [comp.kSum.buffer, comp.vSum.buffer] : [kRing.buffer, vRing.buffer];
  ctx.dispatch(ctx.pipeline('streaming_attention'), [out.buffer, q.buffer, k.buffer, v.buffer, kRing.buffer, vRing.buffer, ...sums],
    params, [numHeads, rows]);
}
