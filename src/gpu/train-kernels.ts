// The training kernels on the GPU (wgsl/train_*.wgsl): the same TrainKernels the CPU arena offers,
// so TrainModel trains and identifies on either. A tensor is a span of one storage buffer; kernels
// bind whole buffers and take element offsets in their uniform block, so spans need no alignment.
// Every allocation is its own buffer, which keeps a kernel's outputs and inputs in distinct buffers
// (WebGPU forbids binding one buffer writable and read-only in one dispatch); spans that share a
// buffer across that line are refused with an error.
//
// Host data (ids, positions' rotation table, targets, gates) goes into fresh buffers made with
// their contents (mappedAtCreation), released after the submit, so it is seen in recording order.
import type { AttentionDims, TrainKernels } from '../train/kernels.js';
import type { GpuContext } from './context.js';

export interface GpuSpan { readonly buffer: GPUBuffer; readonly offset: number; readonly length: number }

/** A float field of a uniform block (the others are u32). */
class F32 { constructor(readonly value: number) {} }
const f32 = (v: number) => new F32(v);

function uniforms(...fields: Array<number | F32>): ArrayBuffer {
  const buf = new ArrayBuffer(Math.ceil(fields.length / 4) * 16);
  const view = new DataView(buf);
  fields.forEach((v, i) => {
    if (v instanceof F32) view.setFloat32(i * 4, v.value, true);
    else view.setUint32(i * 4, v, true);
  });
  return buf;
}

/** Threads per workgroup of the one-thread-per-element kernels (their WG). */
const WG = 256;
const MATMUL_TILE = 16;

export class GpuTrainKernels implements TrainKernels<GpuSpan> {
  private ids: GPUBuffer | null = null;
  private ropeTable: GPUBuffer | null = null;
  private inverseTable: GPUBuffer | null = null;
  private rows = 0;
  /** dS of attention's backward, [heads][rows][rows], grown on demand. */
  private ds: GpuSpan | null = null;
  /** Per-row losses before they are summed (cross-entropy, MSE). */
  private rowLoss: GpuSpan | null = null;

  constructor(readonly ctx: GpuContext) {}

  alloc(n: number): GpuSpan {
    return { buffer: this.ctx.createBuffer(Math.max(1, n) * 4, 'train tensor'), offset: 0, length: n };
  }

  slice(t: GpuSpan, offset: number, n: number): GpuSpan {
    if (offset < 0 || offset + n > t.length) throw new RangeError(`slice [${offset}, ${offset + n}) of a ${t.length}-element GPU tensor`);
    return { buffer: t.buffer, offset: t.offset + offset, length: n };
  }

  zero(t: GpuSpan, n: number): void {
    if (n > 0) this.ctx.commandEncoder().clearBuffer(t.buffer, t.offset * 4, n * 4);
  }

  async read(t: GpuSpan, n: number): Promise<Float32Array> {
    if (n === 0) return new Float32Array(0);
    return new Float32Array(await this.ctx.readBuffer(t.buffer, t.offset * 4, n * 4));
  }

  write(t: GpuSpan, data: Float32Array): void {
    if (data.length > t.length) throw new RangeError(`write of ${data.length} floats into a ${t.length}-element GPU tensor`);
    if (data.length === 0) return;
    this.withHost(data, 'train upload', (b) => this.ctx.commandEncoder().copyBufferToBuffer(b, 0, t.buffer, t.offset * 4, data.byteLength));
  }

  /** A buffer holding `data`; the caller releases it once the commands using it are recorded. */
  private host(data: Float32Array | Int32Array, label: string): GPUBuffer {
    return this.ctx.bufferWith(data, GPUBufferUsage.STORAGE, label);
  }

  /** Records `use` of a buffer holding `data`, destroyed after the submit that carries it. */
  private withHost(data: Float32Array | Int32Array, label: string, use: (b: GPUBuffer) => void): void {
    const b = this.host(data, label);
    use(b);
    this.ctx.release(b);
  }

