// Streaming-head attention (sink + recent window) over a constant-size ring, and the ring append.
//
// Ring layout (head-major, [numKvHeads][sink + recent][headDim]): position p lives in slot p when
// p < sink, else in slot sink + ((p − sink) mod recent). Before a chunk the ring holds positions
// [0, min(pastLen, sink)) and [max(sink, pastLen − recent), pastLen); the chunk's own keys come
// from k / v ([rows][numKvHeads][headDim]). Query at position i sees j ≤ i with j < sink or
// j > i − recent. The online-softmax tile machinery is shared with attention.ts.
import { beginTile, endTile, segment, setupScratch } from './attention';

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
    segment(p0 + first, p1, kr + wrapped, vr + wrapped, vecBytes, false);
  }
  const off = <usize>s0 * vecBytes;
  segment(p0, p0 + first, kr + off, vr + off, vecBytes, false);
}

/** KV heads [kvStart, kvEnd) only (threads share the heads). */
export function streamingAttention(out: usize, q: usize, k: usize, v: usize, kRing: usize, vRing: usize,
  rows: i32, numHeads: i32, numKvHeads: i32, headDim: i32, pastLen: i32, scale: f32,
  sink: i32, recent: i32, scratch: usize, tileRows: i32, kvStart: i32, kvEnd: i32): void {
  const g = numHeads / numKvHeads;
  setupScratch(scratch, tileRows * g, headDim, g, recent);
  const vecBytes: usize = (<usize>headDim) << 2;
  const slots = sink + recent;
  const chunkStride: usize = <usize>numKvHeads * vecBytes;
  const ringSinkEnd = min(pastLen, sink);
  const ringRecentStart = max(sink, pastLen - recent);
  const chunkSinkEnd = min(sink, pastLen + rows);
  const chunkRecentStart = max(sink, pastLen);
  for (let kvh = kvStart; kvh < kvEnd; kvh++) {
    const kr = kRing + <usize>(kvh * slots) * vecBytes, vr = vRing + <usize>(kvh * slots) * vecBytes;
    const kc = k + <usize>kvh * vecBytes, vc = v + <usize>kvh * vecBytes;
    for (let r0 = 0; r0 < rows; r0 += tileRows) {
      beginTile(q, r0, min(tileRows, rows - r0), numHeads, kvh, pastLen, scale);
      if (ringSinkEnd > 0) segment(0, ringSinkEnd, kr, vr, vecBytes, true);
      if (ringRecentStart < pastLen) ringRecent(ringRecentStart, pastLen, kr, vr, sink, recent, vecBytes);
      if (pastLen < chunkSinkEnd) segment(pastLen, chunkSinkEnd, kc, vc, chunkStride, true);
      if (chunkRecentStart < pastLen + rows) {
        const off = <usize>(chunkRecentStart - pastLen) * chunkStride;
        segment(chunkRecentStart, pastLen + rows, kc + off, vc + off, chunkStride, false);
      }
      endTile(out, r0, numHeads, kvh);
    }
  }
}

/** Stores the chunk positions the ring keeps: p < sink, or p among the last `recent` positions. */
export function ringAppend(kRing: usize, vRing: usize, k: usize, v: usize, rows: i32, numKvHeads: i32,
  headDim: i32, pastLen: i32, sink: i32, recent: i32): void {
  const vecBytes: usize = (<usize>headDim) << 2;
  const slots = sink + recent;
  const end = pastLen + rows;
  for (let r = 0; r < rows; r++) {
    const p = pastLen + r;
    if (p >= sink && p < end - recent) continue;
    const slot = p < sink ? p : sink + (p - sink) % recent;
    for (let h = 0; h < numKvHeads; h++) {
      const src: usize = <usize>(r * numKvHeads + h) * vecBytes;
      const dst: usize = <usize>(h * slots + slot) * vecBytes;
      memory.copy(kRing + dst, k + src, vecBytes);
      memory.copy(vRing + dst, v + src, vecBytes);
    }
  }
}
