// Attention over a full (head-major) KV cache with causal masking, and the shared machinery that
// the streaming kernel (../streaming/streaming.as.ts) also uses.
//
// Work is organised per KV head and per tile of query rows: the tile's query vectors (tileRows
// rows × the group's query heads, GQA) are gathered into scratch pre-multiplied by the scale, then
// keys are consumed in blocks of BLOCK positions: scores for the whole tile come from one small
// GEMM (gemmSet), each query vector's running max and sum are updated (online softmax: the
// accumulator is rescaled only when the max grows), and P·V is accumulated with f32x4 over
// headDim. Memory is O(tile) regardless of context length; each K/V block is read once per tile
// while it is hot for every query head of the group.
//
// Decode (one query row) reads every K/V byte once, from DRAM, and WASM has no prefetch
// instruction. With a GQA group of 4 or more query heads per KV head there is enough arithmetic per
// byte to hide the reads behind it, so K and V are read strictly row after row (QK by key pairs,
// P·V row-major in pvRows) and the hardware prefetcher streams them while the core computes. With
// fewer (MHA, group 2) the kernel is bandwidth-bound: a tight touch pass over each span of K and V
// reads faster than the compute loops' demand misses, and P·V then walks column strips in cache.
// Measured on the kernels suite; see README, Benchmarks.
//
// Scratch (allocated by the caller, size from attentionScratchFloats): per query vector of the
// tile, headDim scaled query + headDim accumulator + BLOCK scores + running max + running sum.
//
// A full cache stored as f16 or int8 (kv_dtype.ts) is decoded one block of BLOCK keys at a time
// into f32 scratch (kvDecodeScratchFloats) and the block then runs through the same f32 machinery:
// the cache is read once per tile, as packed bytes.
import { gemmSet } from '../../../assembly/matmul';
import { expv, exps, hmax, touchPair } from '../../../assembly/simd';
import { KV_F32, decodeRows, encodeRow, kvRowBytes } from '../../../assembly/kv_dtype';

/** Keys per block. Multiple of 4. */
const BLOCK: i32 = 64;
/** Keys per touch pass in bandwidth-bound decode (4 blocks: 128 KiB of K + V at head dim 64). */
const TOUCH_KEYS: i32 = 4 * BLOCK;
/** Query vectors per decode tile from which the reads hide behind the arithmetic (see above). */
const STREAMED_DECODE_MIN_QUERIES: i32 = 4;
/** "No limit" for sink / recent in full attention. */
export const UNBOUNDED: i32 = 0x3fffffff;

// Tile state (wasm globals; kernels are not re-entrant).
let hd: i32 = 0;             // headDim
let group: i32 = 0;          // query heads per KV head
let nq: i32 = 0;             // query vectors in the current tile (= tile rows × group)
let tileI0: i32 = 0;         // absolute position of the tile's first query row
let tileRowsNow: i32 = 0;    // rows in the current tile
let recentW: i32 = 0;        // streaming window: recent size (UNBOUNDED for full attention)
let sQ: usize = 0, sAcc: usize = 0, sSc: usize = 0, sM: usize = 0, sL: usize = 0;

/** Scratch floats needed for tiles of `queryVectors` query vectors (tile rows × group). */
export function attentionScratchFloats(queryVectors: i32, headDim: i32): i32 {
  return queryVectors * (2 * headDim + BLOCK + 2);
}

/** Lays out the scratch regions for tiles of up to maxQ query vectors. */
export function setupScratch(scratch: usize, maxQ: i32, headDim: i32, groupSize: i32, recent: i32): void {
  hd = headDim;
  group = groupSize;
  recentW = recent;
  const vecBytes: usize = (<usize>headDim) << 2;
  sQ = scratch;
  sAcc = sQ + <usize>maxQ * vecBytes;
  sSc = sAcc + <usize>maxQ * vecBytes;
  sM = sSc + ((<usize>maxQ * <usize>BLOCK) << 2);
  sL = sM + ((<usize>maxQ) << 2);
}