  setSequence(ids: Int32Array, positions: Int32Array, invFreq: Float32Array): void {
    const T = ids.length, half = invFreq.length;
    // cos/sin in double precision on the host (as the CPU path): f32 angles of long positions would drift.
    const table = new Float32Array(2 * T * half);
    for (let r = 0; r < T; r++) {
      for (let i = 0; i < half; i++) {
        const t = positions[r] * invFreq[i];
        table[r * half + i] = Math.cos(t);
        table[(T + r) * half + i] = Math.sin(t);
      }
    }
    const inverse = new Float32Array(table);
    for (let i = T * half; i < inverse.length; i++) inverse[i] = -inverse[i];
    // These live until the next sequence replaces them (the passes use them across submits).
    for (const b of [this.ids, this.ropeTable, this.inverseTable]) if (b) this.ctx.release(b);
    this.ids = this.host(ids, 'token ids');
    this.ropeTable = this.host(table, 'rope table');
    this.inverseTable = this.host(inverse, 'rope table (inverse)');
    this.rows = T;
  }

  private sequence(): { ids: GPUBuffer; table: GPUBuffer; inverse: GPUBuffer } {
    if (!this.ids || !this.ropeTable || !this.inverseTable) throw new Error('GPU training kernels: setSequence must come before the passes');
    return { ids: this.ids, table: this.ropeTable, inverse: this.inverseTable };
  }

  /** Throws when a written span shares a buffer with an input (a WebGPU validation error otherwise). */
  private distinct(what: string, written: GpuSpan[], inputs: GpuSpan[]): void {
    for (const w of written) {
      if (inputs.some((i) => i.buffer === w.buffer)) throw new Error(`${what}: an output shares a GPU buffer with an input (allocate them separately)`);
    }
  }

  private elementGroups(n: number): [number, number] { return this.ctx.fold(Math.ceil(n / WG)); }

  embedGather(x: GpuSpan, embed: GpuSpan, d: number): void {
    const { ids } = this.sequence();
    this.distinct('embedGather', [x], [embed]);
    this.ctx.dispatch(this.ctx.pipeline('train_elementwise', 'embed_gather'), [embed.buffer, ids, x.buffer],
      uniforms(0, d, this.rows, 0, 0, embed.offset, x.offset), this.elementGroups(this.rows * d));
  }

  embedScatterAdd(dEmbed: GpuSpan, dx: GpuSpan, d: number): void {
    const { ids } = this.sequence();
    this.distinct('embedScatterAdd', [dEmbed], [dx]);
    this.ctx.dispatch(this.ctx.pipeline('train_elementwise', 'embed_scatter'), [dx.buffer, ids, dEmbed.buffer],
      uniforms(0, d, this.rows, 0, 0, dx.offset, dEmbed.offset), [Math.ceil(d / WG)]);
  }

  add(y: GpuSpan, x: GpuSpan, n: number): void {
    this.distinct('add', [y], [x]);
    this.ctx.dispatch(this.ctx.pipeline('train_elementwise', 'add'), [x.buffer, y.buffer], uniforms(n, 0, 0, 0, 0, x.offset, y.offset), this.elementGroups(n));
  }

  addBias(y: GpuSpan, b: GpuSpan, rows: number, n: number): void {
    this.distinct('addBias', [y], [b]);
    this.ctx.dispatch(this.ctx.pipeline('train_elementwise', 'add_bias'), [b.buffer, y.buffer],
      uniforms(rows * n, n, rows, 0, 0, b.offset, y.offset), this.elementGroups(rows * n));
  }

  /** out (+)= A·Bᵀ with A(r, i) = a[aOff + r·aRs + i·aCs], B(c, i) = b[bOff + c·bRs + i·bCs]. */
  private gemm(out: GpuSpan, ldo: number, a: GpuSpan, aRs: number, aCs: number, b: GpuSpan, bRs: number, bCs: number,
    rows: number, inner: number, cols: number, accumulate: boolean): void {
    this.distinct('linear', [out], [a, b]);
    const tilesX = Math.ceil(cols / MATMUL_TILE), tilesY = Math.ceil(rows / MATMUL_TILE);
    const max = this.ctx.limits.maxComputeWorkgroupsPerDimension;
    if (tilesX > max || tilesY > max) throw new Error(`training matmul of ${rows}×${cols} exceeds the device's ${max} workgroups per dimension`);
    this.ctx.dispatch(this.ctx.pipeline('train_matmul'), [a.buffer, b.buffer, out.buffer],
      uniforms(rows, cols, inner, accumulate ? 1 : 0, out.offset, ldo, a.offset, aRs, aCs, b.offset, bRs, bCs), [tilesX, tilesY]);
  }

