// Streaming-head attention (sink + recent window) over a constant-size ring, and the ring append.
//
// Ring layout (head-major, [numKvHeads][sink + recent][headDim]): position p lives in slot p when
// p < sink, else in slot sink + ((p − sink) mod recent). Before a chunk the ring holds positions
// [0, min(pastLen, sink)) and [max(sink, pastLen − recent), pastLen); the chunk's own keys come
// from k / v ([rows][numKvHeads][headDim]). Query at position i sees j ≤ i with j < sink or
// j > i − recent. The online-softmax tile machinery is shared with attention.ts.
//
// Compensation (RazorAttention, optional): per KV head the sums of the keys and values evicted so
// far, kSum / vSum ([numKvHeads][headDim], positions [sink, pastLen − recent)). Query i also
// attends one token k̂ = S_k(i) / n, v̂ = S_v(i) / n with n = i − recent + 1 − sink evicted positions
// (none when n ≤ 0) and ln n added to its logit, as if it were n copies. S(i) is the state's sum
// plus the positions j ∈ [max(sink, pastLen − recent), i − recent] added in ascending order, the
// order compensationAppend adds them in, so chunked prefill and decode sum identically.
//
// Rings stored as f16 or int8 (kv_dtype.ts, the full caches' row format, rows kvRowBytes apart):
// ringAppend encodes; streamingAttention decodes each KV head's ring into scratch and expects the
// chunk's k / v already rounded to the stored values (roundRows), so every key, value and
// compensation term is the value as stored, whichever chunk it arrived in. The compensation sums
// stay f32 and add those stored (decoded) values.
//
// Decoupled heads (DHA): with kMap ≠ 0 every query head h is its own unit (group 1, like the full
// kernel's maps) and reads the key ring head kMap[h] and the value ring head vMap[h]: K ring
// [numKeyHeads][slots], V ring [numValueHeads][slots], chunk k [rows][numKeyHeads][headDim] and
// v [rows][numValueHeads][headDim]. No compensation then (the backends refuse it).
import { attentionScratchFloats, beginTile, endTile, extraKey, segment, setupScratch } from '../full/attention.as';
import { KV_F32, decodeRows, encodeRow, kvRowBytes } from '../../../assembly/kv_dtype';

/**
 * Ring positions [p0, p1) (all non-sink). Where the slots wrap, the later positions (from slot
 * `sink` on) go first: the ring is then read in address order, one stream the hardware prefetcher
 * follows (softmax does not depend on the order of keys).
 */
function ringRecent(p0: i32, p1: i32, kr: usize, vr: usize, sink: i32, recent: i32, vecBytes: usize): void {
  const s0 = sink + (p0 - sink) % recent;
  const first = min(p1 - p0, sink + recent - s0);
  if (first < p1 - p0) {
    const wrapped = <usize>sink * vecBytes;
    segment(p0 + first, p1, kr + wrapped, vr + wrapped, vecBytes, false, vecBytes);
  }
  const off = <usize>s0 * vecBytes;
  segment(p0, p0 + first, kr + off, vr + off, vecBytes, false, vecBytes);
}

/**
 * Scratch floats of streamingAttention: the tile's, the two running compensation sums, and for a
 * packed ring (dtype ≠ f32) one KV head's K and V rings decoded to f32.
 */
export function streamingScratchFloats(queryVectors: i32, headDim: i32, slots: i32, dtype: i32): i32 {
  return attentionScratchFloats(queryVectors, headDim) + 2 * headDim + (dtype == KV_F32 ? 0 : 2 * slots * headDim);
}

// @ts-ignore: decorator
@inline
function ringSlotOf(j: i32, sink: i32, recent: i32): i32 {
  return j < sink ? j : sink + (j - sink) % recent;
}

/** Address of position j's vector: slot j of the head's ring (ringHead) when j < pastLen, else the chunk row of KV head h. */
// @ts-ignore: decorator
@inline
function keyAddr(ringHead: usize, chunk: usize, j: i32, h: i32, pastLen: i32, numKvHeads: i32, sink: i32, recent: i32, vecBytes: usize): usize {
  if (j < pastLen) return ringHead + <usize>ringSlotOf(j, sink, recent) * vecBytes;
  return chunk + <usize>((j - pastLen) * numKvHeads + h) * vecBytes;
}

/**
 * n dense f32 rows of headDim at src → the values a ring of `dtype` stores for them (encode, then
 * decode), at dst; tmp holds one encoded row. dst may not overlap src.
 */
export function roundRows(dst: usize, src: usize, n: i32, headDim: i32, dtype: i32, tmp: usize): void {
  const vecBytes: usize = (<usize>headDim) << 2;
  for (let r = 0; r < n; r++) {
    const off = <usize>r * vecBytes;
    if (dtype == KV_F32) { memory.copy(dst + off, src + off, vecBytes); continue; }
    encodeRow(tmp, src + off, headDim, dtype);
    decodeRows(dst + off, tmp, 0, 1, headDim, dtype);
  }
}

