// Host side of the attention kernels: KV cache writes (wgsl/kv_cache.wgsl), retrieval-head
// attention split over the sequence with a log-sum-exp merge (src/kv/full/attention.wgsl +
// attention_combine.wgsl), and streaming-head attention over ring + chunk (streaming_attention.wgsl).
import { checkHeadMaps, type AttentionShape, type HeadMaps, type StreamingWindow } from '../backend/contract.js';
import type { GpuContext } from './context.js';
import { GpuSplitTensor, type GpuTensor } from './tensor.js';
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

/** A full cache as parts: consecutive buffers of partWords words (a whole cache is one part). */
interface CacheParts { parts: GpuTensor[]; partWords: number; length: number }

function cacheParts(t: GpuTensor | GpuSplitTensor): CacheParts {
  return t instanceof GpuSplitTensor ? { parts: t.parts, partWords: t.partLength, length: t.length } : { parts: [t], partWords: t.length, length: t.length };
}

/** K and V caches split alike (they are allocated alike; a mismatch is a caller's error). */
function kvParts(kCache: GpuTensor | GpuSplitTensor, vCache: GpuTensor | GpuSplitTensor, what: string): [CacheParts, CacheParts] {
  const k = cacheParts(kCache), v = cacheParts(vCache);
  if (k.parts.length !== v.parts.length || (k.parts.length > 1 && k.partWords !== v.partWords)) {
    throw new Error(`${what}: the K and V caches are split differently (${k.parts.length} and ${v.parts.length} buffers)`);
  }
  return [k, v];
}

/** Indices of the parts that hold any word of [start, end) of each range (ascending). */
function partsTouched(c: CacheParts, ranges: Array<[number, number]>): number[] {
  const touched = new Set<number>();
  for (const [start, end] of ranges) {
    if (end <= start) continue;
    for (let i = Math.floor(start / c.partWords); i <= Math.floor((end - 1) / c.partWords); i++) touched.add(i);
  }
  return [...touched].sort((a, b) => a - b);
}

function checkLength(t: { length: number }, needed: number, what: string): void {
  if (t.length < needed) throw new Error(`${what}: tensor of ${t.length} elements, needs ${needed}`);
}

const partialBuffers = new WeakMap<GpuContext, GPUBuffer>();
/** Device copies of head maps ([queryToKey | queryToValue] as u32), one per map array (they do not change). */
const headMapBuffers = new WeakMap<GpuContext, WeakMap<Int32Array, GPUBuffer>>();

function headMapBuffer(ctx: GpuContext, maps: HeadMaps): GPUBuffer {
  let byMap = headMapBuffers.get(ctx);
  if (!byMap) { byMap = new WeakMap(); headMapBuffers.set(ctx, byMap); }
  let buf = byMap.get(maps.queryToKey);
  if (!buf) {
    buf = ctx.createBuffer(8 * maps.queryToKey.length, 'attention head map');
    ctx.device.queue.writeBuffer(buf, 0, Uint32Array.from([...maps.queryToKey, ...maps.queryToValue]));
    byMap.set(maps.queryToKey, buf);
  }
  return buf;
}

/** The scratch buffer for split partials, grown on demand (an outgrown one is released after submit). */
function partials(ctx: GpuContext, floats: number): GPUBuffer {
  let buf = partialBuffers.get(ctx);
  if (!buf || buf.size < floats * 4) {
    if (buf) ctx.release(buf);
    buf = ctx.createBuffer(Math.max(floats, Math.min(4096, ctx.maxBufferBytes / 4)) * 4, 'attention partials');
    partialBuffers.set(ctx, buf);
  }
  return buf;
}

/** kv_cache.wgsl's parameters; partFirst / partWords: the words of the cache bound (append only). */
function kvParams(rows: number, numKvHeads: number, headDim: number, pastLen: number, capacity: number, window: StreamingWindow | null,
  partFirst = 0, partWords = 0xffffffff, numValueHeads = numKvHeads): ArrayBuffer {
  const u = new Uint32Array([rows, numKvHeads, headDim, pastLen, capacity, window?.sink ?? 0, window?.recent ?? 1, rows * numKvHeads * headDim, partFirst, partWords,
    numValueHeads, rows * numValueHeads * headDim]);
  return u.buffer;
}

