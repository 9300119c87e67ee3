// What a training model needs from a device: tensors (T) and the forward/backward pieces of the
// Llama block on them. The CPU implementation (WebAssembly arena, below) and the GPU one
// (src/gpu/train-kernels.ts) run the same TrainModel. Host data (token ids, positions, targets,
// gates) is passed as typed arrays; each device moves it where it needs it.
import type { Arena } from './arena.js';
import {
  attentionBackward, attentionForward, crossEntropy, linearBackward, linearForward, rmsnormBackward, rmsnormForward, rope,
  swigluBackward, swigluForward, type AttentionDims,
} from './ops.js';

export type { AttentionDims };

export interface TrainKernels<T> {
  /** A zeroed tensor of n floats. */
  alloc(n: number): T;
  /** Elements [offset, offset + n) of t, sharing its storage. */
  slice(t: T, offset: number, n: number): T;
  zero(t: T, n: number): void;
  /** Host copy of t's first n elements, after all recorded work. */
  read(t: T, n: number): Promise<Float32Array>;
  write(t: T, data: Float32Array): void;
  copy(dst: T, src: T, n: number): void;

  /** The sequence the next passes run on: token ids and their RoPE positions. */
  setSequence(ids: Int32Array, positions: Int32Array, invFreq: Float32Array): void;
  embedGather(x: T, embed: T, d: number): void;
  embedScatterAdd(dEmbed: T, dx: T, d: number): void;
  add(y: T, x: T, n: number): void;
  addBias(y: T, b: T, rows: number, n: number): void;
  linearForward(y: T, x: T, w: T, rows: number, inD: number, outD: number): void;
  linearBackward(dx: T | null, dw: T | null, dy: T, x: T, w: T, rows: number, inD: number, outD: number): void;
  rmsnormForward(y: T, rinv: T, x: T, g: T, rows: number, d: number, eps: number): void;
  rmsnormBackward(dx: T, dg: T | null, dy: T, x: T, rinv: T, g: T, rows: number, d: number): void;
  /** RoPE of the current sequence's positions, in place; inverse = the backward pass. */
  rope(x: T, rows: number, heads: number, hd: number, inverse: boolean): void;
  attentionForward(o: T, probs: T, q: T, k: T, v: T, dims: AttentionDims, window?: { sink: number; recent: number }): void;
  attentionBackward(dq: T, dk: T, dv: T, dO: T, probs: T, q: T, k: T, v: T, dims: AttentionDims): void;
  swigluForward(h: T, gate: T, up: T, n: number): void;
  swigluBackward(dgate: T, dup: T, dh: T, gate: T, up: T, n: number): void;
  /** o = α·full + (1 − α)·stream per KV head; alphas = the layer's gates. */
  gateMix(o: T, full: T, stream: T, alphas: Float32Array, dims: AttentionDims): void;
  /** dFull = α·dO, dStream = (1 − α)·dO, and gateGrads[kvh] += Σ dO·(full − stream) when given. */
  gateBackward(dFull: T, dStream: T, dO: T, full: T, stream: T, alphas: Float32Array, dims: AttentionDims, gateGrads: T | null): void;
  /** Weighted cross-entropy (see ops.ts); dlogits overwritten; the loss is added to loss[0]. */
  crossEntropy(dlogits: T, logits: T, targets: Int32Array, weights: Float32Array, rows: number, vocab: number, loss: T): void;
  /** dh = 2·w[r]·(h − ref) and loss[0] += Σ_r w[r]·|h[r] − ref[r]|² over rowWeights.length rows. */
  mse(dh: T, h: T, ref: T, rowWeights: Float32Array, cols: number, loss: T): void;
}

/** The CPU kernels: tensors are Float32Array views into the WebAssembly arena. */
export class CpuTrainKernels implements TrainKernels<Float32Array> {
  private readonly scratch: { wT: Float32Array; dyT: Float32Array; xT: Float32Array };
  private readonly att: Float32Array;
  private ids: Int32Array = new Int32Array(0);
  private positions: Int32Array = new Int32Array(0);
  private invFreq: Float32Array = new Float32Array(0);

  /** maxRows × maxDim bounds every linear layer; scratch for them and attention is taken from the arena now. */
  constructor(readonly ar: Arena, maxRows: number, maxDim: number, headDim: number) {
    this.scratch = { wT: ar.f32(maxDim * maxDim), dyT: ar.f32(maxRows * maxDim), xT: ar.f32(maxRows * maxDim) };
    this.att = ar.f32(ar.kernels.trainAttentionScratchFloats(maxRows, headDim));
  }

  /** Arena floats the constructor takes. */
  static scratchFloats(ar: { trainAttentionScratchFloats(T: number, hd: number): number }, maxRows: number, maxDim: number, headDim: number): number {
    return maxDim * maxDim + 2 * maxRows * maxDim + ar.trainAttentionScratchFloats(maxRows, headDim);
  }

  alloc(n: number): Float32Array { return this.ar.f32(n); }
  slice(t: Float32Array, offset: number, n: number): Float32Array { return t.subarray(offset, offset + n); }
  zero(t: Float32Array, n: number): void { t.fill(0, 0, n); }
  async read(t: Float32Array, n: number): Promise<Float32Array> { return t.slice(0, n); }
  write(t: Float32Array, data: Float32Array): void { t.set(data); }
  copy(dst: Float32Array, src: Float32Array, n: number): void { dst.set(src.subarray(0, n)); }

