// MagicPIG on the CPU: the host side of src/kv/magicpig/magicpig.as.ts. A MagicPigCpu holds the hyperplanes
// in a kernel instance's WebAssembly memory; a MagicPigHead is one offloaded KV head: its keys,
// values, centered-key norms and SimHash codes, appended in rows, attended by a GQA group of queries.
// Single-threaded: the KV method (method.ts) is what splits heads over threads.
//
// Memory layout of a head (blocks of the kernel memory, `capacity` rows each):
//   keys, values [capacity][d] f32 (keys as given, not centered); norms [capacity] f32 = |k − k̄|;
//   codes [capacity][cs] u16 with cs = codeStride(L) (table ℓ in column ℓ, columns ≥ L zero);
//   with bucket tables: order [L][capacity] i32 and start [L][2^K + 1] i32 (src/kv/magicpig/magicpig.as.ts),
//   rebuilt at the first attend after an append (MagicPIG builds them once, after prefill).
// The key mean k̄ is fixed by setMean before the first append (MagicPIG: the mean of the prefill's
// offloaded keys); codes and norms are of k − k̄.
import { WasmHeap } from '../../cpu/memory.js';
import { instantiateKernels, type KernelExports } from '../../cpu/wasm.js';
import { checkLshParams, codeStride, type LshParams } from './params.js';

/** The exports of src/kv/magicpig/magicpig.as.ts (byte addresses into the kernel memory). */
export interface MagicPigExports {
  simhashScratchFloats(K: number, L: number, d: number): number;
  simhashCodes(codes: number, norms: number, x: number, n: number, d: number, stride: number, center: number,
    planes: number, K: number, L: number, cs: number, scratch: number): void;
  simhashRows(codes: number, x: number, xStride: number, center: number, centerStride: number, centered: number,
    n: number, d: number, planes: number, K: number, L: number, pairs: number, scratch: number): void;
  magicpigScratchFloats(n: number, group: number): number;
  magicpigAttend(out: number, stats: number, counts: number, q: number, qCodes: number, keys: number, values: number,
    kNorms: number, kCodes: number, mean: number, n: number, group: number, d: number, cs: number, L: number, K: number,
    scale: number, weights: number, order: number, start: number, scratch: number): void;
  samplingWeightEntries(): number;
  buildSamplingWeights(table: number, K: number, L: number): void;
  tabledLogWeight(table: number, cosTheta: number, K: number, L: number): number;
  lshTablesScratchFloats(K: number): number;
  lshBuildTables(order: number, start: number, codes: number, n: number, cs: number, L: number, K: number, scratch: number): void;
}

/** One query's sampled partial softmax (see reference.ts): o is unnormalised, Σ exp(s − max)·v. */
export interface SampledResult {
  /** Per query of the group. */
  max: Float32Array;
  sumExp: Float32Array;
  /** [group][d]. */
  o: Float32Array;
  /** Keys sampled per query. */
  counts: Int32Array;
  /** The sampled key indices per query (only when asked for): ascending with the scan, in bucket order with tables. */
  sampled?: Int32Array[];
}

export interface AttendOptions {
  /** Queries [group][d]. */
  q: Float32Array;
  group: number;
  /** Logit scale (1/√d usually). */
  scale: number;
  /** The queries' codes [group][cs] (as the main device computed them); default: hashed here. */
  qCodes?: Uint16Array;
  /** false: sampled keys keep exact logits (attention restricted to the sampled set). Default true. */
  correction?: boolean;
  /** Also return the sampled index lists. */
  withSampled?: boolean;
}

function positiveInt(n: number, what: string): void {
  if (!(Number.isInteger(n) && n > 0)) throw new RangeError(`MagicPIG ${what} must be a positive integer (got ${n})`);
}

export class MagicPigCpu {
  readonly K: number;
  readonly L: number;
  readonly d: number;
  /** u16 codes per row. */
  readonly cs: number;
  private readonly planes: number;
  /** The sampling-correction table for K, L (buildSamplingWeights). */
  readonly weights: number;
  private scratch = 0;
  private scratchBytes = 0;

  private constructor(private readonly k: MagicPigExports, readonly heap: WasmHeap, p: LshParams, d: number, planes: Float32Array) {
    this.K = p.K; this.L = p.L; this.d = d; this.cs = codeStride(p.L);
    this.planes = heap.alloc(planes.byteLength);
    heap.f32.set(planes, this.planes >>> 2);
    this.weights = heap.alloc(k.samplingWeightEntries() * 8);
    k.buildSamplingWeights(this.weights, p.K, p.L);
  }

  /**
   * planes: K·L hyperplanes of d values as rows ([K·L][d], row ℓK+b is table ℓ's bit b). Runs in a
   * kernel instance of its own unless `kernels` lends one (its heap then allocates the blocks).
   */
  static async create(p: LshParams & { d: number; planes: Float32Array; kernels?: { kernels: KernelExports; heap: WasmHeap } }): Promise<MagicPigCpu> {
    checkLshParams(p);
    positiveInt(p.d, 'head dim d');
    if (p.planes.length !== p.K * p.L * p.d) {
      throw new RangeError(`MagicPIG planes: need K·L·d = ${p.K * p.L * p.d} values, got ${p.planes.length}`);
    }
    let lent = p.kernels;
    if (!lent) {
      const { kernels, memory } = await instantiateKernels();
      lent = { kernels, heap: new WasmHeap(memory, kernels.heapBase()) };
    }
    return new MagicPigCpu(lent.kernels as unknown as MagicPigExports, lent.heap, p, p.d, p.planes);
  }

