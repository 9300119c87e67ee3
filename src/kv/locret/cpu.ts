// Retaining-head scores on the CPU: the host side of src/kv/locret/locret.as.ts. A LocretScorerCpu holds
// every layer's fc1/fc2 in a kernel instance's WebAssembly memory (its own, or one lent by a
// backend) and scores tokens from their pre-RoPE q, k, v rows as the model's projections lay them
// out ([rows][heads·hd] and [rows][kvHeads·hd], or any row stride).
import { WasmHeap } from '../../cpu/memory.js';
import { instantiateKernels, type KernelExports } from '../../cpu/wasm.js';
import type { RetainingHeadShape, RetainingHeads } from './retaining-heads.js';

/** The exports of src/kv/locret/locret.as.ts (byte addresses into the kernel memory). */
interface LocretExports {
  locretScratchFloats(hidden: number): number;
  locretScores(scores: number, q: number, qStride: number, k: number, kStride: number, v: number, vStride: number,
    n: number, qd: number, kvd: number, fc1: number, hidden: number, fc2: number, outDim: number, scratch: number): void;
}

/** One batch of tokens to score: q [n][≥qd] (row stride qStride, default qd), k and v likewise with kvd. */
export interface ScoreInputs {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  n: number;
  qStride?: number;
  kStride?: number;
  vStride?: number;
}

export class LocretScorerCpu {
  private readonly weights: Array<{ fc1: number; fc2: number }>;
  private freed = false;

  private constructor(private readonly k: LocretExports, readonly heap: WasmHeap, readonly shape: RetainingHeadShape,
    /** Query and KV row widths: inDim = qd + 2·kvd. */ readonly qd: number, readonly kvd: number, heads: RetainingHeads) {
    this.weights = heads.layers.map((p) => {
      const fc1 = heap.alloc(p.fc1.byteLength), fc2 = heap.alloc(p.fc2.byteLength);
      heap.f32.set(p.fc1, fc1 >>> 2);
      heap.f32.set(p.fc2, fc2 >>> 2);
      return { fc1, fc2 };
    });
  }

  /**
   * The heads of a model with `numHeads`·headDim query and `numKvHeads`·headDim key/value widths. Runs
   * in a kernel instance of its own unless `kernels` lends one (its heap then holds the weights).
   */
  static async create(heads: RetainingHeads, dims: { numHeads: number; numKvHeads: number; headDim: number },
    kernels?: { kernels: KernelExports; heap: WasmHeap }): Promise<LocretScorerCpu> {
    const first = heads.layers[0];
    if (!first) throw new RangeError('Locret scorer: no retaining-head layers');
    const qd = dims.numHeads * dims.headDim, kvd = dims.numKvHeads * dims.headDim;
    heads.layers.forEach((p, l) => {
      if (p.inDim !== qd + 2 * kvd || p.outDim !== dims.numKvHeads || p.hidden !== first.hidden) {
        throw new RangeError(`Locret scorer: layer ${l} is ${p.inDim} → ${p.hidden} → ${p.outDim}, the model needs ${qd + 2 * kvd} → ${first.hidden} → ${dims.numKvHeads}`);
      }
      if (p.fc1.length !== p.hidden * p.inDim || p.fc2.length !== p.outDim * p.hidden) throw new RangeError(`Locret scorer: layer ${l} weights do not match its shape`);
    });
    let lent = kernels;
    if (!lent) {
      const { kernels: k, memory } = await instantiateKernels();
      lent = { kernels: k, heap: new WasmHeap(memory, k.heapBase()) };
    }
    return new LocretScorerCpu(lent.kernels as unknown as LocretExports, lent.heap, { inDim: first.inDim, hidden: first.hidden, outDim: first.outDim }, qd, kvd, heads);
  }

  get layers(): number { return this.weights.length; }

  /** Scores [n][kvHeads] of layer `layer`'s retaining head. */
  scores(layer: number, x: ScoreInputs): Float32Array {
    if (this.freed) throw new Error('Locret scorer used after free');
    if (!(Number.isInteger(layer) && layer >= 0 && layer < this.weights.length)) throw new RangeError(`Locret scorer: layer ${layer} is not in [0, ${this.weights.length})`);
    const { n } = x, qd = this.qd, kvd = this.kvd, qs = x.qStride ?? qd, ks = x.kStride ?? kvd, vs = x.vStride ?? kvd;
    if (!(Number.isInteger(n) && n >= 0)) throw new RangeError(`Locret scorer: token count must be a non-negative integer (got ${n})`);
    if (n === 0) return new Float32Array(0);
    for (const [name, a, stride, width] of [['q', x.q, qs, qd], ['k', x.k, ks, kvd], ['v', x.v, vs, kvd]] as const) {
      if (!(Number.isInteger(stride) && stride >= width)) throw new RangeError(`Locret scorer: ${name} row stride ${stride} must be an integer ≥ ${width}`);
      const need = (n - 1) * stride + width;
      if (a.length < need) throw new RangeError(`Locret scorer: ${name} has ${a.length} values, ${n} rows of stride ${stride} need ${need}`);
    }
    const h = this.heap, { hidden, outDim } = this.shape;
    const sizes = [((n - 1) * qs + qd) * 4, ((n - 1) * ks + kvd) * 4, ((n - 1) * vs + kvd) * 4, n * outDim * 4, this.k.locretScratchFloats(hidden) * 4];
    const [qp, kp, vp, out, scratch] = sizes.map((b) => h.alloc(b));
    try {
      h.f32.set(x.q.subarray(0, sizes[0] / 4), qp >>> 2);
      h.f32.set(x.k.subarray(0, sizes[1] / 4), kp >>> 2);
      h.f32.set(x.v.subarray(0, sizes[2] / 4), vp >>> 2);
      const w = this.weights[layer];
      this.k.locretScores(out, qp, qs, kp, ks, vp, vs, n, qd, kvd, w.fc1, hidden, w.fc2, outDim, scratch);
      return new Float32Array(h.memory.buffer, out, n * outDim).slice();
    } finally {
      [qp, kp, vp, out, scratch].forEach((p, i) => h.release(p, sizes[i]));
    }
  }

  /** Frees the weights' blocks. */
  free(): void {
    if (this.freed) return;
    this.freed = true;
    for (const w of this.weights) {
      this.heap.release(w.fc1, this.shape.hidden * this.shape.inDim * 4);
      this.heap.release(w.fc2, this.shape.outDim * this.shape.hidden * 4);
    }
  }
}
