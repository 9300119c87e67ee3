// MagicPIG (Chen et al., ICLR 2025) as a KV method: a KV head's cache lives in host memory, a
// WebAssembly memory of the cache's own, and decode attends exactly only the static tokens (the
// first `sinks` positions, the `local` positions before the chunk, and the chunk's row), kept on
// the main device too, while the other ("offloaded") keys are sampled by SimHash: keys colliding
// with the query in ≥ 2 of L tables of K bits, with importance-corrected logits
// (src/kv/magicpig/reference.ts has the math).
//
// Chunks: a chunk of more than one row (prefill) attends exactly over every position, with the
// full method's WASM attention kernel on the host copy; MagicPIG's prefill is exact too. A chunk
// of one row (decode) is sampled: the static partial softmax (o, log-sum-exp) from the main
// device ⊕ the sampled partial (magicpigAttend, src/kv/magicpig/magicpig.as.ts), merged by
// log-sum-exp on the host.
//
// A decode step on the main device (as MagicPIG splits it): the static tokens are a streaming
// ring (window sink = sinks, recent = local + 1, which is exactly the static set) attended with
// its log-sum-exp; the SimHash kernel (./kernels.ts) hashes the queries and the key that leaves
// the local window at this step (from the ring, centered by k̄); q, k, v, the codes and the static
// partial come back in one readback of one step tensor; the host stores k, v, gathers and attends
// the sampled keys, merges, and writes the output back.
//
// The key mean k̄ (MagicPIG centers keys before hashing) is fixed per KV head at the first decode
// step that has offloaded keys: the mean of the keys offloaded then (after a prefill, the
// prefill's offloaded keys, as in MagicPIG). Those keys are hashed then; later ones are hashed as
// they leave the local window (at append). Collisions are found by scanning the codes (8 tables
// per SIMD compare), or with settings.tables through bucket tables (MagicPIG's layout): a token
// leaves the window every decode step, so the tables index the keys offloaded when they were built
// and the newer ones are scanned until there are enough of them to rebuild (TABLE_TAIL; MagicPIG
// builds its tables once, after prefill, and keeps decode tokens in its GPU buffer).
//
// With settings.topk (MagicPIG's exact TopK baseline, src/kv/magicpig/topk.ts) the single row
// attends its static tokens and the k offloaded keys of highest q·k instead, plain logits; nothing
// is hashed and the store is K and V only. Same host store, so it runs on every placement too.
//
// Placement: home 'main' (the GPU in the split and GPU placements, the CPU in the CPU one). The
// main device holds the static rings, a copy of the hyperplanes and k̄ (for hashing) and the step
// tensor; the host store holds every position (prefill attends all of them exactly there). Keys
// offloaded when k̄ is fixed and after a chunk of several rows are hashed from the store: a GPU
// main device gets them uploaded in chunks; on the CPU the offload threads hash them in place.
//
// Layout (KvTensorSpec.host, one WebAssembly memory per cache): the hyperplanes [K·L][d]; K and V
// [numKvHeads][capacity][d] f32 (every position); norms |k − k̄| [numKvHeads][off] f32 and codes
// [numKvHeads][off][cs] u16 of the offloaded rows (off = capacity − sinks − local, cs = L rounded up
// to 8); k̄ [numKvHeads][d]; with tables, order [numKvHeads][L][off] i32 and bucket starts
// [numKvHeads][L][2^K + 1] i32. On the main device: the static K and V rings [numKvHeads][sinks +
// local + 1][d] f32, the planes and k̄. Kernel scratch (hashing, gathering, prefill attention, the
// step tensor) is not counted, like the coordinator's activation buffers.
//
// Threads: with settings.threads (src/kv/magicpig/threads.ts) the memory is shared and the decode
// step's sampled attention, the host's hashing (the offloaded keys at centering, rows leaving the
// window after a chunk of several rows) and the prefill's exact attention split the KV heads over
// the model's offload threads; the merge stays on this thread.
import { ringSlot, type Backend, type DeviceTensor, type StreamingWindow } from '../../backend/contract.js';
import { WasmHeap } from '../../cpu/memory.js';
import { MAX_ARGS, Op, runShare } from '../../cpu/threads.js';
import { kernelMemory, type KernelExports } from '../../cpu/wasm.js';
import { StreamingCache, streamingMethod } from '../streaming/method.js';
import { layoutHostBytes, tensorBytes, type KvGroupCache, type KvSampling, type KvGroupShape, type KvMethod, type KvSettings, type KvTensorSpec } from '../method.js';
import type { MagicPigExports } from './cpu.js';
import { codesOf, runSimhash } from './kernels.js';
import { codeStride } from './params.js';
import { checkMagicPigSettings, simhashPlanes, type MagicPigSettings } from './settings.js';
import { topkCount, topkIndices, type TopKChoice } from './topk.js';