function addVec(dst: usize, src: usize, n: i32): void {
  for (let d = 0; d < n; d++) {
    const a = dst + ((<usize>d) << 2);
    store<f32>(a, load<f32>(a) + load<f32>(src + ((<usize>d) << 2)));
  }
}

/**
 * The compensation token of each query vector of the tile (rows r0 … r0 + nr − 1), advancing the
 * running sums cK / cV by the position each row evicts (see the header).
 */
function compensateTile(r0: i32, nr: i32, g: i32, cK: usize, cV: usize, kr: usize, vr: usize, k: usize, v: usize,
  kvh: i32, numKvHeads: i32, headDim: i32, pastLen: i32, sink: i32, recent: i32, vecBytes: usize): void {
  for (let rr = 0; rr < nr; rr++) {
    const j = pastLen + r0 + rr - recent;
    if (j < sink) continue;
    addVec(cK, keyAddr(kr, k, j, kvh, pastLen, numKvHeads, sink, recent, vecBytes), headDim);
    addVec(cV, keyAddr(vr, v, j, kvh, pastLen, numKvHeads, sink, recent, vecBytes), headDim);
    const n = j + 1 - sink;
    const inv: f32 = <f32>1 / <f32>n;
    const bias = Mathf.log(<f32>n);
    for (let t = rr * g; t < (rr + 1) * g; t++) extraKey(t, cK, inv, bias, cV, inv);
  }
}

/**
 * KV heads [kvStart, kvEnd) only (threads share the heads). kSum / vSum: the compensation state
 * (0: none); scratch holds streamingScratchFloats(tileRows · group, headDim, sink + recent, dtype).
 * With a packed ring (dtype ≠ f32), k / v must hold the chunk rounded by roundRows.
 * Decoupled heads (kMap ≠ 0, see the header): the caller passes numKvHeads = numHeads (the units,
 * kvStart/kvEnd range over query heads), numKeyHeads / numValueHeads the rings' head counts, kSum 0.
 * lse ≠ 0: also writes each query vector's log-sum-exp (f32 [rows][numHeads], the compensation
 * token's logit included) there, for callers that merge this partial softmax with others.
 */
export function streamingAttention(out: usize, q: usize, k: usize, v: usize, kRing: usize, vRing: usize,
  rows: i32, numHeads: i32, numKvHeads: i32, headDim: i32, pastLen: i32, scale: f32,
  sink: i32, recent: i32, scratch: usize, tileRows: i32, kvStart: i32, kvEnd: i32, kSum: usize, vSum: usize, dtype: i32,
  kMap: usize, vMap: usize, numKeyHeads: i32, numValueHeads: i32, lse: usize): void {
  const g = numHeads / numKvHeads;
  setupScratch(scratch, tileRows * g, headDim, g, recent);
  const vecBytes: usize = (<usize>headDim) << 2;
  const slots = sink + recent;
  const nK = kMap ? numKeyHeads : numKvHeads, nV = kMap ? numValueHeads : numKvHeads;
  const kStride: usize = <usize>nK * vecBytes, vStride: usize = <usize>nV * vecBytes;
  const ringSinkEnd = min(pastLen, sink);
  const ringRecentStart = max(sink, pastLen - recent);
  const chunkSinkEnd = min(sink, pastLen + rows);
  const chunkRecentStart = max(sink, pastLen);
  const cK = scratch + (<usize>attentionScratchFloats(tileRows * g, headDim) << 2), cV = cK + vecBytes;
  const rowBytes = kvRowBytes(headDim, dtype);
  const ringBytes: usize = <usize>slots * vecBytes;
  const dK = cV + vecBytes, dV = dK + ringBytes;
  for (let kvh = kvStart; kvh < kvEnd; kvh++) {
    const kh: i32 = kMap ? load<i32>(kMap + (<usize>kvh << 2)) : kvh;
    const vh: i32 = kMap ? load<i32>(vMap + (<usize>kvh << 2)) : kvh;
    let kr = kRing + <usize>(kh * slots) * rowBytes, vr = vRing + <usize>(vh * slots) * rowBytes;
    if (dtype != KV_F32) {
      // Only the slots that hold positions are decoded (both are prefixes while the ring has not
      // filled; a full ring is all slots).
      const held = min(pastLen, slots);
      decodeRows(dK, kr, rowBytes, held, headDim, dtype);
      decodeRows(dV, vr, rowBytes, held, headDim, dtype);
      kr = dK; vr = dV;
    }
    const kc = k + <usize>kh * vecBytes, vc = v + <usize>vh * vecBytes;
    if (kSum != 0) {
      memory.copy(cK, kSum + <usize>kvh * vecBytes, vecBytes);
      memory.copy(cV, vSum + <usize>kvh * vecBytes, vecBytes);
    }
    for (let r0 = 0; r0 < rows; r0 += tileRows) {
      beginTile(q, r0, min(tileRows, rows - r0), numHeads, kvh, pastLen, scale);
      if (ringSinkEnd > 0) segment(0, ringSinkEnd, kr, vr, vecBytes, true, vecBytes);
      if (ringRecentStart < pastLen) ringRecent(ringRecentStart, pastLen, kr, vr, sink, recent, vecBytes);
      if (pastLen < chunkSinkEnd) segment(pastLen, chunkSinkEnd, kc, vc, kStride, true, vStride);
      if (chunkRecentStart < pastLen + rows) {
        const c = <usize>(chunkRecentStart - pastLen);
        segment(chunkRecentStart, pastLen + rows, kc + c * kStride, vc + c * vStride, kStride, false, vStride);
      }
      if (kSum != 0) {
        compensateTile(r0, min(tileRows, rows - r0), g, cK, cV, kr, vr, k, v, kvh, numKvHeads, headDim, pastLen, sink, recent, vecBytes);
      }
      endTile(out, r0, numHeads, kvh, lse);
    }
  }
}