/** Starts a tile: rows r0 .. r0+nr−1 (absolute positions pastLen + r), query heads of KV head kvh. */
export function beginTile(q: usize, r0: i32, nr: i32, numHeads: i32, kvh: i32, pastLen: i32, scale: f32): void {
  nq = nr * group;
  tileRowsNow = nr;
  tileI0 = pastLen + r0;
  const vecBytes: usize = (<usize>hd) << 2;
  const end4: usize = (<usize>(hd & ~3)) << 2;
  const s = f32x4.splat(scale);
  for (let rr = 0; rr < nr; rr++) {
    for (let g = 0; g < group; g++) {
      const t = rr * group + g;
      const src = q + <usize>((r0 + rr) * numHeads + kvh * group + g) * vecBytes;
      const dst = sQ + <usize>t * vecBytes;
      let i: usize = 0;
      for (; i < end4; i += 16) v128.store(dst + i, f32x4.mul(v128.load(src + i), s));
      for (; i < vecBytes; i += 4) store<f32>(dst + i, load<f32>(src + i) * scale);
      store<f32>(sM + ((<usize>t) << 2), <f32>-Infinity);
      store<f32>(sL + ((<usize>t) << 2), 0);
    }
  }
  memory.fill(sAcc, 0, <usize>nq * vecBytes);
}

/**
 * Writes the tile's normalised outputs to out ([rows][numHeads][headDim]) and, when lse ≠ 0, each
 * query vector's log-sum-exp of its logits, max + ln(sum), at lse[row · numHeads + head] (f32).
 */
export function endTile(out: usize, r0: i32, numHeads: i32, kvh: i32, lse: usize = 0): void {
  const vecBytes: usize = (<usize>hd) << 2;
  const end4: usize = (<usize>(hd & ~3)) << 2;
  for (let rr = 0; rr < tileRowsNow; rr++) {
    for (let g = 0; g < group; g++) {
      const t = rr * group + g;
      const dst = out + <usize>((r0 + rr) * numHeads + kvh * group + g) * vecBytes;
      const src = sAcc + <usize>t * vecBytes;
      const l = load<f32>(sL + ((<usize>t) << 2));
      if (lse != 0) {
        const at = lse + ((<usize>((r0 + rr) * numHeads + kvh * group + g)) << 2);
        store<f32>(at, <f32>(<f64>load<f32>(sM + ((<usize>t) << 2)) + Math.log(<f64>l)));
      }
      const inv: f32 = l > 0 ? <f32>1 / l : 0;
      const s = f32x4.splat(inv);
      let i: usize = 0;
      for (; i < end4; i += 16) v128.store(dst + i, f32x4.mul(v128.load(src + i), s));
      for (; i < vecBytes; i += 4) store<f32>(dst + i, load<f32>(src + i) * inv);
    }
  }
}

/**
 * Consumes the keys at absolute positions [p0, p1), stored at k + (p − p0) · stride and
 * v + (p − p0) · vStride bytes (vStride differs only for decoupled heads' chunk rows).
 * sinkPart: every position in the range is a sink (visible iff j ≤ i); otherwise a key is
 * visible iff i − recent < j ≤ i. Ranges must not straddle the sink boundary.
 */
export function segment(p0: i32, p1: i32, k: usize, v: usize, stride: usize, sinkPart: bool, vStride: usize): void {
  const iMax = tileI0 + tileRowsNow - 1;
  const hi = min(p1, iMax + 1);
  const lo = sinkPart ? p0 : max(p0, tileI0 - recentW + 1);
  for (let b = lo; b < hi; b += BLOCK) {
    const n = min(BLOCK, hi - b);
    const off = <usize>(b - p0) * stride, vOff = <usize>(b - p0) * vStride;
    if (tileRowsNow == 1 && nq < STREAMED_DECODE_MIN_QUERIES && (b - lo) % TOUCH_KEYS == 0) {
      touchKV(k + off, v + vOff, min(TOUCH_KEYS, hi - b), stride, vStride);
    }
    keyBlock(b, n, k + off, v + vOff, stride, sinkPart, vStride);
  }
}

/**
 * One extra key for query vector t of the tile (a streaming head's compensation token): its score
 * is kScale · (scaled q · kvec) + bias and its value vScale · vvec, merged into the online softmax.
 */