/** One cache's store is one WebAssembly memory (wasm32: 4 GiB), 64 MiB of which are kept for the kernels' scratch. */
export const STORE_LIMIT_BYTES = 2 ** 32 - 64 * 2 ** 20;

/** The attention kernel's query tile (as the CPU backend's). */
const TILE_ROWS = 16;

/**
 * With bucket tables: built at the first decode step with offloaded keys (MagicPIG: after
 * prefill); keys offloaded later are scanned until they number TABLE_TAIL or an eighth of the
 * tabled ones, whichever is more, and then the tables are rebuilt over all of them (a counting sort
 * per table, O(L·n)), so rebuilds cost O(L) per decode step amortised.
 */
const TABLE_TAIL = 512;

/** Keys uploaded per chunk when the main device (a GPU) hashes stored keys: well within a browser's 128 MiB storage binding. */
const DEVICE_HASH_BYTES = 32 * 2 ** 20;

type Kernels = KernelExports & MagicPigExports;

/** f64 entries of the sampling-weight table (magicpig.as.ts samplingWeightEntries; checked at creation). */
const WEIGHT_ENTRIES = 8192;

/** Offloaded rows a cache of `capacity` positions can hold. */
function offloadedCapacity(capacity: number, s: MagicPigSettings): number {
  return Math.max(0, capacity - s.sinks - s.local);
}

/** The static tokens as a streaming window: a decode row at i attends j < sinks and j ≥ i − local. */
function staticWindow(s: MagicPigSettings): StreamingWindow {
  return { sink: s.sinks, recent: s.local + 1 };
}

function storeSpecs(shape: KvGroupShape, capacity: number, s: MagicPigSettings): KvTensorSpec[] {
  const { numKvHeads: H, headDim: D } = shape, off = offloadedCapacity(capacity, s), cs = codeStride(s.L);
  const rings = streamingMethod.layout(shape, capacity, { window: staticWindow(s), compensation: false, kvDtype: 'f32' })
    .map((t) => ({ ...t, name: `static ${t.name}` }));
  // Exact TopK hashes nothing: its store is the keys and values.
  if (s.topk) return [...rings, { name: 'K (host)', words: H * capacity * D, host: true }, { name: 'V (host)', words: H * capacity * D, host: true }];
  return [
    ...rings,
    { name: 'SimHash planes (main device)', words: s.K * s.L * D },
    { name: 'k̄ (main device)', words: H * D },
    { name: 'SimHash planes', words: s.K * s.L * D, host: true },
    { name: `sampling-weight table (${WEIGHT_ENTRIES / 2} cells × 2 f64)`, words: 2 * WEIGHT_ENTRIES, host: true },
    { name: 'K (host)', words: H * capacity * D, host: true },
    { name: 'V (host)', words: H * capacity * D, host: true },
    { name: 'norms |k − k̄|', words: H * off, host: true },
    { name: `codes (${s.L} × u16)`, words: (H * off * cs) / 2, host: true },
    { name: 'k̄', words: H * D, host: true },
    ...(s.tables ? [
      { name: `bucket tables (${s.L} × i32 per key)`, words: H * s.L * off, host: true },
      { name: `bucket starts (${s.L} × ${(1 << s.K) + 1})`, words: H * s.L * ((1 << s.K) + 1), host: true },
    ] : []),
  ];
}

/** Refuses a store larger than one WebAssembly memory, naming the limit. */
function checkStore(shape: KvGroupShape, capacity: number, s: MagicPigSettings): KvTensorSpec[] {
  const specs = storeSpecs(shape, capacity, s), bytes = layoutHostBytes(specs);
  if (bytes > STORE_LIMIT_BYTES) {
    throw new RangeError(`magicpig: layer ${shape.layer ?? 0}'s offloaded store (${shape.numKvHeads} KV heads × ${capacity} positions${s.topk ? '' : `, L = ${s.L}`}) needs ${(bytes / 2 ** 30).toFixed(2)} GiB, more than one WebAssembly memory holds (4 GiB, 64 MiB of it kept for the kernels' scratch); use a shorter context or fewer tables`);
  }
  return specs;
}

/** A kernel instance over a fresh memory (shared for threads), instantiated synchronously from the compiled module. */
function instantiate(module: WebAssembly.Module, shared: boolean): { k: Kernels; heap: WasmHeap } {
  const memory = kernelMemory(shared);
  const instance = new WebAssembly.Instance(module, {
    env: {
      memory,
      abort: (_msg: number, _file: number, line: number, col: number) => { throw new Error(`MagicPIG kernel aborted at ${line}:${col}`); },
      seed: () => 0,
    },
  });
  const k = instance.exports as unknown as Kernels;
  return { k, heap: new WasmHeap(memory, k.heapBase()) };
}