  setSequence(ids: Int32Array, positions: Int32Array, invFreq: Float32Array): void {
    this.ids = ids; this.positions = positions; this.invFreq = invFreq;
  }

  embedGather(x: Float32Array, embed: Float32Array, d: number): void {
    const ids = this.ids;
    for (let t = 0; t < ids.length; t++) x.set(embed.subarray(ids[t] * d, (ids[t] + 1) * d), t * d);
  }

  embedScatterAdd(dEmbed: Float32Array, dx: Float32Array, d: number): void {
    const ids = this.ids;
    for (let t = 0; t < ids.length; t++) {
      const base = ids[t] * d;
      for (let i = 0; i < d; i++) dEmbed[base + i] += dx[t * d + i];
    }
  }

  add(y: Float32Array, x: Float32Array, n: number): void { for (let i = 0; i < n; i++) y[i] += x[i]; }

  addBias(y: Float32Array, b: Float32Array, rows: number, n: number): void {
    for (let r = 0; r < rows; r++) for (let i = 0; i < n; i++) y[r * n + i] += b[i];
  }

  linearForward(y: Float32Array, x: Float32Array, w: Float32Array, rows: number, inD: number, outD: number): void {
    linearForward(this.ar, y, x, w, rows, inD, outD);
  }

  linearBackward(dx: Float32Array | null, dw: Float32Array | null, dy: Float32Array, x: Float32Array, w: Float32Array, rows: number, inD: number, outD: number): void {
    linearBackward(this.ar, dx, dw, dy, x, w, rows, inD, outD, this.scratch);
  }

  rmsnormForward(y: Float32Array, rinv: Float32Array, x: Float32Array, g: Float32Array, rows: number, d: number, eps: number): void {
    rmsnormForward(y, rinv, x, g, rows, d, eps);
  }

  rmsnormBackward(dx: Float32Array, dg: Float32Array | null, dy: Float32Array, x: Float32Array, rinv: Float32Array, g: Float32Array, rows: number, d: number): void {
    rmsnormBackward(dx, dg, dy, x, rinv, g, rows, d);
  }

  rope(x: Float32Array, rows: number, heads: number, hd: number, inverse: boolean): void {
    rope(x, rows, heads, hd, this.positions, this.invFreq, inverse);
  }

  attentionForward(o: Float32Array, probs: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array, dims: AttentionDims,
    window?: { sink: number; recent: number }): void {
    attentionForward(this.ar, o, probs, q, k, v, dims, this.att, window);
  }

  attentionBackward(dq: Float32Array, dk: Float32Array, dv: Float32Array, dO: Float32Array, probs: Float32Array, q: Float32Array,
    k: Float32Array, v: Float32Array, dims: AttentionDims): void {
    attentionBackward(this.ar, dq, dk, dv, dO, probs, q, k, v, dims, this.att);
  }

  swigluForward(h: Float32Array, gate: Float32Array, up: Float32Array, n: number): void { swigluForward(h, gate, up, n); }
  swigluBackward(dgate: Float32Array, dup: Float32Array, dh: Float32Array, gate: Float32Array, up: Float32Array, n: number): void {
    swigluBackward(dgate, dup, dh, gate, up, n);
  }

  gateMix(o: Float32Array, full: Float32Array, stream: Float32Array, alphas: Float32Array, dims: AttentionDims): void {
    const { rows, heads, kvHeads, hd } = dims, group = heads / kvHeads;
    for (let t = 0; t < rows; t++) {
      for (let h = 0; h < heads; h++) {
        const alpha = alphas[Math.floor(h / group)];
        const base = (t * heads + h) * hd;
        for (let i = base; i < base + hd; i++) o[i] = alpha * full[i] + (1 - alpha) * stream[i];
      }
    }
  }

  gateBackward(dFull: Float32Array, dStream: Float32Array, dO: Float32Array, full: Float32Array, stream: Float32Array, alphas: Float32Array,
    dims: AttentionDims, gateGrads: Float32Array | null): void {
    const { rows, heads, kvHeads, hd } = dims, group = heads / kvHeads;
    for (let t = 0; t < rows; t++) {
      for (let h = 0; h < heads; h++) {
        const kvh = Math.floor(h / group), alpha = alphas[kvh];
        const base = (t * heads + h) * hd;
        let da = 0;
        for (let i = base; i < base + hd; i++) {
          da += dO[i] * (full[i] - stream[i]);
          dFull[i] = alpha * dO[i];
          dStream[i] = (1 - alpha) * dO[i];
        }
        if (gateGrads) gateGrads[kvh] += da;
      }
    }
  }

  crossEntropy(dlogits: Float32Array, logits: Float32Array, targets: Int32Array, weights: Float32Array, rows: number, vocab: number, loss: Float32Array): void {
    loss[0] += crossEntropy(dlogits, logits, targets, weights, rows, vocab);
  }

  mse(dh: Float32Array, h: Float32Array, ref: Float32Array, rowWeights: Float32Array, cols: number, loss: Float32Array): void {
    let total = 0;
    for (let r = 0; r < rowWeights.length; r++) {
      const w = rowWeights[r];
      for (let i = r * cols; i < (r + 1) * cols; i++) {
        const diff = h[i] - ref[i];
        dh[i] = 2 * w * diff;
        total += w * diff * diff;
      }
    }
    loss[0] += total;
  }
}
