// MagicPIG (Chen et al., ICLR 2025) as a KV method: a KV head's cache lives in host memory, a
// WebAssembly memory of the cache's own, and decode attends exactly only the static tokens (the
// first `sinks` positions, the `local` positions before the chunk, and the chunk's row) while the
// other ("offloaded") keys are sampled by SimHash: keys colliding with the query in ≥ 2 of L
// tables of K bits, with importance-corrected logits (src/kv/magicpig/reference.ts has the math).
//
// Chunks: a chunk of more than one row (prefill) attends exactly over every position, with the
// full method's WASM attention kernel on the host copy; MagicPIG's prefill is exact too. A chunk
// of one row (decode) is sampled: static partial softmax (exact, float64 on the host) ⊕ sampled
// partial (magicpigAttend, src/kv/magicpig/magicpig.as.ts), merged by log-sum-exp.
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
// Placement: home 'side'. Everything lives in host memory, so the group's backend only holds its
// q, k, v and output: in the split placement the CPU backend, which gets them in the layer's one
// q|k|v transfer; on a GPU-only placement the cache reads q, k, v back itself (attend and append
// return promises) and writes the output. The static tokens therefore sit on the host too: with
// no partial-softmax merge op on the Backend, keeping them on the GPU would need one more
// readback per step; they are sinks + local rows, small next to the offloaded ones.
//
// Layout (KvTensorSpec.host, one WebAssembly memory per cache): the hyperplanes [K·L][d]; K and V
// [numKvHeads][capacity][d] f32 (every position); norms |k − k̄| [numKvHeads][off] f32 and codes
// [numKvHeads][off][cs] u16 of the offloaded rows (off = capacity − sinks − local, cs = L rounded up
// to 8); k̄ [numKvHeads][d]; with tables, order [numKvHeads][L][off] i32 and bucket starts
// [numKvHeads][L][2^K + 1] i32. Kernel scratch (hashing, gathering, prefill attention) is not counted,
// like the coordinator's activation buffers.
//
// Threads: with settings.threads (src/kv/magicpig/threads.ts) the memory is shared and the decode
// step's sampled attention, the hashing (queries, keys leaving the window, the offloaded keys at
// centering) and the prefill's exact attention split the KV heads over the model's offload
// threads; the static partials and the merge stay on this thread.
import type { Backend, DeviceTensor } from '../../backend/contract.js';
import { WasmHeap } from '../../cpu/memory.js';
import { MAX_ARGS, Op, runShare } from '../../cpu/threads.js';
import { kernelMemory, type KernelExports } from '../../cpu/wasm.js';
import { layoutBytes, type KvGroupCache, type KvSampling, type KvGroupShape, type KvMethod, type KvSettings, type KvTensorSpec } from '../method.js';
import type { MagicPigExports } from './cpu.js';
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

type Kernels = KernelExports & MagicPigExports;

/** Offloaded rows a cache of `capacity` positions can hold. */
function offloadedCapacity(capacity: number, s: MagicPigSettings): number {
  return Math.max(0, capacity - s.sinks - s.local);
}