  linearForward(y: GpuSpan, x: GpuSpan, w: GpuSpan, rows: number, inD: number, outD: number): void {
    this.gemm(y, outD, x, inD, 1, w, inD, 1, rows, inD, outD, false);
  }

  linearBackward(dx: GpuSpan | null, dw: GpuSpan | null, dy: GpuSpan, x: GpuSpan, w: GpuSpan, rows: number, inD: number, outD: number): void {
    // dx[r][i] += Σ_o dy[r][o]·W[o][i];  dW[o][i] += Σ_r dy[r][o]·x[r][i]
    if (dx) this.gemm(dx, inD, dy, outD, 1, w, 1, inD, rows, outD, inD, true);
    if (dw) this.gemm(dw, inD, dy, 1, outD, x, 1, inD, outD, rows, inD, true);
  }

  rmsnormForward(y: GpuSpan, rinv: GpuSpan, x: GpuSpan, g: GpuSpan, rows: number, d: number, eps: number): void {
    this.distinct('rmsnormForward', [y, rinv], [x, g]);
    this.ctx.dispatch(this.ctx.pipeline('train_norm', 'forward'), [x.buffer, g.buffer, y.buffer, rinv.buffer],
      uniforms(rows, d, f32(eps), x.offset, y.offset, g.offset, rinv.offset), this.ctx.fold(rows));
  }

  rmsnormBackward(dx: GpuSpan, dg: GpuSpan | null, dy: GpuSpan, x: GpuSpan, rinv: GpuSpan, g: GpuSpan, rows: number, d: number): void {
    this.distinct('rmsnormBackward', dg ? [dx, dg] : [dx], [dy, x, rinv, g]);
    const block = uniforms(rows, d, f32(0), x.offset, 0, g.offset, rinv.offset, dy.offset, dx.offset, dg?.offset ?? 0);
    this.ctx.dispatch(this.ctx.pipeline('train_norm', 'backward_dx'), [dy.buffer, x.buffer, rinv.buffer, g.buffer, dx.buffer], block, this.ctx.fold(rows));
    if (dg) this.ctx.dispatch(this.ctx.pipeline('train_norm', 'backward_dg'), [dy.buffer, x.buffer, rinv.buffer, dg.buffer], block, [Math.ceil(d / 64)]);
  }

  rope(x: GpuSpan, rows: number, heads: number, hd: number, inverse: boolean): void {
    const s = this.sequence();
    if (rows !== this.rows) throw new RangeError(`rope over ${rows} rows, the sequence has ${this.rows}`);
    const n = rows * heads * (hd / 2);
    this.ctx.dispatch(this.ctx.pipeline('train_elementwise', 'rope'), [inverse ? s.inverse : s.table, x.buffer],
      uniforms(n, 0, rows, heads, hd, x.offset, 0), this.elementGroups(n));
  }

  private attentionBlock(dims: AttentionDims, sink: number, recent: number, q: GpuSpan, k: GpuSpan, v: GpuSpan, o: GpuSpan, p: GpuSpan, ds = 0): ArrayBuffer {
    return uniforms(dims.rows, dims.heads, dims.kvHeads, dims.hd, f32(dims.scale), sink, recent, q.offset, k.offset, v.offset, o.offset, p.offset, ds);
  }

  attentionForward(o: GpuSpan, probs: GpuSpan, q: GpuSpan, k: GpuSpan, v: GpuSpan, dims: AttentionDims, window?: { sink: number; recent: number }): void {
    this.distinct('attentionForward', [o, probs], [q, k, v]);
    const sink = window ? window.sink : 0, recent = window ? window.recent : dims.rows + 1;
    this.ctx.dispatch(this.ctx.pipeline('train_attention', 'forward'), [q.buffer, k.buffer, v.buffer, o.buffer, probs.buffer],
      this.attentionBlock(dims, sink, recent, q, k, v, o, probs), this.ctx.fold(dims.heads * dims.rows));
  }