/**
 * Stores the chunk positions the ring keeps (p < sink, or among the last `recent`), encoded as `dtype`.
 * v and the V ring have numVHeads heads (decoupled heads; else numKvHeads).
 */
export function ringAppend(kRing: usize, vRing: usize, k: usize, v: usize, rows: i32, numKvHeads: i32,
  headDim: i32, pastLen: i32, sink: i32, recent: i32, dtype: i32, numVHeads: i32): void {
  ringAppendSide(kRing, k, rows, numKvHeads, headDim, pastLen, sink, recent, dtype);
  ringAppendSide(vRing, v, rows, numVHeads, headDim, pastLen, sink, recent, dtype);
}

function ringAppendSide(ring: usize, x: usize, rows: i32, heads: i32, headDim: i32, pastLen: i32, sink: i32, recent: i32, dtype: i32): void {
  const vecBytes: usize = (<usize>headDim) << 2;
  const rowBytes = kvRowBytes(headDim, dtype);
  const slots = sink + recent;
  const end = pastLen + rows;
  for (let r = 0; r < rows; r++) {
    const p = pastLen + r;
    if (p >= sink && p < end - recent) continue;
    const slot = ringSlotOf(p, sink, recent);
    for (let h = 0; h < heads; h++) {
      encodeRow(ring + <usize>(h * slots + slot) * rowBytes, x + <usize>(r * heads + h) * vecBytes, headDim, dtype);
    }
  }
}

// Adds position j's stored vector (ring row or chunk row, see keyAddr) to sum; tmp: one f32 vector
// then one encoded row (packed rings only).
function addStored(sum: usize, ringHead: usize, chunk: usize, j: i32, h: i32, pastLen: i32, numKvHeads: i32,
  headDim: i32, sink: i32, recent: i32, dtype: i32, tmp: usize): void {
  const vecBytes: usize = (<usize>headDim) << 2;
  const rowBytes = kvRowBytes(headDim, dtype);
  if (dtype == KV_F32) {
    addVec(sum, keyAddr(ringHead, chunk, j, h, pastLen, numKvHeads, sink, recent, vecBytes), headDim);
  } else if (j < pastLen) {
    decodeRows(tmp, keyAddr(ringHead, chunk, j, h, pastLen, numKvHeads, sink, recent, rowBytes), 0, 1, headDim, dtype);
    addVec(sum, tmp, headDim);
  } else {
    roundRows(tmp, keyAddr(ringHead, chunk, j, h, pastLen, numKvHeads, sink, recent, vecBytes), 1, headDim, dtype, tmp + vecBytes);
    addVec(sum, tmp, headDim);
  }
}

/** Scratch floats of compensationAppend for a ring of `dtype`. */
export function compensationScratchFloats(headDim: i32, dtype: i32): i32 {
  return dtype == KV_F32 ? 0 : headDim + <i32>(kvRowBytes(headDim, dtype) >> 2);
}

/**
 * Adds the positions this chunk evicts, [max(sink, pastLen − recent), pastLen + rows − recent), to the
 * compensation sums, in ascending order, as stored in a ring of `dtype` (the chunk's rows rounded as
 * ringAppend would store them); call before ringAppend overwrites their slots. scratch:
 * compensationScratchFloats floats.
 */
export function compensationAppend(kSum: usize, vSum: usize, kRing: usize, vRing: usize, k: usize, v: usize,
  rows: i32, numKvHeads: i32, headDim: i32, pastLen: i32, sink: i32, recent: i32, dtype: i32, scratch: usize): void {
  const vecBytes: usize = (<usize>headDim) << 2;
  const headBytes: usize = <usize>(sink + recent) * kvRowBytes(headDim, dtype);
  const j0 = max(sink, pastLen - recent), j1 = pastLen + rows - recent;
  for (let h = 0; h < numKvHeads; h++) {
    const ks = kSum + <usize>h * vecBytes, vs = vSum + <usize>h * vecBytes;
    const kr = kRing + <usize>h * headBytes, vr = vRing + <usize>h * headBytes;
    for (let j = j0; j < j1; j++) {
      addStored(ks, kr, k, j, h, pastLen, numKvHeads, headDim, sink, recent, dtype, scratch);
      addStored(vs, vr, v, j, h, pastLen, numKvHeads, headDim, sink, recent, dtype, scratch);
    }
  }
}