export function extraKey(t: i32, kvec: usize, kScale: f32, bias: f32, vvec: usize, vScale: f32): void {
  const qv = sQ + <usize>t * ((<usize>hd) << 2);
  let dot: f32 = 0;
  for (let d = 0; d < hd; d++) dot += load<f32>(qv + ((<usize>d) << 2)) * load<f32>(kvec + ((<usize>d) << 2));
  const s = dot * kScale + bias;
  const mp = sM + ((<usize>t) << 2), lp = sL + ((<usize>t) << 2);
  const acc = sAcc + <usize>t * ((<usize>hd) << 2);
  let l = load<f32>(lp);
  const mOld = load<f32>(mp);
  if (s > mOld) {
    const corr = exps(mOld - s);
    l *= corr;
    scaleRow(acc, corr);
    store<f32>(mp, s);
  }
  const p = exps(s - load<f32>(mp));
  store<f32>(lp, l + p);
  const pv = p * vScale;
  for (let d = 0; d < hd; d++) {
    const a = acc + ((<usize>d) << 2);
    store<f32>(a, load<f32>(a) + pv * load<f32>(vvec + ((<usize>d) << 2)));
  }
}

// K and V rows interleaved, one load per line: the span is in cache before its blocks run.
function touchKV(k: usize, v: usize, n: i32, stride: usize, vStride: usize): void {
  const rowBytes: usize = (<usize>hd) << 2;
  if (stride == rowBytes && vStride == rowBytes) touchPair(k, v, <usize>n * rowBytes);
  else for (let j = 0; j < n; j++) touchPair(k + <usize>j * stride, v + <usize>j * vStride, rowBytes);
}

function keyBlock(p0: i32, n: i32, k: usize, v: usize, stride: usize, sinkPart: bool, vStride: usize): void {
  const scRow: usize = (<usize>BLOCK) << 2;
  gemmSet(sSc, BLOCK, sQ, hd, k, <i32>(stride >> 2), nq, hd, n);
  const n4 = (n + 3) & ~3;
  const negInf = <f32>-Infinity;
  for (let t = 0; t < nq; t++) {
    const i = tileI0 + t / group;
    const thi = min(n, i - p0 + 1);
    const tlo = sinkPart ? 0 : max(0, i - recentW + 1 - p0);
    const row = sSc + <usize>t * scRow;
    if (tlo >= thi) {
      memory.fill(row, 0, (<usize>n4) << 2);
      continue;
    }
    for (let j = 0; j < tlo; j++) store<f32>(row + ((<usize>j) << 2), negInf);
    for (let j = thi; j < n4; j++) store<f32>(row + ((<usize>j) << 2), negInf);
    // Masked entries are −inf now, so the block max runs over whole vectors (pmax: plain maxps).
    let mv = f32x4.splat(negInf);
    for (let j = 0; j < n4; j += 4) mv = f32x4.pmax(mv, v128.load(row + ((<usize>j) << 2)));
    const bmax = hmax(mv);
    const mp = sM + ((<usize>t) << 2), lp = sL + ((<usize>t) << 2);
    const mOld = load<f32>(mp);
    let l = load<f32>(lp);
    if (bmax > mOld) {
      const corr = exps(mOld - bmax);
      l *= corr;
      scaleRow(sAcc + <usize>t * ((<usize>hd) << 2), corr);
      store<f32>(mp, bmax);
    }
    const m = f32x4.splat(load<f32>(mp));
    let sum = f32x4.splat(0);
    for (let j = 0; j < n4; j += 4) {
      const pj = row + ((<usize>j) << 2);
      const p = expv(f32x4.sub(v128.load(pj), m));
      v128.store(pj, p);
      sum = f32x4.add(sum, p);
    }
    l += f32x4.extract_lane(sum, 0) + f32x4.extract_lane(sum, 1) + f32x4.extract_lane(sum, 2) + f32x4.extract_lane(sum, 3);
    store<f32>(lp, l);
  }
  if (tileRowsNow == 1 && nq >= STREAMED_DECODE_MIN_QUERIES) pvRows(v, vStride, n);
  else pvAdd(v, vStride, n);
}

function scaleRow(p: usize, c: f32): void {
  const bytes: usize = (<usize>hd) << 2, end4: usize = (<usize>(hd & ~3)) << 2;
  const s = f32x4.splat(c);
  let i: usize = 0;
  for (; i < end4; i += 16) v128.store(p + i, f32x4.mul(v128.load(p + i), s));
  for (; i < bytes; i += 4) store<f32>(p + i, load<f32>(p + i) * c);
}