  attentionBackward(dq: GpuSpan, dk: GpuSpan, dv: GpuSpan, dO: GpuSpan, probs: GpuSpan, q: GpuSpan, k: GpuSpan, v: GpuSpan, dims: AttentionDims): void {
    const n = dims.heads * dims.rows * dims.rows;
    if (!this.ds || this.ds.length < n) {
      if (this.ds) this.ctx.release(this.ds.buffer);
      this.ds = this.alloc(n);
    }
    const ds = this.ds;
    this.distinct('attentionBackward', [dq, ds], [dO, probs, k, v]);
    this.distinct('attentionBackward', [dk, dv], [q, dO, probs, ds]);
    this.ctx.dispatch(this.ctx.pipeline('train_attention', 'backward_rows'), [dO.buffer, probs.buffer, k.buffer, v.buffer, ds.buffer, dq.buffer],
      this.attentionBlock(dims, 0, 0, dq, k, v, dO, probs, ds.offset), this.ctx.fold(dims.heads * dims.rows));
    this.ctx.dispatch(this.ctx.pipeline('train_attention', 'backward_keys'), [q.buffer, dO.buffer, probs.buffer, ds.buffer, dk.buffer, dv.buffer],
      this.attentionBlock(dims, 0, 0, q, dk, dv, dO, probs, ds.offset), this.ctx.fold(dims.kvHeads * dims.rows));
  }

  swigluForward(h: GpuSpan, gate: GpuSpan, up: GpuSpan, n: number): void {
    this.distinct('swigluForward', [h], [gate, up]);
    this.ctx.dispatch(this.ctx.pipeline('train_elementwise', 'swiglu_forward'), [gate.buffer, up.buffer, h.buffer],
      uniforms(n, 0, 0, 0, 0, gate.offset, up.offset, h.offset), this.elementGroups(n));
  }

  swigluBackward(dgate: GpuSpan, dup: GpuSpan, dh: GpuSpan, gate: GpuSpan, up: GpuSpan, n: number): void {
    this.distinct('swigluBackward', [dgate, dup], [dh, gate, up]);
    this.ctx.dispatch(this.ctx.pipeline('train_elementwise', 'swiglu_backward'), [gate.buffer, up.buffer, dh.buffer, dgate.buffer, dup.buffer],
      uniforms(n, 0, 0, 0, 0, gate.offset, up.offset, dh.offset, dgate.offset, dup.offset), this.elementGroups(n));
  }

  gateMix(o: GpuSpan, full: GpuSpan, stream: GpuSpan, alphas: Float32Array, dims: AttentionDims): void {
    this.distinct('gateMix', [o], [full, stream]);
    const n = dims.rows * dims.heads * dims.hd;
    this.withHost(alphas, 'gates', (a) => this.ctx.dispatch(this.ctx.pipeline('train_gates', 'mix'), [full.buffer, stream.buffer, a, o.buffer],
      uniforms(dims.rows, dims.heads, dims.kvHeads, dims.hd, 0, full.offset, stream.offset, o.offset), this.elementGroups(n)));
  }

  gateBackward(dFull: GpuSpan, dStream: GpuSpan, dO: GpuSpan, full: GpuSpan, stream: GpuSpan, alphas: Float32Array, dims: AttentionDims,
    gateGrads: GpuSpan | null): void {
    this.distinct('gateBackward', [dFull, dStream], [dO]);
    const n = dims.rows * dims.heads * dims.hd;
    this.withHost(alphas, 'gates', (a) => this.ctx.dispatch(this.ctx.pipeline('train_gates', 'split'), [dO.buffer, a, dFull.buffer, dStream.buffer],
      uniforms(dims.rows, dims.heads, dims.kvHeads, dims.hd, 0, dO.offset, 0, dFull.offset, dStream.offset), this.elementGroups(n)));
    if (!gateGrads) return;
    this.distinct('gateBackward', [gateGrads], [full, stream, dO]);
    this.ctx.dispatch(this.ctx.pipeline('train_gates', 'alpha_grad'), [full.buffer, stream.buffer, dO.buffer, gateGrads.buffer],
      uniforms(dims.rows, dims.heads, dims.kvHeads, dims.hd, 0, full.offset, stream.offset, dO.offset, 0, gateGrads.offset), [dims.kvHeads]);
  }

  private rowLosses(rows: number): GpuSpan {
    if (!this.rowLoss || this.rowLoss.length < rows) {
      if (this.rowLoss) this.ctx.release(this.rowLoss.buffer);
      this.rowLoss = this.alloc(rows);
    }
    return this.rowLoss;
  }

  /** acc[0] += Σ rowLoss[0..rows), in one workgroup (a fixed order). */
  private sumRows(acc: GpuSpan, rows: number): void {
    const rowLoss = this.rowLosses(rows);
    this.ctx.dispatch(this.ctx.pipeline('train_loss', 'sum_into'), [rowLoss.buffer, acc.buffer], uniforms(rows, 0, 0, 0, 0, acc.offset), [1]);
  }