  /** A scratch block of at least `floats` floats (kept and grown). */
  private scratchFor(floats: number): number {
    const bytes = floats * 4;
    if (bytes > this.scratchBytes) {
      if (this.scratchBytes) this.heap.release(this.scratch, this.scratchBytes);
      this.scratch = this.heap.alloc(bytes);
      this.scratchBytes = bytes;
    }
    return this.scratch;
  }

  /** Hashes n rows at byte address x into codes (and norms when ≠ 0); internal. */
  hashAt(codes: number, norms: number, x: number, n: number, center: number): void {
    const scratch = this.scratchFor(this.k.simhashScratchFloats(this.K, this.L, this.d));
    this.k.simhashCodes(codes, norms, x, n, this.d, this.d, center, this.planes, this.K, this.L, this.cs, scratch);
  }

  /** Codes [n][cs] of n rows of x ([n][d]), centered by `center` when given; norms of the centered rows. */
  codes(x: Float32Array, n: number, center?: Float32Array): { codes: Uint16Array; norms: Float32Array } {
    positiveInt(n, 'row count');
    if (x.length < n * this.d) throw new RangeError(`MagicPIG codes: ${n} rows of ${this.d} need ${n * this.d} values, got ${x.length}`);
    if (center && center.length !== this.d) throw new RangeError(`MagicPIG codes: center has ${center.length} values, head dim is ${this.d}`);
    const h = this.heap;
    const xp = h.alloc(n * this.d * 4), cp = center ? h.alloc(this.d * 4) : 0;
    const codes = h.alloc(n * this.cs * 2), norms = h.alloc(n * 4);
    try {
      h.f32.set(x.subarray(0, n * this.d), xp >>> 2);
      if (center) h.f32.set(center, cp >>> 2);
      this.hashAt(codes, norms, xp, n, cp);
      const buf = h.memory.buffer;
      return { codes: new Uint16Array(buf, codes, n * this.cs).slice(), norms: new Float32Array(buf, norms, n).slice() };
    } finally {
      h.release(xp, n * this.d * 4);
      if (cp) h.release(cp, this.d * 4);
      h.release(codes, n * this.cs * 2);
      h.release(norms, n * 4);
    }
  }

  /**
   * An empty offloaded KV head of `capacity` rows. tables: find collisions through bucket tables
   * (cost ∝ the query's buckets; 4·L bytes more per row) instead of scanning every key's codes.
   */
  createHead(capacity: number, options: { tables?: boolean } = {}): MagicPigHead {
    positiveInt(capacity, 'head capacity');
    return new MagicPigHead(this, this.k, capacity, options.tables ?? false);
  }

  /** The shared scratch block; internal (MagicPigHead). */
  scratchFloats(floats: number): number { return this.scratchFor(floats); }
}

export class MagicPigHead {
  /** Rows appended so far. */
  length = 0;
  private readonly keys: number;
  private readonly values: number;
  private readonly norms: number;
  private readonly codesPtr: number;
  private readonly mean: number;
  private readonly order: number;
  private readonly start: number;
  /** Rows the tables cover (they are rebuilt when length has moved on). */
  private tabled = 0;
  private meanSet = false;
  private freed = false;

  constructor(private readonly owner: MagicPigCpu, private readonly k: MagicPigExports, readonly capacity: number, readonly tables: boolean) {
    const h = owner.heap, d = owner.d;
    this.keys = h.alloc(capacity * d * 4);
    this.values = h.alloc(capacity * d * 4);
    this.norms = h.alloc(capacity * 4);
    this.codesPtr = h.alloc(capacity * owner.cs * 2);
    this.mean = h.alloc(d * 4);
    this.order = tables ? h.alloc(this.orderBytes) : 0;
    this.start = tables ? h.alloc(this.startBytes) : 0;
  }

  private get orderBytes(): number { return this.owner.L * this.capacity * 4; }
  private get startBytes(): number { return this.owner.L * ((1 << this.owner.K) + 1) * 4; }

  /** Bytes this head holds in WebAssembly memory (keys, values, norms, codes, mean, tables). */
  get bytes(): number {
    const { d, cs } = this.owner;
    return this.capacity * (2 * d * 4 + 4 + cs * 2) + d * 4 + (this.tables ? this.orderBytes + this.startBytes : 0);
  }

  private live(): void {
    if (this.freed) throw new Error('MagicPIG head used after free');
  }

  /** Sets k̄ (d values) before the first append. */
  setMean(mean: Float32Array): void {
    this.live();
    if (mean.length !== this.owner.d) throw new RangeError(`MagicPIG key mean has ${mean.length} values, head dim is ${this.owner.d}`);
    if (this.length > 0) throw new Error('MagicPIG key mean must be set before the first append (the stored codes are of centered keys)');
    this.owner.heap.f32.set(mean, this.mean >>> 2);
    this.meanSet = true;
  }