// acc[t][:] += Σ_j P[t][j] · v[j][:] for t < nq, j < n (v rows stride bytes apart).
function pvAdd(v: usize, stride: usize, n: i32): void {
  const scRow: usize = (<usize>BLOCK) << 2;
  const vecBytes: usize = (<usize>hd) << 2;
  const end8: usize = (<usize>(hd & ~7)) << 2, end4: usize = (<usize>(hd & ~3)) << 2;
  const nb: usize = (<usize>n) << 2;
  let t = 0;
  for (; t + 4 <= nq; t += 4) {
    const P0 = sSc + <usize>t * scRow, P1 = P0 + scRow, P2 = P1 + scRow, P3 = P2 + scRow;
    const A0 = sAcc + <usize>t * vecBytes, A1 = A0 + vecBytes, A2 = A1 + vecBytes, A3 = A2 + vecBytes;
    let d: usize = 0;
    for (; d < end8; d += 32) {
      let a00 = v128.load(A0 + d), a01 = v128.load(A0 + d, 16);
      let a10 = v128.load(A1 + d), a11 = v128.load(A1 + d, 16);
      let a20 = v128.load(A2 + d), a21 = v128.load(A2 + d, 16);
      let a30 = v128.load(A3 + d), a31 = v128.load(A3 + d, 16);
      let vp = v + d;
      for (let j: usize = 0; j < nb; j += 4) {
        const v0 = v128.load(vp), v1 = v128.load(vp, 16);
        let p = v128.load_splat<f32>(P0 + j);
        a00 = f32x4.add(a00, f32x4.mul(p, v0)); a01 = f32x4.add(a01, f32x4.mul(p, v1));
        p = v128.load_splat<f32>(P1 + j);
        a10 = f32x4.add(a10, f32x4.mul(p, v0)); a11 = f32x4.add(a11, f32x4.mul(p, v1));
        p = v128.load_splat<f32>(P2 + j);
        a20 = f32x4.add(a20, f32x4.mul(p, v0)); a21 = f32x4.add(a21, f32x4.mul(p, v1));
        p = v128.load_splat<f32>(P3 + j);
        a30 = f32x4.add(a30, f32x4.mul(p, v0)); a31 = f32x4.add(a31, f32x4.mul(p, v1));
        vp += stride;
      }
      v128.store(A0 + d, a00); v128.store(A0 + d, a01, 16);
      v128.store(A1 + d, a10); v128.store(A1 + d, a11, 16);
      v128.store(A2 + d, a20); v128.store(A2 + d, a21, 16);
      v128.store(A3 + d, a30); v128.store(A3 + d, a31, 16);
    }
    if (d < end4) {
      let a0 = v128.load(A0 + d), a1 = v128.load(A1 + d), a2 = v128.load(A2 + d), a3 = v128.load(A3 + d);
      let vp = v + d;
      for (let j: usize = 0; j < nb; j += 4) {
        const v0 = v128.load(vp);
        a0 = f32x4.add(a0, f32x4.mul(v128.load_splat<f32>(P0 + j), v0));
        a1 = f32x4.add(a1, f32x4.mul(v128.load_splat<f32>(P1 + j), v0));
        a2 = f32x4.add(a2, f32x4.mul(v128.load_splat<f32>(P2 + j), v0));
        a3 = f32x4.add(a3, f32x4.mul(v128.load_splat<f32>(P3 + j), v0));
        vp += stride;
      }
      v128.store(A0 + d, a0); v128.store(A1 + d, a1); v128.store(A2 + d, a2); v128.store(A3 + d, a3);
      d += 16;
    }
    for (; d < vecBytes; d += 4) {
      let a = f32x4(load<f32>(A0 + d), load<f32>(A1 + d), load<f32>(A2 + d), load<f32>(A3 + d));
      let vp = v + d;
      for (let j: usize = 0; j < nb; j += 4) {
        const p = f32x4(load<f32>(P0 + j), load<f32>(P1 + j), load<f32>(P2 + j), load<f32>(P3 + j));
        a = f32x4.add(a, f32x4.mul(p, v128.load_splat<f32>(vp)));
        vp += stride;
      }
      store<f32>(A0 + d, f32x4.extract_lane(a, 0)); store<f32>(A1 + d, f32x4.extract_lane(a, 1));
      store<f32>(A2 + d, f32x4.extract_lane(a, 2)); store<f32>(A3 + d, f32x4.extract_lane(a, 3));
    }
  }
  for (; t < nq; t++) {
    const P0 = sSc + <usize>t * scRow;
    const A0 = sAcc + <usize>t * vecBytes;
    let d: usize = 0;
    for (; d + 64 <= end4; d += 64) {
      let a0 = v128.load(A0 + d), a1 = v128.load(A0 + d, 16), a2 = v128.load(A0 + d, 32), a3 = v128.load(A0 + d, 48);
      let vp = v + d;
      for (let j: usize = 0; j < nb; j += 4) {
        const p = v128.load_splat<f32>(P0 + j);
        a0 = f32x4.add(a0, f32x4.mul(p, v128.load(vp)));
        a1 = f32x4.add(a1, f32x4.mul(p, v128.load(vp, 16)));
        a2 = f32x4.add(a2, f32x4.mul(p, v128.load(vp, 32)));
        a3 = f32x4.add(a3, f32x4.mul(p, v128.load(vp, 48)));
        vp += stride;
      }
      v128.store(A0 + d, a0); v128.store(A0 + d, a1, 16); v128.store(A0 + d, a2, 32); v128.store(A0 + d, a3, 48);
    }
    for (; d < end4; d += 16) {
      let a0 = v128.load(A0 + d);
      let vp = v + d;
      for (let j: usize = 0; j < nb; j += 4) {
        a0 = f32x4.add(a0, f32x4.mul(v128.load_splat<f32>(P0 + j), v128.load(vp)));
        vp += stride;
      }
      v128.store(A0 + d, a0);
    }
    for (; d < vecBytes; d += 4) {
      let a = load<f32>(A0 + d);
      let vp = v + d;
      for (let j: usize = 0; j < nb; j += 4) { a += load<f32>(P0 + j) * load<f32>(vp); vp += stride; }
      store<f32>(A0 + d, a);
    }
  }
}