export class MagicPigCache implements KvGroupCache {
  private readonly k: Kernels;
  private readonly heap: WasmHeap;
  private readonly cs: number;
  /** Live blocks: byte address → logical bytes. */
  private readonly blocks = new Map<number, number>();
  /** 0 (not allocated) with exact TopK, like norms, codes and means. */
  private readonly planes: number;
  /** The sampling correction −log(w + 1e−4) tabulated over θ for K, L (magicpig.as.ts buildSamplingWeights). */
  private readonly weights: number;
  private keys: number;
  private values: number;
  private norms: number;
  private codes: number;
  private readonly means: number;
  /** Bucket tables per head (settings.tables): order [H][L][off] i32 (rows `tabled` apart), start [H][L][2^K + 1] i32; else 0. */
  private order = 0;
  private readonly start: number = 0;
  /** Offloaded rows the tables index (the rest are scanned). */
  private tabled = 0;
  private off: number;
  /** Positions stored. */
  private seen = 0;
  /** Offloaded rows hashed (every head alike), once k̄ is fixed. */
  private hashed = 0;
  private centered = false;
  /** The chunk attend() already stored, so that append() of it stores nothing again. */
  private stored: { k: DeviceTensor; v: DeviceTensor; rows: number; pastLen: number } | null = null;
  private freed = false;
  /** The cache's slot in settings.threads (-1: one thread). */
  private readonly slot: number = -1;
  /** A job's arguments when it runs on this thread alone. */
  private readonly single = new Float64Array(MAX_ARGS);
  /** Sampling of the decode steps so far, summed (--json reports sampled / offloaded per step). */
  readonly counts = { steps: 0, sampled: 0, offloaded: 0 };
  private readonly perStep: KvSampling = { sampled: [], offloaded: [] };
  /** The static tokens on the main device. */
  private readonly ring: StreamingCache;
  /** The hyperplanes and k̄ on the main device, for hashing there (null with exact TopK). */
  private readonly devicePlanes: DeviceTensor | null;
  private readonly deviceMeans: DeviceTensor | null;
  /** A decode step's outputs for the one readback (stepLayout), allocated at the first decode step. */
  private step: DeviceTensor | null = null;
  /** The codes the main device computed for the key that leaves the local window at the next append: its offloaded row, [H][cs] u16. */
  private leaving: { row: number; codes: Uint16Array } | null = null;

  constructor(private readonly be: Backend, private readonly shape: KvGroupShape, private capacity: number,
    private readonly s: MagicPigSettings) {
    checkStore(shape, capacity, s);
    ({ k: this.k, heap: this.heap } = instantiate(s.threads ? s.threads.module : s.module!, !!s.threads));
    if (s.threads) this.slot = s.threads.attach(this.heap.memory);
    const { numKvHeads: H, headDim: D } = shape;
    this.cs = codeStride(s.L);
    this.off = offloadedCapacity(capacity, s);
    const hashing = !s.topk, planes = hashing ? simhashPlanes(s, D, s.seed) : null;
    this.planes = planes ? this.block(planes.length * 4) : 0;
    if (planes) this.heap.f32.set(planes, this.planes >>> 2);
    if (this.k.samplingWeightEntries() !== WEIGHT_ENTRIES) throw new Error(`magicpig: the kernel's sampling-weight table has ${this.k.samplingWeightEntries()} entries, the layout counts ${WEIGHT_ENTRIES}`);
    this.weights = hashing ? this.block(WEIGHT_ENTRIES * 8) : 0;
    if (hashing) this.k.buildSamplingWeights(this.weights, s.K, s.L);
    this.ring = new StreamingCache(be, shape, capacity, staticWindow(s), false, 'f32');
    this.devicePlanes = planes && be.upload(planes);
    this.deviceMeans = hashing ? be.alloc(H * D) : null;
    this.keys = this.block(H * capacity * D * 4);
    this.values = this.block(H * capacity * D * 4);
    this.norms = hashing ? this.block(H * this.off * 4) : 0;
    this.codes = hashing ? this.block(H * this.off * this.cs * 2) : 0;
    this.means = hashing ? this.block(H * D * 4) : 0;
    if (hashing && s.tables) {
      this.order = this.block(H * s.L * this.off * 4);
      this.start = this.block(H * s.L * ((1 << s.K) + 1) * 4);
    }
  }

  bytes(): number {
    return this.hostBytes() + this.ring.bytes() + tensorBytes([this.devicePlanes, this.deviceMeans]);
  }