  crossEntropy(dlogits: GpuSpan, logits: GpuSpan, targets: Int32Array, weights: Float32Array, rows: number, vocab: number, loss: GpuSpan): void {
    const rowLoss = this.rowLosses(rows);
    this.distinct('crossEntropy', [dlogits, rowLoss], [logits]);
    this.withHost(targets, 'targets', (t) => this.withHost(weights, 'loss weights', (w) => this.ctx.dispatch(this.ctx.pipeline('train_loss', 'cross_entropy'),
      [logits.buffer, t, w, dlogits.buffer, rowLoss.buffer], uniforms(rows, vocab, logits.offset, 0, dlogits.offset), this.ctx.fold(rows))));
    this.sumRows(loss, rows);
  }

  /**
   * dh = 2·w[r]·(h − ref) and loss[0] += Σ_r w[r]·|h[r] − ref[r]|² (DuoAttention's distillation
   * loss on the answer rows; rows with weight 0 get zero gradient).
   */
  mse(dh: GpuSpan, h: GpuSpan, ref: GpuSpan, rowWeights: Float32Array, cols: number, loss: GpuSpan): void {
    const rows = rowWeights.length;
    const rowLoss = this.rowLosses(rows);
    this.distinct('mse', [dh, rowLoss], [h, ref]);
    this.withHost(rowWeights, 'row weights', (w) => this.ctx.dispatch(this.ctx.pipeline('train_loss', 'mse'), [h.buffer, ref.buffer, w, dh.buffer, rowLoss.buffer],
      uniforms(rows, cols, h.offset, ref.offset, dh.offset), this.ctx.fold(rows)));
    this.sumRows(loss, rows);
  }

  /** Copies n floats from src to dst (distinct buffers). */
  copy(dst: GpuSpan, src: GpuSpan, n: number): void {
    this.distinct('copy', [dst], [src]);
    if (n > 0) this.ctx.commandEncoder().copyBufferToBuffer(src.buffer, src.offset * 4, dst.buffer, dst.offset * 4, n * 4);
  }
}

export interface AdamWOptions { beta1: number; beta2: number; eps: number; weightDecay: number; clip: number }

/** AdamW of src/train/adamw.ts on GPU tensors (moments on the device, clipping by the global norm). */
export class GpuAdamW {
  readonly m: GpuSpan;
  readonly v: GpuSpan;
  /** stats[0]: the last update's squared gradient norm. */
  private readonly stats: GpuSpan;
  private readonly mask: GpuSpan;
  step = 0;

  constructor(private readonly k: GpuTrainKernels, readonly params: GpuSpan, decayMask: Float32Array,
    readonly opts: AdamWOptions = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, clip: 1.0 }) {
    this.m = k.alloc(params.length);
    this.v = k.alloc(params.length);
    this.stats = k.alloc(1);
    this.mask = k.alloc(params.length);
    k.write(this.mask, decayMask);
  }

  /** Records one update with learning rate lr; returns the gradient norm before clipping (read back). */
  async update(grads: GpuSpan, lr: number): Promise<number> {
    const { ctx } = this.k;
    const { beta1, beta2, eps, weightDecay, clip } = this.opts;
    const n = this.params.length;
    if (grads.offset !== 0 || this.params.offset !== 0 || grads.length !== n) throw new Error('GpuAdamW: params and grads must be whole, equal-sized allocations');
    this.step++;
    const c1 = 1 - beta1 ** this.step, c2 = 1 - beta2 ** this.step;
    ctx.dispatch(ctx.pipeline('train_optim', 'sum_squares'), [grads.buffer, this.stats.buffer], uniforms(n, this.stats.offset), [1]);
    ctx.dispatch(ctx.pipeline('train_optim', 'adamw'),
      [grads.buffer, this.mask.buffer, this.stats.buffer, this.params.buffer, this.m.buffer, this.v.buffer],
      uniforms(n, 0, f32(lr), f32(beta1), f32(beta2), f32(eps), f32(weightDecay), f32(c1), f32(c2), f32(clip)), ctx.fold(Math.ceil(n / WG)));
    const [ss] = await this.k.read(this.stats, 1);
    return Math.sqrt(ss);
  }
}