/** Decoupled heads need whole caches: the part logic follows the K cache's rows, which V's no longer mirror. */
function checkWhole(kCache: GpuTensor | GpuSplitTensor, vCache: GpuTensor | GpuSplitTensor, what: string): void {
  if (kCache instanceof GpuSplitTensor || vCache instanceof GpuSplitTensor) {
    throw new Error(`${what}: decoupled key/value heads (DHA) need each cache in one GPU buffer; this one is split over several (larger than the device's buffer limit)`);
  }
}

export function recordKvAppend(ctx: GpuContext, kCache: GpuTensor | GpuSplitTensor, vCache: GpuTensor | GpuSplitTensor, k: GpuTensor, v: GpuTensor,
  rows: number, numKvHeads: number, headDim: number, capacity: number, pastLen: number, dtype: KvDType, numValueHeads = numKvHeads): void {
  if (pastLen + rows > capacity) throw new Error(`kvAppend: positions up to ${pastLen + rows} exceed the cache capacity ${capacity}`);
  if (!(Number.isInteger(numValueHeads) && numValueHeads >= 1)) throw new Error(`kvAppend: numValueHeads must be a positive integer (got ${numValueHeads})`);
  if (numValueHeads !== numKvHeads) checkWhole(kCache, vCache, 'kvAppend');
  const W = kvRowWords(headDim, dtype);
  checkLength(kCache, numKvHeads * capacity * W, 'kvAppend kCache');
  checkLength(vCache, numValueHeads * capacity * W, 'kvAppend vCache');
  checkLength(k, rows * numKvHeads * headDim, 'kvAppend k');
  checkLength(v, rows * numValueHeads * headDim, 'kvAppend v');
  const total = rows * Math.max(numKvHeads, numValueHeads) * headDim;
  if (total === 0) return;
  const [kp, vp] = kvParts(kCache, vCache, 'kvAppend');
  // The written words: rows pastLen .. pastLen + rows of each KV head.
  const ranges: Array<[number, number]> = [];
  for (let h = 0; h < numKvHeads; h++) ranges.push([(h * capacity + pastLen) * W, (h * capacity + pastLen + rows) * W]);
  for (const i of partsTouched(kp, ranges)) {
    const buffers = [kp.parts[i].buffer, vp.parts[i].buffer, k.buffer, v.buffer];
    // Whole caches of different sizes (decoupled heads): no part bounds, or V's words past K's length would be dropped.
    const first = i * kp.partWords, words = numValueHeads !== numKvHeads ? 0xffffffff : kp.parts[i].length;
    if (dtype !== 'f32') {
      // One thread per (row, KV head) encodes its row (wgsl/kv_append_packed.wgsl).
      const vectors = rows * Math.max(numKvHeads, numValueHeads);
      ctx.dispatch(ctx.pipeline('kv_append_packed', 'main', { KV_DTYPE: KV_DTYPE_ID[dtype] }), buffers,
        new Uint32Array([rows, numKvHeads, headDim, pastLen, capacity, W, rows * numKvHeads, first, words, numValueHeads, rows * numValueHeads]).buffer,
        ctx.fold(Math.ceil(vectors / 64)));
    } else {
      ctx.dispatch(ctx.pipeline('kv_cache', 'append'), buffers,
        kvParams(rows, numKvHeads, headDim, pastLen, capacity, null, first, words, numValueHeads), ctx.fold(Math.ceil(total / 256)));
    }
  }
}