  hostBytes(): number {
    let n = 0;
    for (const b of this.blocks.values()) n += b;
    return n;
  }

  sampling(): KvSampling { return this.perStep; }

  async attend(out: DeviceTensor, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, rows: number, pastLen: number): Promise<void> {
    this.live();
    if (rows === 1) return this.decode(out, q, k, v, pastLen);
    const { numKvHeads: H, group: G, headDim: D } = this.shape;
    const [qh, kh, vh] = await Promise.all([this.be.read(q, 0, rows * H * G * D), this.be.read(k, 0, rows * H * D), this.be.read(v, 0, rows * H * D)]);
    await this.s.threads?.ready();
    this.store(kh, vh, rows, pastLen);
    this.stored = { k, v, rows, pastLen };
    this.be.write(out, this.exact(qh, rows, pastLen));
  }

  async append(k: DeviceTensor, v: DeviceTensor, rows: number, pastLen: number): Promise<void> {
    this.live();
    const s = this.stored, attended = !!s && s.k === k && s.v === v && s.rows === rows && s.pastLen === pastLen;
    if (!attended) {
      const n = rows * this.shape.numKvHeads * this.shape.headDim;
      const [kh, vh] = await Promise.all([this.be.read(k, 0, n), this.be.read(v, 0, n)]);
      this.store(kh, vh, rows, pastLen);
    }
    this.stored = null;
    this.ring.append(k, v, rows, pastLen);
    this.seen = pastLen + rows;
    const leaving = attended ? this.leaving : null;
    this.leaving = null;
    if (this.centered) {
      // Another session's caches may have joined the pool since attend().
      await this.s.threads?.ready();
      const to = offloadedRows(this.seen, this.s);
      if (leaving && leaving.row === this.hashed && to > this.hashed) this.keepLeaving(leaving.codes);
      await this.hashStored(this.hashed, to);
    }
  }

  grow(capacity: number, pastLen: number): void {
    this.live();
    if (capacity <= this.capacity) return;
    if (pastLen !== this.seen) throw new Error(`magicpig cache holds ${this.seen} positions, asked to grow keeping ${pastLen}`);
    checkStore(this.shape, capacity, this.s);
    const { numKvHeads: H, headDim: D } = this.shape, off = offloadedCapacity(capacity, this.s), cs = this.cs;
    // Per head: copy the first `rows` rows of `width` bytes from a slab of `from` rows to one of `to`.
    const regrow = (old: number, from: number, to: number, width: number, rows: number): number => {
      const t = this.block(H * to * width), u8 = new Uint8Array(this.heap.memory.buffer);
      for (let h = 0; h < H; h++) u8.copyWithin(t + h * to * width, old + h * from * width, old + h * from * width + rows * width);
      this.release(old);
      return t;
    };
    this.keys = regrow(this.keys, this.capacity, capacity, D * 4, pastLen);
    this.values = regrow(this.values, this.capacity, capacity, D * 4, pastLen);
    if (!this.s.topk) {
      this.norms = regrow(this.norms, this.off, off, 4, this.hashed);
      this.codes = regrow(this.codes, this.off, off, cs * 2, this.hashed);
      if (this.order) {
        // Rebuilt at the next decode step (their rows are `tabled` apart, not capacity).
        this.release(this.order);
        this.order = this.block(H * this.s.L * off * 4);
        this.tabled = 0;
      }
    }
    this.ring.grow(capacity, pastLen);
    this.capacity = capacity;
    this.off = off;
    this.stored = null;
    this.leaving = null;
  }

  free(): void {
    if (this.freed) return;
    for (const p of [...this.blocks.keys()]) this.release(p);
    this.ring.free();
    for (const t of [this.devicePlanes, this.deviceMeans, this.step]) if (t) this.be.free(t);
    if (this.slot >= 0) this.s.threads!.detach(this.slot);
    this.freed = true;
  }

  /** Threads a job may split over (1 without settings.threads). */
  private get shares(): number { return this.s.threads?.count ?? 1; }

  /** Runs a job over the KV heads on the offload threads, or here alone. */
  private job(op: Op, args: number[]): void {
    if (this.s.threads) { this.s.threads.run(this.slot, this.k, op, args); return; }
    this.single.set(args);
    runShare(this.k, op, this.single, 0, 1);
  }

  private live(): void {
    if (this.freed) throw new Error('magicpig cache used after free');
  }

  private block(bytes: number): number {
    const p = this.heap.alloc(bytes);
    this.blocks.set(p, bytes);
    return p;
  }

  private release(p: number): void {
    this.heap.release(p, this.blocks.get(p)!);
    this.blocks.delete(p);
  }