  /** Appends n rows of keys and values ([n][d]); hashes k − k̄ and stores |k − k̄|. */
  append(keys: Float32Array, values: Float32Array, n: number): void {
    this.live();
    const { d, cs } = this.owner;
    positiveInt(n, 'append row count');
    if (!this.meanSet) throw new Error('MagicPIG head: setMean before append (keys are hashed centered)');
    if (keys.length < n * d || values.length < n * d) throw new RangeError(`MagicPIG append: ${n} rows of ${d} need ${n * d} keys and values`);
    if (this.length + n > this.capacity) {
      throw new RangeError(`MagicPIG head capacity ${this.capacity} exceeded (${this.length} rows + ${n})`);
    }
    const f32 = this.owner.heap.f32;
    f32.set(keys.subarray(0, n * d), (this.keys >>> 2) + this.length * d);
    f32.set(values.subarray(0, n * d), (this.values >>> 2) + this.length * d);
    this.owner.hashAt(this.codesPtr + this.length * cs * 2, this.norms + this.length * 4, this.keys + this.length * d * 4, n, this.mean);
    this.length += n;
  }

  /** Copies of the stored codes [length][cs] and centered norms [length]. */
  readCodes(): { codes: Uint16Array; norms: Float32Array } {
    this.live();
    const buf = this.owner.heap.memory.buffer;
    return {
      codes: new Uint16Array(buf, this.codesPtr, this.length * this.owner.cs).slice(),
      norms: new Float32Array(buf, this.norms, this.length).slice(),
    };
  }

  /** The sampled part of attention for a GQA group of queries (see SampledResult). */
  attend(opt: AttendOptions): SampledResult {
    this.live();
    const { d, cs, K, L } = this.owner;
    const g = opt.group, n = this.length;
    positiveInt(g, 'query group size');
    if (opt.q.length !== g * d) throw new RangeError(`MagicPIG attend: q has ${opt.q.length} values, group ${g} × head dim ${d} needs ${g * d}`);
    if (opt.qCodes && opt.qCodes.length !== g * cs) throw new RangeError(`MagicPIG attend: qCodes has ${opt.qCodes.length} values, group ${g} × ${cs} needed`);
    if (!Number.isFinite(opt.scale)) throw new RangeError(`MagicPIG attend: scale must be finite (got ${opt.scale})`);
    const h = this.owner.heap;
    const qp = h.alloc(g * d * 4), qc = h.alloc(g * cs * 2), out = h.alloc(g * d * 4), stats = h.alloc(g * 8), counts = h.alloc(g * 4);
    try {
      h.f32.set(opt.q, qp >>> 2);
      if (opt.qCodes) new Uint16Array(h.memory.buffer, qc, g * cs).set(opt.qCodes);
      else this.owner.hashAt(qc, 0, qp, g, 0);
      if (this.tables && this.tabled !== n) {
        // The order rows are n apart (the kernels index order[ℓ][i] as ℓ·n + i).
        this.k.lshBuildTables(this.order, this.start, this.codesPtr, n, cs, L, K, this.owner.scratchFloats(this.k.lshTablesScratchFloats(K)));
        this.tabled = n;
      }
      const scratch = this.owner.scratchFloats(this.k.magicpigScratchFloats(Math.max(1, n), g));
      this.k.magicpigAttend(out, stats, counts, qp, qc, this.keys, this.values, this.norms, this.codesPtr, this.mean,
        n, g, d, cs, L, K, opt.scale, opt.correction === false ? 0 : this.owner.weights, this.tables && n > 0 ? this.order : 0, this.start, scratch);
      const buf = h.memory.buffer;
      const st = new Float32Array(buf, stats, 2 * g);
      const res: SampledResult = {
        max: Float32Array.from({ length: g }, (_, i) => st[2 * i]),
        sumExp: Float32Array.from({ length: g }, (_, i) => st[2 * i + 1]),
        o: new Float32Array(buf, out, g * d).slice(),
        counts: new Int32Array(buf, counts, g).slice(),
      };
      if (opt.withSampled) {
        res.sampled = Array.from({ length: g }, (_, i) => new Int32Array(buf, scratch + i * n * 4, res.counts[i]).slice());
      }
      return res;
    } finally {
      h.release(qp, g * d * 4); h.release(qc, g * cs * 2); h.release(out, g * d * 4); h.release(stats, g * 8); h.release(counts, g * 4);
    }
  }

  /** Frees the head's blocks. */
  free(): void {
    if (this.freed) return;
    this.freed = true;
    const h = this.owner.heap, { d, cs } = this.owner;
    h.release(this.keys, this.capacity * d * 4);
    h.release(this.values, this.capacity * d * 4);
    h.release(this.norms, this.capacity * 4);
    h.release(this.codesPtr, this.capacity * cs * 2);
    h.release(this.mean, d * 4);
    if (this.tables) { h.release(this.order, this.orderBytes); h.release(this.start, this.startBytes); }
  }
}