// Decode with ≥ 4 query vectors: acc[t][:] += Σ_j P[t][j] · v[j][:] with V read row after row, in
// address order, so that the hardware prefetcher streams it. The accumulators stay in L1 (4 query
// vectors × headDim do not fit the registers); two keys per pass halve their loads and stores.
function pvRows(v: usize, stride: usize, n: i32): void {
  const scRow: usize = (<usize>BLOCK) << 2;
  const vecBytes: usize = (<usize>hd) << 2;
  const end4: usize = (<usize>(hd & ~3)) << 2;
  let t = 0;
  for (; t + 4 <= nq; t += 4) {
    const P0 = sSc + <usize>t * scRow, P1 = P0 + scRow, P2 = P1 + scRow, P3 = P2 + scRow;
    const A0 = sAcc + <usize>t * vecBytes, A1 = A0 + vecBytes, A2 = A1 + vecBytes, A3 = A2 + vecBytes;
    let j = 0;
    for (; j + 2 <= n; j += 2) {
      const jo: usize = (<usize>j) << 2;
      const p00 = v128.load_splat<f32>(P0 + jo), p01 = v128.load_splat<f32>(P0 + jo, 4);
      const p10 = v128.load_splat<f32>(P1 + jo), p11 = v128.load_splat<f32>(P1 + jo, 4);
      const p20 = v128.load_splat<f32>(P2 + jo), p21 = v128.load_splat<f32>(P2 + jo, 4);
      const p30 = v128.load_splat<f32>(P3 + jo), p31 = v128.load_splat<f32>(P3 + jo, 4);
      const r0 = v + <usize>j * stride, r1 = r0 + stride;
      let d: usize = 0;
      for (; d < end4; d += 16) {
        const v0 = v128.load(r0 + d), v1 = v128.load(r1 + d);
        v128.store(A0 + d, f32x4.add(f32x4.add(v128.load(A0 + d), f32x4.mul(p00, v0)), f32x4.mul(p01, v1)));
        v128.store(A1 + d, f32x4.add(f32x4.add(v128.load(A1 + d), f32x4.mul(p10, v0)), f32x4.mul(p11, v1)));
        v128.store(A2 + d, f32x4.add(f32x4.add(v128.load(A2 + d), f32x4.mul(p20, v0)), f32x4.mul(p21, v1)));
        v128.store(A3 + d, f32x4.add(f32x4.add(v128.load(A3 + d), f32x4.mul(p30, v0)), f32x4.mul(p31, v1)));
      }
      for (; d < vecBytes; d += 4) {
        const v0 = f32x4.splat(load<f32>(r0 + d)), v1 = f32x4.splat(load<f32>(r1 + d));
        const a = f32x4(load<f32>(A0 + d), load<f32>(A1 + d), load<f32>(A2 + d), load<f32>(A3 + d));
        const p0 = f32x4(load<f32>(P0 + jo), load<f32>(P1 + jo), load<f32>(P2 + jo), load<f32>(P3 + jo));
        const p1 = f32x4(load<f32>(P0 + jo, 4), load<f32>(P1 + jo, 4), load<f32>(P2 + jo, 4), load<f32>(P3 + jo, 4));
        const r = f32x4.add(f32x4.add(a, f32x4.mul(p0, v0)), f32x4.mul(p1, v1));
        store<f32>(A0 + d, f32x4.extract_lane(r, 0)); store<f32>(A1 + d, f32x4.extract_lane(r, 1));
        store<f32>(A2 + d, f32x4.extract_lane(r, 2)); store<f32>(A3 + d, f32x4.extract_lane(r, 3));
      }
    }
    if (j < n) {
      pvRow(A0, P0, v, stride, j, n); pvRow(A1, P1, v, stride, j, n);
      pvRow(A2, P2, v, stride, j, n); pvRow(A3, P3, v, stride, j, n);
    }
  }
  for (; t < nq; t++) pvRow(sAcc + <usize>t * vecBytes, sSc + <usize>t * scRow, v, stride, 0, n);
}