  /** Writes a chunk's keys and values ([rows][H][D]) at positions pastLen…. */
  private store(kh: Float32Array, vh: Float32Array, rows: number, pastLen: number): void {
    if (pastLen !== this.seen) throw new Error(`magicpig cache holds positions [0, ${this.seen}); a chunk at ${pastLen} does not follow them`);
    if (pastLen + rows > this.capacity) throw new RangeError(`magicpig: ${pastLen + rows} positions exceed the cache capacity ${this.capacity}`);
    const { numKvHeads: H, headDim: D } = this.shape, f32 = this.heap.f32;
    for (let r = 0; r < rows; r++) {
      for (let h = 0; h < H; h++) {
        const at = (h * this.capacity + pastLen + r) * D, from = (r * H + h) * D;
        f32.set(kh.subarray(from, from + D), (this.keys >>> 2) + at);
        f32.set(vh.subarray(from, from + D), (this.values >>> 2) + at);
      }
    }
  }

  /** Exact causal attention of the chunk over positions [0, pastLen + rows) (the full method's kernel). */
  private exact(qh: Float32Array, rows: number, pastLen: number): Float32Array {
    const { numKvHeads: H, group: G, headDim: D } = this.shape, n = rows * H * G * D, h = this.heap;
    const qp = h.alloc(n * 4), op = h.alloc(n * 4);
    // One scratch share per thread.
    const shareBytes = (this.k.attentionScratchFloats(TILE_ROWS * G, D) + this.k.kvDecodeScratchFloats(D, 0)) * 4;
    const sp = h.alloc(shareBytes * this.shares);
    try {
      h.f32.set(qh, qp >>> 2);
      this.job(Op.Attention, [op, qp, this.keys, this.values, rows, H * G, H, D, pastLen, 1 / Math.sqrt(D), this.capacity, sp, shareBytes, TILE_ROWS, 0, 0, 0]);
      return h.f32.slice(op >>> 2, (op >>> 2) + n);
    } finally {
      h.release(qp, n * 4); h.release(op, n * 4); h.release(sp, shareBytes * this.shares);
    }
  }

  /**
   * One decode row at position pastLen. On the main device: the static partial (o, log-sum-exp),
   * the queries' codes and, once k̄ is fixed, the codes of the key that leaves the local window at
   * this step's append; one readback brings them with q, k, v to the host, which stores k, v,
   * adds the sampled (or top-k) partial and writes the merged rows to out.
   */
  private async decode(out: DeviceTensor, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, pastLen: number): Promise<void> {
    const { numKvHeads: H, group: G, headDim: D } = this.shape, nq = H * G, { K, L, local } = this.s, be = this.be;
    const m = offloadedRows(pastLen, this.s), hashing = !this.s.topk, at = stepLayout(this.shape, hashing ? this.cs : 0);
    await this.s.threads?.ready();
    if (hashing && m > 0 && !this.centered) {
      this.center(m);
      await this.hashStored(0, m);
    }
    const st = this.step ??= be.alloc(at.words);
    this.ring.attend(st, q, k, v, 1, pastLen, true);
    if (hashing && m > 0) runSimhash(be, { x: q, n: nq, d: D, planes: this.devicePlanes!, K, L, codes: st, codesOffset: at.qCodes });
    if (hashing && this.centered) {
      // Position pastLen − local (≥ sinks once keys are offloaded) leaves the window at append; it is in the ring now.
      const w = this.ring.activeWindow, slots = w.sink + w.recent;
      runSimhash(be, { x: { tensor: this.ring.keyRing, stride: slots * D, offset: ringSlot(pastLen - local, w) * D }, n: H, d: D,
        center: { tensor: this.deviceMeans!, stride: D }, planes: this.devicePlanes!, K, L, codes: st, codesOffset: at.kCodes });
    }
    be.copy(st, at.q, q, 0, nq * D);
    be.copy(st, at.k, k, 0, H * D);
    be.copy(st, at.v, v, 0, H * D);
    const got = await be.read(st, 0, at.words);
    // Another session's caches may have joined the pool while this one waited.
    await this.s.threads?.ready();
    this.store(got.subarray(at.k, at.k + H * D), got.subarray(at.v, at.v + H * D), 1, pastLen);
    this.stored = { k, v, rows: 1, pastLen };
    this.leaving = hashing && this.centered ? { row: m, codes: codesOf(got.subarray(at.kCodes, at.k)).slice() } : null;
    be.write(out, this.s.topk ? this.topk(got, at, pastLen, this.s.topk) : this.sampled(got, at, pastLen));
  }