function storeSpecs(shape: KvGroupShape, capacity: number, s: MagicPigSettings): KvTensorSpec[] {
  const { numKvHeads: H, headDim: D } = shape, off = offloadedCapacity(capacity, s), cs = codeStride(s.L);
  // Exact TopK hashes nothing: its store is the keys and values.
  if (s.topk) return [{ name: 'K (host)', words: H * capacity * D, host: true }, { name: 'V (host)', words: H * capacity * D, host: true }];
  return [
    { name: 'SimHash planes', words: s.K * s.L * D, host: true },
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
  const specs = storeSpecs(shape, capacity, s), bytes = layoutBytes(specs);
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

  constructor(private readonly be: Backend, private readonly shape: KvGroupShape, private capacity: number,
    private readonly s: MagicPigSettings) {
    checkStore(shape, capacity, s);
    ({ k: this.k, heap: this.heap } = instantiate(s.threads ? s.threads.module : s.module!, !!s.threads));
    if (s.threads) this.slot = s.threads.attach(this.heap.memory);
    const { numKvHeads: H, headDim: D } = shape;
    this.cs = codeStride(s.L);
    this.off = offloadedCapacity(capacity, s);
    const hashing = !s.topk;
    this.planes = hashing ? this.block(s.K * s.L * D * 4) : 0;
    if (hashing) this.heap.f32.set(simhashPlanes(s, D, s.seed), this.planes >>> 2);
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
    let n = 0;
    for (const b of this.blocks.values()) n += b;
    return n;
  }

  hostBytes(): number { return this.bytes(); }

  sampling(): KvSampling { return this.perStep; }

  async attend(out: DeviceTensor, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, rows: number, pastLen: number): Promise<void> {
    this.live();
    const { numKvHeads: H, group: G, headDim: D } = this.shape;
    const [qh, kh, vh] = await Promise.all([this.be.read(q, 0, rows * H * G * D), this.be.read(k, 0, rows * H * D), this.be.read(v, 0, rows * H * D)]);
    await this.s.threads?.ready();
    this.store(kh, vh, rows, pastLen);
    this.stored = { k, v, rows, pastLen };
    this.be.write(out, rows > 1 ? this.exact(qh, rows, pastLen) : this.sampled(qh, pastLen));
  }

  async append(k: DeviceTensor, v: DeviceTensor, rows: number, pastLen: number): Promise<void> {
    this.live();
    const s = this.stored;
    if (!(s && s.k === k && s.v === v && s.rows === rows && s.pastLen === pastLen)) {
      const n = rows * this.shape.numKvHeads * this.shape.headDim;
      const [kh, vh] = await Promise.all([this.be.read(k, 0, n), this.be.read(v, 0, n)]);
      this.store(kh, vh, rows, pastLen);
    }
    this.stored = null;
    this.seen = pastLen + rows;
    if (this.centered) {
      // Another session's caches may have joined the pool since attend().
      await this.s.threads?.ready();
      this.hash(this.hashed, offloadedRows(this.seen, this.s));
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
    this.capacity = capacity;
    this.off = off;
    this.stored = null;
  }

  free(): void {
    if (this.freed) return;
    for (const p of [...this.blocks.keys()]) this.release(p);
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

  /** One decode row at position pastLen: static part exact ⊕ sampled offloaded part. */
  private sampled(qh: Float32Array, pastLen: number): Float32Array {
    if (this.s.topk) return this.topk(qh, pastLen, this.s.topk);
    const { numKvHeads: H, group: G, headDim: D } = this.shape, { sinks, K, L } = this.s, cs = this.cs;
    const m = offloadedRows(pastLen, this.s), scale = 1 / Math.sqrt(D);
    if (m > 0 && !this.centered) this.center(m);
    const result = new Float32Array(H * G * D), sampledBefore = this.counts.sampled;
    const h = this.heap, nq = H * G;
    // Per query of every KV head, two sampled partials (tables' rows, then scanned rows): o [D], {max, Σ} and count.
    const qp = h.alloc(nq * D * 4), qc = h.alloc(nq * cs * 2), op = h.alloc(2 * nq * D * 4), st = h.alloc(2 * nq * 8), cp = h.alloc(2 * nq * 4);
    const shareBytes = this.k.magicpigScratchFloats(Math.max(1, m), G) * 4, hashBytes = this.k.simhashScratchFloats(K, L, D) * 4;
    const scratchBytes = Math.max(shareBytes, hashBytes, this.order ? this.k.lshTablesScratchFloats(K) * 4 : 0) * this.shares;
    const sp = h.alloc(scratchBytes);
    try {
      h.f32.set(qh, qp >>> 2);
      if (m > 0) {
        if (this.order && (this.tabled === 0 || m - this.tabled >= Math.max(TABLE_TAIL, this.tabled / 8))) this.buildTables(m, sp);
        // The queries' codes, a GQA group per KV head.
        this.job(Op.Hash, [qc, G * cs * 2, 0, 0, qp, G * D * 4, G, D, 0, 0, this.planes, K, L, cs, H, sp, hashBytes]);
        const tabled = this.order ? this.tabled : 0;
        this.job(Op.Sampled, [op, st, cp, qp, qc, this.keys + sinks * D * 4, this.values + sinks * D * 4, this.norms, this.codes, this.means,
          m, G, D, cs, L, K, scale, 1, H, this.capacity, this.off, sp, shareBytes, tabled, this.order, this.start]);
      }
      const statics = staticPositions(pastLen, this.s), f32 = h.f32, counts = new Int32Array(h.memory.buffer, cp, 2 * nq);
      const logits = new Float64Array(statics.length), o = new Float64Array(D);
      for (let kvh = 0; kvh < H; kvh++) {
        for (let g = 0; g < G; g++) {
          const qi = kvh * G + g;
          // Static partial in float64.
          const { max: ms, sum: ls } = this.exactPartial(kvh, f32, (qp >>> 2) + qi * D, statics, scale, logits, o);
          // ⊕ the two sampled partials {max, Σ, o} (f32 from the kernel; max −∞ when empty).
          const parts = m > 0 ? [qi, nq + qi] : [];
          let M = ms;
          for (const p of parts) M = Math.max(M, f32[(st >>> 2) + 2 * p]);
          const a = Math.exp(ms - M);
          let l = a * ls;
          const at = qi * D;
          for (let d = 0; d < D; d++) result[at + d] = a * o[d];
          for (const p of parts) {
            const mp = f32[(st >>> 2) + 2 * p];
            if (mp === -Infinity) continue;
            const b = Math.exp(mp - M), oc = (op >>> 2) + p * D;
            l += b * f32[(st >>> 2) + 2 * p + 1];
            for (let d = 0; d < D; d++) result[at + d] += b * f32[oc + d];
            this.counts.sampled += counts[p];
          }
          for (let d = 0; d < D; d++) result[at + d] /= l;
        }
      }
      this.counts.steps++;
      this.counts.offloaded += m * nq;
      this.perStep.sampled.push(this.counts.sampled - sampledBefore);
      this.perStep.offloaded.push(m * nq);
      return result;
    } finally {
      h.release(qp, nq * D * 4); h.release(qc, nq * cs * 2); h.release(op, 2 * nq * D * 4); h.release(st, 2 * nq * 8); h.release(cp, 2 * nq * 4);
      h.release(sp, scratchBytes);
    }
  }

  /**
   * One decode row at position pastLen with exact TopK: per query, one softmax (float64, plain
   * logits) over the static tokens and the k offloaded keys of highest q·k, which is the static
   * partial ⊕ the top-k partial merged by log-sum-exp.
   */
  private topk(qh: Float32Array, pastLen: number, choice: TopKChoice): Float32Array {
    const { numKvHeads: H, group: G, headDim: D } = this.shape, { sinks } = this.s;
    const m = offloadedRows(pastLen, this.s), k = topkCount(choice, m), scale = 1 / Math.sqrt(D), f32 = this.heap.f32;
    const statics = staticPositions(pastLen, this.s), result = new Float32Array(H * G * D), scores = new Float64Array(m);
    const logits = new Float64Array(statics.length + k), o = new Float64Array(D);
    const dot = (qo: number, j: number, kvh: number) => {
      const ko = (this.keys >>> 2) + (kvh * this.capacity + j) * D;
      let s = 0;
      for (let d = 0; d < D; d++) s += qh[qo + d] * f32[ko + d];
      return s;
    };
    for (let kvh = 0; kvh < H; kvh++) {
      for (let g = 0; g < G; g++) {
        const qo = (kvh * G + g) * D;
        for (let i = 0; i < m; i++) scores[i] = dot(qo, sinks + i, kvh);
        const attended = [...statics, ...Array.from(topkIndices(scores, m, k), (i) => sinks + i)];
        const { sum: l } = this.exactPartial(kvh, qh, qo, attended, scale, logits, o);
        for (let d = 0; d < D; d++) result[qo + d] = o[d] / l;
      }
    }
    this.counts.steps++;
    this.counts.sampled += k * H * G;
    this.counts.offloaded += m * H * G;
    this.perStep.sampled.push(k * H * G);
    this.perStep.offloaded.push(m * H * G);
    return result;
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

  /** Fixes k̄ per KV head as the mean of the m offloaded keys, and hashes them. */
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
    this.centered = true;
    this.hash(0, m);
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

/** A decode row's static positions: the sinks, then the local window before the row, then the row itself. */
function staticPositions(pastLen: number, s: MagicPigSettings): number[] {
  const statics: number[] = [];
  for (let j = 0; j < Math.min(s.sinks, pastLen + 1); j++) statics.push(j);
  for (let j = Math.max(s.sinks, pastLen - s.local); j <= pastLen; j++) statics.push(j);
  return statics;
}

/** Offloaded rows once `n` positions are stored: those after the sinks and before the local window. */
function offloadedRows(n: number, s: MagicPigSettings): number {
  return Math.max(0, n - s.local - s.sinks);
}

export const magicpigMethod: KvMethod = {
  name: 'magicpig',
  home: 'side',
  layout(shape: KvGroupShape, capacity: number, settings: KvSettings): KvTensorSpec[] {
    return checkStore(shape, capacity, checkMagicPigSettings(settings.magicpig));
  },
  create(backend: Backend, shape: KvGroupShape, capacity: number, settings: KvSettings): KvGroupCache {
    return new MagicPigCache(backend, shape, capacity, checkMagicPigSettings(settings.magicpig, true));
  },
};