// One query vector, keys j0 ≤ j < n in row order, four rows per pass.
function pvRow(A: usize, P: usize, v: usize, stride: usize, j0: i32, n: i32): void {
  const vecBytes: usize = (<usize>hd) << 2;
  const end4: usize = (<usize>(hd & ~3)) << 2;
  let j = j0;
  for (; j + 4 <= n; j += 4) {
    const jo: usize = (<usize>j) << 2;
    const p0 = v128.load_splat<f32>(P + jo), p1 = v128.load_splat<f32>(P + jo, 4);
    const p2 = v128.load_splat<f32>(P + jo, 8), p3 = v128.load_splat<f32>(P + jo, 12);
    const r0 = v + <usize>j * stride, r1 = r0 + stride, r2 = r1 + stride, r3 = r2 + stride;
    let d: usize = 0;
    for (; d < end4; d += 16) {
      const s01 = f32x4.add(f32x4.mul(p0, v128.load(r0 + d)), f32x4.mul(p1, v128.load(r1 + d)));
      const s23 = f32x4.add(f32x4.mul(p2, v128.load(r2 + d)), f32x4.mul(p3, v128.load(r3 + d)));
      v128.store(A + d, f32x4.add(v128.load(A + d), f32x4.add(s01, s23)));
    }
    for (; d < vecBytes; d += 4) {
      store<f32>(A + d, load<f32>(A + d) + (f32x4.extract_lane(p0, 0) * load<f32>(r0 + d) + f32x4.extract_lane(p1, 0) * load<f32>(r1 + d))
        + (f32x4.extract_lane(p2, 0) * load<f32>(r2 + d) + f32x4.extract_lane(p3, 0) * load<f32>(r3 + d)));
    }
  }
  for (; j < n; j++) {
    const p = v128.load_splat<f32>(P + ((<usize>j) << 2));
    const r = v + <usize>j * stride;
    let d: usize = 0;
    for (; d < end4; d += 16) v128.store(A + d, f32x4.add(v128.load(A + d), f32x4.mul(p, v128.load(r + d))));
    for (; d < vecBytes; d += 4) store<f32>(A + d, load<f32>(A + d) + f32x4.extract_lane(p, 0) * load<f32>(r + d));
  }
}

/** Extra scratch floats for decoded K and V blocks of a cache stored as `dtype` (0 for f32). */
export function kvDecodeScratchFloats(headDim: i32, dtype: i32): i32 {
  return dtype == KV_F32 ? 0 : 2 * BLOCK * headDim;
}