  /** The static partial of the step ⊕ the sampled partials of the offloaded keys (tables' rows, then scanned rows). */
  private sampled(got: Float32Array, at: StepLayout, pastLen: number): Float32Array {
    const { numKvHeads: H, group: G, headDim: D } = this.shape, { sinks, K, L } = this.s, cs = this.cs;
    const m = offloadedRows(pastLen, this.s), scale = 1 / Math.sqrt(D);
    const result = new Float32Array(H * G * D), h = this.heap, nq = H * G;
    let sampled = 0;
    // Per query of every KV head, two sampled partials: o [D], {max, Σ} and count.
    const qp = h.alloc(nq * D * 4), qc = h.alloc(nq * cs * 2), op = h.alloc(2 * nq * D * 4), st = h.alloc(2 * nq * 8), cp = h.alloc(2 * nq * 4);
    const shareBytes = this.k.magicpigScratchFloats(Math.max(1, m), G) * 4;
    const scratchBytes = Math.max(shareBytes, this.order ? this.k.lshTablesScratchFloats(K) * 4 : 0) * this.shares;
    const sp = h.alloc(scratchBytes);
    try {
      if (m > 0) {
        h.f32.set(got.subarray(at.q, at.q + nq * D), qp >>> 2);
        new Uint8Array(h.memory.buffer, qc, nq * cs * 2).set(new Uint8Array(got.buffer, got.byteOffset + at.qCodes * 4, nq * cs * 2));
        if (this.order && (this.tabled === 0 || m - this.tabled >= Math.max(TABLE_TAIL, this.tabled / 8))) this.buildTables(m, sp);
        const tabled = this.order ? this.tabled : 0;
        this.job(Op.Sampled, [op, st, cp, qp, qc, this.keys + sinks * D * 4, this.values + sinks * D * 4, this.norms, this.codes, this.means,
          m, G, D, cs, L, K, scale, this.weights, H, this.capacity, this.off, sp, shareBytes, tabled, this.order, this.start]);
      }
      const f32 = h.f32, counts = new Int32Array(h.memory.buffer, cp, 2 * nq);
      for (let qi = 0; qi < nq; qi++) {
        // The sampled partials {max, Σ, o} (f32 from the kernel; max −∞ when empty).
        const parts: Partial[] = [];
        for (const p of m > 0 ? [qi, nq + qi] : []) {
          parts.push({ max: f32[(st >>> 2) + 2 * p], sum: f32[(st >>> 2) + 2 * p + 1], o: f32.subarray((op >>> 2) + p * D, (op >>> 2) + (p + 1) * D) });
          sampled += counts[p];
        }
        mergeWithStatic(result, qi, D, got, at, parts);
      }
      this.countStep(sampled, m * nq);
      return result;
    } finally {
      h.release(qp, nq * D * 4); h.release(qc, nq * cs * 2); h.release(op, 2 * nq * D * 4); h.release(st, 2 * nq * 8); h.release(cp, 2 * nq * 4);
      h.release(sp, scratchBytes);
    }
  }

  /**
   * Exact TopK: per query, the static partial ⊕ the partial (float64, plain logits) over the k
   * offloaded keys of highest q·k, which is one softmax over both sets.
   */
  private topk(got: Float32Array, at: StepLayout, pastLen: number, choice: TopKChoice): Float32Array {
    const { numKvHeads: H, group: G, headDim: D } = this.shape, { sinks } = this.s, nq = H * G;
    const m = offloadedRows(pastLen, this.s), k = topkCount(choice, m), scale = 1 / Math.sqrt(D), f32 = this.heap.f32;
    const qh = got.subarray(at.q, at.q + nq * D), result = new Float32Array(nq * D), scores = new Float64Array(m);
    const logits = new Float64Array(k), o = new Float64Array(D);
    const dot = (qo: number, j: number, kvh: number) => {
      const ko = (this.keys >>> 2) + (kvh * this.capacity + j) * D;
      let s = 0;
      for (let d = 0; d < D; d++) s += qh[qo + d] * f32[ko + d];
      return s;
    };
    for (let kvh = 0; kvh < H; kvh++) {
      for (let g = 0; g < G; g++) {
        const qi = kvh * G + g, qo = qi * D;
        for (let i = 0; i < m; i++) scores[i] = dot(qo, sinks + i, kvh);
        const chosen = Array.from(topkIndices(scores, m, k), (i) => sinks + i);
        mergeWithStatic(result, qi, D, got, at, [{ ...this.exactPartial(kvh, qh, qo, chosen, scale, logits, o), o }]);
      }
    }
    this.countStep(k * nq, m * nq);
    return result;
  }

  private countStep(sampled: number, offloaded: number): void {
    this.counts.steps++;
    this.counts.sampled += sampled;
    this.counts.offloaded += offloaded;
    this.perStep.sampled.push(sampled);
    this.perStep.offloaded.push(offloaded);
  }