export function recordRingAppend(ctx: GpuContext, kRing: GpuTensor, vRing: GpuTensor, k: GpuTensor, v: GpuTensor,
  rows: number, numKvHeads: number, headDim: number, pastLen: number, window: StreamingWindow, numValueHeads = numKvHeads): void {
  if (window.recent < 1) throw new Error('ringAppend: recent must be at least 1');
  if (!(Number.isInteger(numValueHeads) && numValueHeads >= 1)) throw new Error(`ringAppend: numValueHeads must be a positive integer (got ${numValueHeads})`);
  const slots = window.sink + window.recent;
  checkLength(kRing, numKvHeads * slots * headDim, 'ringAppend kRing');
  checkLength(vRing, numValueHeads * slots * headDim, 'ringAppend vRing');
  checkLength(k, rows * numKvHeads * headDim, 'ringAppend k');
  checkLength(v, rows * numValueHeads * headDim, 'ringAppend v');
  const total = rows * Math.max(numKvHeads, numValueHeads) * headDim;
  if (total === 0) return;
  ctx.dispatch(ctx.pipeline('kv_cache', 'ring_append'), [kRing.buffer, vRing.buffer, k.buffer, v.buffer],
    kvParams(rows, numKvHeads, headDim, pastLen, 0, window, 0, 0xffffffff, numValueHeads), ctx.fold(Math.ceil(total / 256)));
}