// Keys [0, p1) of a packed full cache (rows rowBytes apart), decoded block by block into dq.
function packedSegment(p1: i32, k: usize, v: usize, rowBytes: usize, dtype: i32, dq: usize): void {
  const hi = min(p1, tileI0 + tileRowsNow);
  const vecBytes: usize = (<usize>hd) << 2;
  const dqV = dq + <usize>BLOCK * vecBytes;
  for (let b = 0; b < hi; b += BLOCK) {
    const n = min(BLOCK, hi - b);
    const off = <usize>b * rowBytes;
    decodeRows(dq, k + off, rowBytes, n, hd, dtype);
    decodeRows(dqV, v + off, rowBytes, n, hd, dtype);
    keyBlock(b, n, dq, dqV, vecBytes, true, vecBytes);
  }
}

/**
 * Causal attention over a full cache holding positions [0, pastLen + rows): query row r attends
 * keys j ≤ pastLen + r. q, out: [rows][numHeads][headDim]; caches: [numKvHeads][capacity] rows of
 * kvRowBytes(headDim, dtype) (f32: [numKvHeads][capacity][headDim]). scratch:
 * attentionScratchFloats(tileRows · numHeads/numKvHeads, headDim) + kvDecodeScratchFloats floats.
 * out may equal q. Only KV heads [kvStart, kvEnd) (and their query heads) are done, so threads can
 * share the heads.
 *
 * Decoupled heads (DHA): with kMap ≠ 0, kMap and vMap are i32 [numHeads] (query head → key head,
 * query head → value head) and the caller passes numKvHeads = numHeads: every query head is its own
 * unit (group 1) reading key head kMap[h] of kCache and value head vMap[h] of vCache.
 */
export function attention(out: usize, q: usize, kCache: usize, vCache: usize, rows: i32, numHeads: i32,
  numKvHeads: i32, headDim: i32, pastLen: i32, scale: f32, capacity: i32, scratch: usize, tileRows: i32,
  kvStart: i32, kvEnd: i32, dtype: i32, kMap: usize, vMap: usize): void {
  const g = numHeads / numKvHeads;
  setupScratch(scratch, tileRows * g, headDim, g, UNBOUNDED);
  const dq = scratch + ((<usize>attentionScratchFloats(tileRows * g, headDim)) << 2);
  const rowBytes = kvRowBytes(headDim, dtype);
  const headBytes: usize = <usize>capacity * rowBytes;
  for (let kvh = kvStart; kvh < kvEnd; kvh++) {
    const kh: i32 = kMap ? load<i32>(kMap + (<usize>kvh << 2)) : kvh;
    const vh: i32 = kMap ? load<i32>(vMap + (<usize>kvh << 2)) : kvh;
    const kb = kCache + <usize>kh * headBytes, vb = vCache + <usize>vh * headBytes;
    for (let r0 = 0; r0 < rows; r0 += tileRows) {
      beginTile(q, r0, min(tileRows, rows - r0), numHeads, kvh, pastLen, scale);
      if (dtype == KV_F32) segment(0, pastLen + rows, kb, vb, rowBytes, true, rowBytes);
      else packedSegment(pastLen + rows, kb, vb, rowBytes, dtype, dq);
      endTile(out, r0, numHeads, kvh);
    }
  }
}

/**
 * Stores the chunk's k ([rows][numKvHeads][headDim] f32) and v ([rows][numVHeads][headDim]) at
 * positions pastLen.. of a full cache, encoded as `dtype` (keys arrive after RoPE). numVHeads differs
 * from numKvHeads only for decoupled heads (DHA).
 */
export function kvAppend(kCache: usize, vCache: usize, k: usize, v: usize, rows: i32, numKvHeads: i32,
  headDim: i32, capacity: i32, pastLen: i32, dtype: i32, numVHeads: i32): void {
  appendSide(kCache, k, rows, numKvHeads, headDim, capacity, pastLen, dtype);
  appendSide(vCache, v, rows, numVHeads, headDim, capacity, pastLen, dtype);
}

function appendSide(cache: usize, x: usize, rows: i32, heads: i32, headDim: i32, capacity: i32, pastLen: i32, dtype: i32): void {
  const vecBytes: usize = (<usize>headDim) << 2;
  const rowBytes = kvRowBytes(headDim, dtype);
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < heads; h++) {
      const src: usize = <usize>(r * heads + h) * vecBytes;
      const dst: usize = (<usize>h * <usize>capacity + <usize>(pastLen + r)) * rowBytes;
      encodeRow(cache + dst, x + src, headDim, dtype);
    }
  }
}