  /**
   * The exact softmax partial of KV head kvh over cache rows `positions` for the query at
   * q[qo, qo + d), in float64: returns max logit and Σ exp(logit − max), and sets o to the
   * correspondingly weighted sum of the stored values. `logits` is scratch (≥ positions.length).
   */
  private exactPartial(kvh: number, q: Float32Array, qo: number, positions: readonly number[], scale: number,
    logits: Float64Array, o: Float64Array): { max: number; sum: number } {
    const D = this.shape.headDim, f32 = this.heap.f32, n = positions.length;
    const kBase = (this.keys >>> 2) + kvh * this.capacity * D, vBase = (this.values >>> 2) + kvh * this.capacity * D;
    let max = -Infinity;
    for (let i = 0; i < n; i++) {
      const ko = kBase + positions[i] * D;
      let s = 0;
      for (let d = 0; d < D; d++) s += q[qo + d] * f32[ko + d];
      s *= scale;
      logits[i] = s;
      if (s > max) max = s;
    }
    o.fill(0, 0, D);
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const e = Math.exp(logits[i] - max), vo = vBase + positions[i] * D;
      sum += e;
      for (let d = 0; d < D; d++) o[d] += e * f32[vo + d];
    }
    return { max, sum };
  }

  /** Fixes k̄ per KV head as the mean of the m offloaded keys (which the caller then hashes). */
  private center(m: number): void {
    const { numKvHeads: H, headDim: D } = this.shape, f32 = this.heap.f32;
    for (let h = 0; h < H; h++) {
      const mean = new Float64Array(D);
      for (let r = 0; r < m; r++) {
        const ko = (this.keys >>> 2) + (h * this.capacity + this.s.sinks + r) * D;
        for (let d = 0; d < D; d++) mean[d] += f32[ko + d];
      }
      for (let d = 0; d < D; d++) f32[(this.means >>> 2) + h * D + d] = mean[d] / m;
    }
    this.be.write(this.deviceMeans!, this.heap.f32.slice(this.means >>> 2, (this.means >>> 2) + H * D));
    this.centered = true;
  }

  /** Stores offloaded row `hashed`'s codes as the main device computed them ([H][cs] u16) and its norms |k − k̄|. */
  private keepLeaving(codes: Uint16Array): void {
    const { numKvHeads: H } = this.shape, cs = this.cs, row = this.hashed, u16 = new Uint16Array(this.heap.memory.buffer);
    for (let h = 0; h < H; h++) u16.set(codes.subarray(h * cs, (h + 1) * cs), (this.codes >>> 1) + (h * this.off + row) * cs);
    this.storeNorms(row, row + 1);
    this.hashed = row + 1;
  }

  /** norms[h][r] = |k − k̄| of offloaded rows [from, to) of every head. */
  private storeNorms(from: number, to: number): void {
    const { numKvHeads: H, headDim: D } = this.shape, f32 = this.heap.f32;
    for (let h = 0; h < H; h++) {
      const mo = (this.means >>> 2) + h * D;
      for (let r = from; r < to; r++) {
        const ko = (this.keys >>> 2) + (h * this.capacity + this.s.sinks + r) * D;
        let ss = 0;
        for (let d = 0; d < D; d++) { const x = Math.fround(f32[ko + d] - f32[mo + d]); ss += x * x; }
        f32[(this.norms >>> 2) + h * this.off + r] = Math.sqrt(ss);
      }
    }
  }

  /**
   * Hashes stored offloaded rows [from, to) of every head, centered by k̄: on a GPU main device
   * there (the keys go up in chunks a storage binding holds, the codes come back), else here, on
   * the offload threads. The keys hashed at the first decode step (a whole prompt's) are most of it.
   */
  private async hashStored(from: number, to: number): Promise<void> {
    if (to <= from) return;
    if (this.be.kind !== 'gpu') { this.hash(from, to); return; }
    const { numKvHeads: H, headDim: D } = this.shape, { K, L, sinks } = this.s, cs = this.cs, be = this.be;
    const chunk = Math.max(1, Math.floor(DEVICE_HASH_BYTES / (4 * H * D)));
    for (let r0 = from; r0 < to; r0 += chunk) {
      const n = Math.min(chunk, to - r0), x = be.alloc(H * n * D), codes = be.alloc((H * n * cs) / 2);
      try {
        for (let h = 0; h < H; h++) {
          const at = (this.keys >>> 2) + (h * this.capacity + sinks + r0) * D;
          // A copy: with offload threads the store is shared memory, which a GPU queue does not take.
          be.write(x, this.heap.f32.slice(at, at + n * D), h * n * D);
          runSimhash(be, { x: { tensor: x, stride: D, offset: h * n * D }, n, d: D, center: { tensor: this.deviceMeans!, stride: 0, offset: h * D },
            planes: this.devicePlanes!, K, L, codes, codesOffset: (h * n * cs) / 2 });
        }
        const got = codesOf(await be.read(codes)), u16 = new Uint16Array(this.heap.memory.buffer);
        for (let h = 0; h < H; h++) u16.set(got.subarray(h * n * cs, (h + 1) * n * cs), (this.codes >>> 1) + (h * this.off + r0) * cs);
      } finally { be.free(x); be.free(codes); }
    }
    this.storeNorms(from, to);
    this.hashed = to;
  }

  /** Rebuilds every head's bucket tables over its first m offloaded rows (scratch: ≥ lshTablesScratchFloats). */
  private buildTables(m: number, scratch: number): void {
    const { numKvHeads: H } = this.shape, { K, L } = this.s, cs = this.cs;
    for (let h = 0; h < H; h++) {
      this.k.lshBuildTables(this.order + h * L * this.off * 4, this.start + h * L * ((1 << K) + 1) * 4,
        this.codes + h * this.off * cs * 2, m, cs, L, K, scratch);
    }
    this.tabled = m;
  }

  /** Hashes offloaded rows [from, to) of every head (centered by its k̄) and stores their norms. */
  private hash(from: number, to: number): void {
    if (to <= from) return;
    const { numKvHeads: H, headDim: D } = this.shape, { K, L, sinks } = this.s, cs = this.cs;
    const shareBytes = this.k.simhashScratchFloats(K, L, D) * 4, sp = this.heap.alloc(shareBytes * this.shares);
    try {
      this.job(Op.Hash, [this.codes + from * cs * 2, this.off * cs * 2, this.norms + from * 4, this.off * 4,
        this.keys + (sinks + from) * D * 4, this.capacity * D * 4, to - from, D, this.means, D * 4, this.planes, K, L, cs, H, sp, shareBytes]);
    } finally { this.heap.release(sp, shareBytes * this.shares); }
    this.hashed = to;
  }
}