export function recordAttention(ctx: GpuContext, out: GpuTensor, q: GpuTensor, kCache: GpuTensor | GpuSplitTensor, vCache: GpuTensor | GpuSplitTensor,
  shape: AttentionShape, capacity: number, dtype: KvDType): void {
  const { rows, numHeads, numKvHeads, headDim, pastLen, scale, maps } = shape;
  if (maps) {
    if (headDim > MAX_HEAD_DIM) throw new Error(`attention: head_dim ${headDim} exceeds the GPU kernels' limit of ${MAX_HEAD_DIM}`);
    checkHeadMaps(maps, numHeads, numKvHeads, 'attention');
    checkWhole(kCache, vCache, 'attention');
  } else {
    checkHeads(shape, 'attention');
  }
  if (pastLen + rows > capacity) throw new Error(`attention: positions up to ${pastLen + rows} exceed the cache capacity ${capacity}`);
  checkLength(q, rows * numHeads * headDim, 'attention q');
  checkLength(out, rows * numHeads * headDim, 'attention out');
  checkLength(kCache, numKvHeads * capacity * kvRowWords(headDim, dtype), 'attention kCache');
  checkLength(vCache, (maps?.numValueHeads ?? numKvHeads) * capacity * kvRowWords(headDim, dtype), 'attention vCache');
  if (rows === 0 || numHeads === 0) return;
  const keys = pastLen + rows;
  const W = kvRowWords(headDim, dtype);
  const [kp, vp] = kvParts(kCache, vCache, 'attention');
  // The parts holding the keys read: positions 0 .. keys of each KV head.
  const ranges: Array<[number, number]> = [];
  for (let h = 0; h < numKvHeads; h++) ranges.push([h * capacity * W, (h * capacity + keys) * W]);
  const used = partsTouched(kp, ranges);
  const perSplit = rows * numHeads * (headDim + 2);
  const budget = Math.min(PARTIALS_BUDGET, Math.floor(ctx.maxBufferBytes / 4));
  if (used.length * perSplit > budget) {
    throw new Error(`attention: ${rows} rows × ${numHeads} heads over a cache split into ${used.length} buffers need ${used.length * perSplit * 4} bytes of partials, over the limit of ${budget * 4} bytes (attend in shorter chunks)`);
  }
  let numSplits = Math.ceil(keys / SPLIT_KEYS);
  numSplits = Math.max(1, Math.min(numSplits, Math.floor(budget / (used.length * perSplit))));
  const splitLen = Math.ceil(keys / numSplits);
  numSplits = Math.ceil(keys / splitLen);
  const totalSplits = used.length * numSplits;
  const scratch = partials(ctx, totalSplits * perSplit);
  const pipeline = ctx.pipeline('attention', 'main', { KV_DTYPE: KV_DTYPE_ID[dtype] });
  // Without maps the kernel reads no head map; q (read-only as well) stands in for it.
  const headMap = maps ? headMapBuffer(ctx, maps) : q.buffer;
  used.forEach((i, n) => {
    // Rows whose first word lies in part i; they may run on into part i + 1 (bound as the next part).
    const first = i * kp.partWords, words = kp.parts[i].length;
    const rowFirst = Math.ceil(first / W), rowEnd = Math.ceil((first + words) / W);
    const params = new ArrayBuffer(64);
    new Uint32Array(params, 0, 8).set([rows, numHeads, numKvHeads, headDim, pastLen, capacity, splitLen, numSplits]);
    new Float32Array(params, 32, 1)[0] = scale;
    // Mapped caches are whole, and V may be longer than K: no part bound on the words read.
    new Uint32Array(params, 36, 7).set([maps ? 0xffffffff : words, rowFirst, rowEnd, rowFirst * W - first, n * numSplits, totalSplits, maps ? 1 : 0]);
    const next = Math.min(i + 1, kp.parts.length - 1);
    ctx.dispatch(pipeline, [scratch, q.buffer, kp.parts[i].buffer, vp.parts[i].buffer, kp.parts[next].buffer, vp.parts[next].buffer, headMap],
      params, [numSplits, numHeads, rows]);
  });
  ctx.dispatch(ctx.pipeline('attention_combine'), [out.buffer, scratch],
    new Uint32Array([rows, numHeads, headDim, totalSplits]).buffer, [numHeads, rows]);
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
  kRing: GpuTensor, vRing: GpuTensor, shape: AttentionShape, window: StreamingWindow, comp: GpuCompensation | null = null,
  logSumExp = false): void {
  const { rows, numHeads, numKvHeads, headDim, pastLen, scale, maps } = shape;
  if (maps) {
    if (headDim > MAX_HEAD_DIM) throw new Error(`streamingAttention: head_dim ${headDim} exceeds the GPU kernels' limit of ${MAX_HEAD_DIM}`);
    checkHeadMaps(maps, numHeads, numKvHeads, 'streamingAttention');
    if (comp) throw new Error('streamingAttention: compensation with decoupled key/value heads (DHA) is not supported');
  } else {
    checkHeads(shape, 'streamingAttention');
  }
  if (window.recent < 1) throw new Error('streamingAttention: recent must be at least 1');
  const nV = maps?.numValueHeads ?? numKvHeads, slots = window.sink + window.recent;
  checkLength(q, rows * numHeads * headDim, 'streamingAttention q');
  checkLength(out, rows * numHeads * (headDim + (logSumExp ? 1 : 0)),
    logSumExp ? 'streamingAttention out (rows, then the log-sum-exps)' : 'streamingAttention out');
  checkLength(k, rows * numKvHeads * headDim, 'streamingAttention k');
  checkLength(v, rows * nV * headDim, 'streamingAttention v');
  checkLength(kRing, numKvHeads * slots * headDim, 'streamingAttention kRing');
  checkLength(vRing, nV * slots * headDim, 'streamingAttention vRing');
  if (comp) checkCompensation(comp, numKvHeads, headDim, 'streamingAttention');
  if (rows === 0 || numHeads === 0) return;
  const params = new ArrayBuffer(48);
  new Uint32Array(params, 0, 7).set([rows, numHeads, numKvHeads, headDim, pastLen, window.sink, window.recent]);
  new Float32Array(params, 28, 1)[0] = scale;
  new Uint32Array(params, 32, 4).set([comp ? 1 : 0, maps ? 1 : 0, nV, logSumExp ? 1 : 0]);
  // Binding 6 holds k_sum or the head map; without compensation the sums are not read and the
  // rings stand in for them.
  const sums = comp ? [comp.kSum.buffer, comp.vSum.buffer] : [maps ? headMapBuffer(ctx, maps) : kRing.buffer, vRing.buffer];
  ctx.dispatch(ctx.pipeline('streaming_attention'), [out.buffer, q.buffer, k.buffer, v.buffer, kRing.buffer, vRing.buffer, ...sums],
    params, [numHeads, rows]);
}