/** Where a decode step's outputs sit in the step tensor (f32 elements): what the one readback brings. */
interface StepLayout { o: number; lse: number; q: number; qCodes: number; kCodes: number; k: number; v: number; words: number }

/** The step tensor: static o [nq][d], its log-sum-exp [nq], q [nq][d], the queries' codes [nq][cs] u16, the leaving key's [H][cs] u16, k and v [H][d]. */
function stepLayout(shape: KvGroupShape, cs: number): StepLayout {
  const { numKvHeads: H, group: G, headDim: D } = shape, nq = H * G;
  const lse = nq * D, q = lse + nq, qCodes = q + nq * D, kCodes = qCodes + (nq * cs) / 2, k = kCodes + (H * cs) / 2, v = k + H * D;
  return { o: 0, lse, q, qCodes, kCodes, k, v, words: v + H * D };
}

/** A partial softmax: max logit, Σ exp(logit − max), and the correspondingly weighted sum of values. */
interface Partial { max: number; sum: number; o: ArrayLike<number> }

/**
 * result[qi] = the static partial of query qi (normalized o and its log-sum-exp, from the step
 * tensor) merged with `parts` by log-sum-exp (an empty part has max −∞).
 */
function mergeWithStatic(result: Float32Array, qi: number, D: number, got: Float32Array, at: StepLayout, parts: readonly Partial[]): void {
  const lse = got[at.lse + qi], so = at.o + qi * D, ro = qi * D;
  let M = lse;
  for (const p of parts) M = Math.max(M, p.max);
  const a = Math.exp(lse - M), acc = new Float64Array(D);
  let l = a;
  for (let d = 0; d < D; d++) acc[d] = a * got[so + d];
  for (const p of parts) {
    if (p.max === -Infinity) continue;
    const b = Math.exp(p.max - M);
    l += b * p.sum;
    for (let d = 0; d < D; d++) acc[d] += b * p.o[d];
  }
  for (let d = 0; d < D; d++) result[ro + d] = acc[d] / l;
}

/** Offloaded rows once `n` positions are stored: those after the sinks and before the local window. */
function offloadedRows(n: number, s: MagicPigSettings): number {
  return Math.max(0, n - s.local - s.sinks);
}

export const magicpigMethod: KvMethod = {
  name: 'magicpig',
  home: 'main',
  layout(shape: KvGroupShape, capacity: number, settings: KvSettings): KvTensorSpec[] {
    return checkStore(shape, capacity, checkMagicPigSettings(settings.magicpig));
  },
  create(backend: Backend, shape: KvGroupShape, capacity: number, settings: KvSettings): KvGroupCache {
    return new MagicPigCache(backend, shape, capacity, checkMagicPigSettings(settings.magicpig, true));
  },
};
