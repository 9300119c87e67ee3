// The WebGPU Backend: every op records one (or a few) compute dispatches or copies into the
// GpuContext's command encoder; nothing runs until flush() or read(). Kernels live in wgsl/
// (matmul, rmsnorm, rope, elementwise, embed); the attention ops are in ./attention.ts.
//
// Weights in f16, Q8_0, Q4_0 or Q4_K stay packed on the device (GpuPackedWeight: the bytes of
// src/model/quant.ts, unchanged); matmul and embed read them through matmul_packed / embed_packed,
// which decode each element where it is used, so no f32 copy of a packed weight exists on the GPU.
//
// Host data that an op needs (token ids, positions) travels in the op's uniform block when small,
// else in a fresh buffer created with its contents (mappedAtCreation), released after the submit.
// queue.writeBuffer is only used when nothing is recorded yet: it runs at submit time, before the
// recorded commands, so a write after a recorded op that reads the same tensor would be seen early.
//
// A buffer may not be bound both writable and read-only in one dispatch, so ops whose output
// aliases an input either use an in-place entry point (rmsnorm, siluMul) or read from a copy.
import { checkPacked, rowBytes, type PackedMatrix, type WeightDType } from '../model/quant.js';
import { checkInputNorm, type AttentionShape, type Backend, type Compensation, type DeviceTensor, type InputNorm, type StreamingWindow } from '../backend/contract.js';
import { checkKvDType, kvRowWords, type KvDType } from '../backend/kv-dtype.js';
import { ADD_KERNEL, checkKernelCall, evalSize, type KernelDef, type KernelScalars } from '../backend/kernels.js';
import type { GpuContext } from './context.js';
import { GpuPackedWeight, GpuRowParts, GpuSplitTensor, GpuTensor } from './tensor.js';
import { recordAttention, recordCompensationAppend, recordKvAppend, recordRingAppend, recordStreamingAttention, type GpuCompensation } from './attention.js';
import { decodedRing, packedRingAppend, releaseAll, roundedChunk } from './packed-ring.js';
import { sampleOnGpu } from './sample.js';
import type { DeviceChoice, DeviceSampler } from '../backend/device-sampler.js';

/** Threads per workgroup of the elementwise, rope and embed kernels. */
const WG = 256;
/** Output rows per workgroup of the GEMV kernels (wgsl/lib/gemv8.wgsl GEMV8_ROWS). */
const GEMV_ROWS_PER_WG = 8;
/** Output tile edge of the GEMM kernel (wgsl/matmul.wgsl TILE). */
const GEMM_TILE = 64;
/** ids / positions carried in the uniform block (array<vec4<i32>, 15>) instead of a buffer. */
const SMALL_INTS = 60;
/** ids carried in embed_packed's uniform block (array<vec4<i32>, 14>). */
const SMALL_IDS_PACKED = 56;
/** The FORMAT pipeline constant of wgsl/lib/dequant.wgsl. */
const PACKED_FORMAT: Record<Exclude<WeightDType, 'f32'>, number> = { f16: 0, q8_0: 1, q4_0: 2, q4_k: 3 };

function asGpu(t: DeviceTensor, what: string): GpuTensor {
  if (t instanceof GpuTensor) return t;
  if (t instanceof GpuRowParts) throw new TypeError(`${what}: a weight split over ${t.parts.length} buffers (larger than the device's buffer limit); only matmul and embed read it`);
  if (t instanceof GpuPackedWeight) throw new TypeError(`${what}: the tensor holds packed ${t.dtype} weights; only matmul and embed read it`);
  if (t instanceof GpuSplitTensor) {
    throw new TypeError(`${what}: a tensor of ${t.length * 4} bytes split over ${t.parts.length} buffers (larger than the device's buffer limit); only kvAppend and attention (as a full KV cache), copy, read, write and free take it`);
  }
  throw new TypeError(`${what}: not a GPU tensor (allocated by another backend?)`);
}

/** A full KV cache: one buffer, or split over several (GpuSplitTensor). */
function asCache(t: DeviceTensor, what: string): GpuTensor | GpuSplitTensor {
  return t instanceof GpuSplitTensor ? t : asGpu(t, what);
}

function need(t: DeviceTensor, elements: number, what: string): void {
  if (elements > t.length) throw new RangeError(`${what}: needs ${elements} elements, the tensor has ${t.length}`);
}

function count(n: number, what: string): void {
  if (!(Number.isInteger(n) && n >= 0)) throw new RangeError(`${what} must be a non-negative integer (got ${n})`);
}

/** A uniform block of `bytes` bytes with u32 / i32 / f32 views. */
function uniformBlock(bytes: number) {
  const buffer = new ArrayBuffer(bytes);
  return { buffer, u32: new Uint32Array(buffer), i32: new Int32Array(buffer), f32: new Float32Array(buffer) };
}

export class GpuBackend implements Backend, DeviceSampler {
  readonly kind = 'gpu' as const;
  readonly description: string;
  /** Bound where a kernel has an optional input (no bias, ids/positions in the uniform block). */
  private readonly dummy: GPUBuffer;

  constructor(readonly ctx: GpuContext) {
    this.description = ctx.adapterDescription;
    this.dummy = ctx.createBuffer(16, 'dummy');
  }

  /** Compute dispatches recorded so far on this device (proof that the GPU did the work). */
  get dispatches(): number { return this.ctx.dispatches; }

  /**
   * A tensor of `length` f32 (or 32-bit words). Beyond the device's storage-buffer limit (a long
   * context's full KV cache) it is split into consecutive parts that each fit (GpuSplitTensor).
   */
  alloc(length: number): GpuTensor | GpuSplitTensor {
    count(length, 'alloc length');
    const limit = this.ctx.maxBufferBytes;
    if (length * 4 <= limit) return new GpuTensor(this.ctx.createBuffer(length * 4, 'tensor'), length);
    if (length >= 2 ** 32) throw new RangeError(`alloc: ${length} elements exceed the GPU kernels' 32-bit word indices (at most ${2 ** 32 - 1})`);
    const partLength = Math.floor(limit / 16) * 4; // whole 16-byte units (buffers are padded to 16)
    const parts: GpuTensor[] = [];
    for (let start = 0; start < length; start += partLength) {
      const n = Math.min(partLength, length - start);
      parts.push(new GpuTensor(this.ctx.createBuffer(n * 4, `tensor part ${parts.length}`), n));
    }
    return new GpuSplitTensor(parts, partLength, length);
  }

  /** The single-buffer pieces of elements offset .. offset + length of `t` (one for a GpuTensor). */
  private pieces(t: DeviceTensor, offset: number, length: number, what: string) {
    if (t instanceof GpuSplitTensor) return [...t.pieces(offset, length)];
    return [{ part: asGpu(t, what), offset, length, at: 0 }];
  }

  /** A weight in its own storage: f32 as a tensor, the other formats packed (GpuPackedWeight). */
  uploadWeight(m: PackedMatrix): GpuTensor | GpuPackedWeight | GpuRowParts {
    checkPacked(m, 'uploadWeight');
    const rb = rowBytes(m.dtype, m.cols);
    const rowsAt = (row0: number, n: number): GpuTensor | GpuPackedWeight => {
      if (m.dtype === 'f32') return this.upload((m.data as Float32Array).subarray(row0 * m.cols, (row0 + n) * m.cols));
      const bytes = (m.data as Uint8Array).subarray(row0 * rb, (row0 + n) * rb);
      return new GpuPackedWeight(this.ctx.bufferWith(bytes, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, `${m.dtype} weight`), m.dtype, n, m.cols, rb);
    };
    if (m.rows * rb <= this.ctx.maxBufferBytes) return rowsAt(0, m.rows);
    // Larger than one binding: split by rows into parts that each fit.
    const perPart = Math.floor(this.ctx.maxBufferBytes / rb);
    if (perPart < 1) throw new Error(`GPU backend: one row of ${m.cols} ${m.dtype} (${rb} bytes) exceeds the device's storage-buffer limit of ${this.ctx.maxBufferBytes} bytes`);
    const parts = [];
    for (let row0 = 0; row0 < m.rows; row0 += perPart) {
      const n = Math.min(perPart, m.rows - row0);
      parts.push({ tensor: rowsAt(row0, n), row0, rows: n });
    }
    return new GpuRowParts(parts, m.rows, m.cols);
  }

  upload(data: Float32Array): GpuTensor {
    return new GpuTensor(this.ctx.bufferWith(data, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, 'tensor'), data.length);
  }

  write(t: DeviceTensor, data: Float32Array, offset = 0): void {
    count(offset, 'write offset');
    need(t, offset + data.length, 'write');
    if (t instanceof GpuSplitTensor) {
      for (const piece of t.pieces(offset, data.length)) this.write(piece.part, data.subarray(piece.at, piece.at + piece.length), piece.offset);
      return;
    }
    const g = asGpu(t, 'write');
    if (data.length === 0) return;
    if (this.ctx.pending) {
      // Keep the write in recording order (after the ops already recorded).
      const staging = this.ctx.bufferWith(data, 0, 'write staging');
      this.ctx.commandEncoder().copyBufferToBuffer(staging, 0, g.buffer, offset * 4, data.byteLength);
      this.ctx.release(staging);
    } else {
      this.ctx.writeBuffer(g.buffer, offset * 4, data);
    }
  }

  copy(dst: DeviceTensor, dstOffset: number, src: DeviceTensor, srcOffset: number, length: number): void {
    count(dstOffset, 'copy dstOffset'); count(srcOffset, 'copy srcOffset'); count(length, 'copy length');
    need(dst, dstOffset + length, 'copy dst');
    need(src, srcOffset + length, 'copy src');
    if (dst instanceof GpuSplitTensor || src instanceof GpuSplitTensor) {
      // Piece by piece, each within one buffer on both sides.
      for (const dp of this.pieces(dst, dstOffset, length, 'copy dst')) {
        for (const sp of this.pieces(src, srcOffset + dp.at, dp.length, 'copy src')) this.copy(dp.part, dp.offset + sp.at, sp.part, sp.offset, sp.length);
      }
      return;
    }
    const d = asGpu(dst, 'copy dst'), s = asGpu(src, 'copy src');
    if (length === 0) return;
    const enc = this.ctx.commandEncoder();
    if (d.buffer === s.buffer) {
      // copyBufferToBuffer needs distinct buffers: go through a temporary one.
      const tmp = this.ctx.createBuffer(length * 4, 'copy temp');
      enc.copyBufferToBuffer(s.buffer, srcOffset * 4, tmp, 0, length * 4);
      enc.copyBufferToBuffer(tmp, 0, d.buffer, dstOffset * 4, length * 4);
      this.ctx.release(tmp);
    } else {
      enc.copyBufferToBuffer(s.buffer, srcOffset * 4, d.buffer, dstOffset * 4, length * 4);
    }
  }

  async read(t: DeviceTensor, offset = 0, length?: number): Promise<Float32Array> {
    count(offset, 'read offset');
    const n = length ?? t.length - offset;
    count(n, 'read length');
    need(t, offset + n, 'read');
    if (t instanceof GpuSplitTensor) {
      // One read per part touched (a split tensor is a cache: read back only by tests and tools).
      const out = new Float32Array(n);
      for (const piece of t.pieces(offset, n)) out.set(await this.read(piece.part, piece.offset, piece.length), piece.at);
      return out;
    }
    const g = asGpu(t, 'read');
    if (n === 0) return new Float32Array(0);
    return new Float32Array(await this.ctx.readBuffer(g.buffer, offset * 4, n * 4));
  }

  free(t: DeviceTensor): void {
    if (t instanceof GpuRowParts) { for (const p of t.parts) this.ctx.release(p.tensor.buffer); return; }
    if (t instanceof GpuPackedWeight) { this.ctx.release(t.buffer); return; }
    if (t instanceof GpuSplitTensor) { for (const p of t.parts) this.ctx.release(p.buffer); return; }
    this.ctx.release(asGpu(t, 'free').buffer);
  }

  flush(): void { this.ctx.flush(); }

  /** Picks the token on the GPU (wgsl/sample.wgsl): the logits row never leaves the device. */
  sampleToken(logits: DeviceTensor, vocab: number, choice: DeviceChoice): Promise<number> {
    return sampleOnGpu(this.ctx, asGpu(logits, 'sampleToken logits'), vocab, choice);
  }

  destroy(): void {
    this.ctx.release(this.dummy);
    this.ctx.destroy();
  }

  /** `input`, or a temporary copy of its first n elements when it shares a buffer with `written`. */
  private distinct(written: GpuTensor, input: GpuTensor, n: number): GpuTensor {
    if (input.buffer !== written.buffer) return input;
    const tmp = new GpuTensor(this.ctx.createBuffer(n * 4, 'alias temp'), n);
    // Recording the copy opens the encoder, so the release below waits for the submit.
    this.ctx.commandEncoder().copyBufferToBuffer(input.buffer, 0, tmp.buffer, 0, n * 4);
    this.ctx.release(tmp.buffer);
    return tmp;
  }

  /**
   * Small host integers for a kernel: into the uniform block when they fit, else a new buffer
   * (the caller releases it after recording the dispatch).
   */
  private smallInts(values: Int32Array, block: { i32: Int32Array; u32: Uint32Array }, flagIndex: number): GPUBuffer {
    if (values.length <= SMALL_INTS) {
      block.i32.set(values, 4);
      block.u32[flagIndex] = 1;
      return this.dummy;
    }
    return this.ctx.bufferWith(values, GPUBufferUsage.STORAGE, 'host ints');
  }

  /** Records `threads` one-thread-per-element work as folded workgroups of WG. */
  private elementGroups(threads: number): [number, number] {
    return this.ctx.fold(Math.ceil(threads / WG));
  }

  embed(out: DeviceTensor, table: DeviceTensor, ids: Int32Array, dim: number): void {
    const o = asGpu(out, 'embed out');
    count(dim, 'embed dim');
    const rows = ids.length;
    need(out, rows * dim, 'embed out');
    if (rows === 0 || dim === 0) return;
    const vocab = Math.floor(table.length / dim);
    for (let r = 0; r < rows; r++) {
      if (!(ids[r] >= 0 && ids[r] < vocab)) throw new RangeError(`embed: token id ${ids[r]} outside the table (vocab ${vocab})`);
    }
    if (table instanceof GpuRowParts) {
      // A table split by rows: per token, a row copy (f32) or a one-row lookup (packed) from the part that holds it.
      if (table.cols !== dim) throw new RangeError(`embed: dim ${dim} but the split table has rows of ${table.cols}`);
      for (let r = 0; r < rows; r++) {
        const part = table.parts.find((p) => ids[r] < p.row0 + p.rows)!;
        if (part.tensor instanceof GpuPackedWeight) {
          this.embedPacked(o, part.tensor, Int32Array.of(ids[r] - part.row0), r);
        } else {
          this.ctx.commandEncoder().copyBufferToBuffer(part.tensor.buffer, (ids[r] - part.row0) * dim * 4, o.buffer, r * dim * 4, dim * 4);
        }
      }
      return;
    }
    if (table instanceof GpuPackedWeight) {
      if (table.cols !== dim) throw new RangeError(`embed: dim ${dim} but the packed ${table.dtype} table has rows of ${table.cols}`);
      this.embedPacked(o, table, ids, 0);
      return;
    }
    const t = asGpu(table, 'embed table');
    const block = uniformBlock(256);
    block.u32[0] = rows; block.u32[1] = dim;
    const idBuffer = this.smallInts(ids, block, 2);
    const src = this.distinct(o, t, t.length);
    this.ctx.dispatch(this.ctx.pipeline('embed'), [src.buffer, idBuffer, o.buffer], block.buffer, this.elementGroups(rows * dim));
    if (idBuffer !== this.dummy) this.ctx.release(idBuffer);
  }

  /** out rows outRow0.. = rows ids of a packed table (ids already checked). */
  private embedPacked(o: GpuTensor, table: GpuPackedWeight, ids: Int32Array, outRow0: number): void {
    const block = uniformBlock(256);
    block.u32.set([ids.length, table.cols, 0, table.rowBytes, outRow0]);
    let idBuffer = this.dummy;
    if (ids.length <= SMALL_IDS_PACKED) { block.i32.set(ids, 8); block.u32[2] = 1; } else idBuffer = this.ctx.bufferWith(ids, GPUBufferUsage.STORAGE, 'host ints');
    this.ctx.dispatch(this.ctx.pipeline('embed_packed', 'main', { FORMAT: PACKED_FORMAT[table.dtype] }), [table.buffer, idBuffer, o.buffer],
      block.buffer, this.elementGroups(ids.length * table.cols));
    if (idBuffer !== this.dummy) this.ctx.release(idBuffer);
  }

  rmsnorm(out: DeviceTensor, x: DeviceTensor, weight: DeviceTensor, rows: number, dim: number, eps: number): void {
    const o = asGpu(out, 'rmsnorm out'), xt = asGpu(x, 'rmsnorm x');
    count(rows, 'rmsnorm rows'); count(dim, 'rmsnorm dim');
    need(x, rows * dim, 'rmsnorm x'); need(out, rows * dim, 'rmsnorm out'); need(weight, dim, 'rmsnorm weight');
    if (rows === 0 || dim === 0) return;
    const w = this.distinct(o, asGpu(weight, 'rmsnorm weight'), dim);
    const block = uniformBlock(16);
    block.u32[0] = rows; block.u32[1] = dim; block.f32[2] = eps;
    const groups = this.ctx.fold(rows);
    if (o.buffer === xt.buffer) {
      this.ctx.dispatch(this.ctx.pipeline('rmsnorm', 'in_place'), [o.buffer, w.buffer], block.buffer, groups);
    } else {
      this.ctx.dispatch(this.ctx.pipeline('rmsnorm', 'main'), [xt.buffer, w.buffer, o.buffer], block.buffer, groups);
    }
  }

  matmul(out: DeviceTensor, x: DeviceTensor, w: DeviceTensor, bias: DeviceTensor | null,
    rows: number, inDim: number, outDim: number, accumulate = false, xOffset = 0, norm: InputNorm | null = null): void {
    const o = asGpu(out, 'matmul out');
    count(rows, 'matmul rows'); count(inDim, 'matmul inDim'); count(outDim, 'matmul outDim'); count(xOffset, 'matmul xOffset');
    need(x, xOffset + rows * inDim, 'matmul x'); need(w, outDim * inDim, 'matmul w'); need(out, rows * outDim, 'matmul out');
    if (bias) need(bias, outDim, 'matmul bias');
    if (rows === 0 || outDim === 0) return;
    const xt = this.distinct(o, asGpu(x, 'matmul x'), xOffset + rows * inDim);
    const bt = bias ? this.distinct(o, asGpu(bias, 'matmul bias'), outDim) : null;
    if (norm) checkInputNorm(norm, inDim, 'matmul');
    const nt = norm ? { weight: this.distinct(o, asGpu(norm.weight, 'matmul norm weight'), inDim), eps: norm.eps } : null;
    if (w instanceof GpuRowParts || w instanceof GpuPackedWeight) {
      if (w.cols !== inDim || w.rows !== outDim) throw new RangeError(`matmul: a ${w.rows}×${w.cols} ${w instanceof GpuRowParts ? 'split' : `packed ${w.dtype}`} weight used as ${outDim}×${inDim}`);
      if (w instanceof GpuPackedWeight) { this.recordMatmul(o, xt, w, bt, nt, rows, inDim, outDim, accumulate, xOffset, outDim, 0); return; }
      // One matmul per part, into its columns of out.
      for (const part of w.parts) this.recordMatmul(o, xt, part.tensor, bt, nt, rows, inDim, part.rows, accumulate, xOffset, outDim, part.row0);
      return;
    }
    const wt = this.distinct(o, asGpu(w, 'matmul w'), outDim * inDim);
    this.recordMatmul(o, xt, wt, bt, nt, rows, inDim, outDim, accumulate, xOffset, outDim, 0);
  }

  /**
   * One matmul dispatch; outDim rows of w land in columns outCol.. of out's rows of outStride. f32
   * weights run wgsl/matmul.wgsl, packed ones wgsl/matmul_packed.wgsl (same parameters, plus rowBytes).
   * The decode GEMV (rows == 1) runs the `_subgroup` variant of either when the device has
   * `subgroups`, and f16 weights (inDim % 4 == 0) read halves natively (matmul_f16*.wgsl) when it
   * has `shader-f16`; all share lib/gemv8.wgsl and dispatch 8 output rows per workgroup. With `norm`
   * every variant folds the RMSNorm into its loads (lib/matmul_norm.wgsl).
   */
  private recordMatmul(o: GpuTensor, xt: GpuTensor, wt: GpuTensor | GpuPackedWeight, bt: GpuTensor | null,
    norm: { weight: GpuTensor; eps: number } | null, rows: number, inDim: number,
    outDim: number, accumulate: boolean, xOffset: number, outStride: number, outCol: number): void {
    const block = uniformBlock(48);
    const tilesN = Math.ceil(outDim / GEMM_TILE);
    block.u32.set([rows, inDim, outDim, xOffset, (bt ? 1 : 0) | (accumulate ? 2 : 0) | (norm ? 4 : 0), tilesN, outStride, outCol]);
    const packed = wt instanceof GpuPackedWeight;
    if (packed) block.u32[8] = wt.rowBytes;
    if (norm) block.f32[9] = norm.eps;
    const [shader, constants] = packed
      ? ['matmul_packed', { FORMAT: PACKED_FORMAT[wt.dtype] }]
      : ['matmul', { VEC4: inDim % 4 === 0 && xOffset % 4 === 0 ? 1 : 0 }];
    const buffers = [xt.buffer, wt.buffer, bt ? bt.buffer : this.dummy, o.buffer, norm ? norm.weight.buffer : this.dummy];
    if (rows === 1) {
      const [gemv, gemvConstants] = packed && wt.dtype === 'f16' && this.ctx.shaderF16 && inDim % 4 === 0
        ? [this.ctx.subgroups ? 'matmul_f16_subgroup' : 'matmul_f16', undefined]
        : [this.ctx.subgroups ? `${shader}_subgroup` : shader, constants];
      this.ctx.dispatch(this.ctx.pipeline(gemv, 'gemv', gemvConstants), buffers, block.buffer,
        this.ctx.fold(Math.ceil(outDim / GEMV_ROWS_PER_WG)));
    } else {
      this.ctx.dispatch(this.ctx.pipeline(shader, 'gemm', constants), buffers, block.buffer,
        this.ctx.fold(tilesN * Math.ceil(rows / GEMM_TILE)));
    }
  }

  rope(x: DeviceTensor, rows: number, numHeads: number, headDim: number, positions: Int32Array, invFreq: DeviceTensor): void {
    const xt = asGpu(x, 'rope x');
    count(rows, 'rope rows'); count(numHeads, 'rope numHeads'); count(headDim, 'rope headDim');
    if (headDim % 2 !== 0) throw new RangeError(`rope: headDim must be even (got ${headDim})`);
    if (positions.length < rows) throw new RangeError(`rope: ${positions.length} positions for ${rows} rows`);
    need(x, rows * numHeads * headDim, 'rope x'); need(invFreq, headDim / 2, 'rope invFreq');
    const threads = rows * numHeads * (headDim / 2);
    if (threads === 0) return;
    const freq = this.distinct(xt, asGpu(invFreq, 'rope invFreq'), headDim / 2);
    const block = uniformBlock(256);
    block.u32[0] = rows; block.u32[1] = numHeads; block.u32[2] = headDim;
    const posBuffer = this.smallInts(positions.subarray(0, rows), block, 3);
    this.ctx.dispatch(this.ctx.pipeline('rope'), [xt.buffer, freq.buffer, posBuffer], block.buffer, this.elementGroups(threads));
    if (posBuffer !== this.dummy) this.ctx.release(posBuffer);
  }

  siluMul(out: DeviceTensor, gate: DeviceTensor, up: DeviceTensor, n: number): void {
    const o = asGpu(out, 'siluMul out'), g = asGpu(gate, 'siluMul gate'), u = asGpu(up, 'siluMul up');
    count(n, 'siluMul n');
    need(out, n, 'siluMul out'); need(gate, n, 'siluMul gate'); need(up, n, 'siluMul up');
    if (n === 0) return;
    const block = uniformBlock(16);
    block.u32[0] = n;
    const groups = this.elementGroups(n);
    if (o.buffer !== g.buffer && o.buffer !== u.buffer) {
      this.ctx.dispatch(this.ctx.pipeline('elementwise', 'silu_mul'), [g.buffer, u.buffer, o.buffer], block.buffer, groups);
    } else if (o.buffer === g.buffer) {
      // out is the gate; up is read from a copy if it is the same buffer too.
      const other = this.distinct(o, u, n);
      this.ctx.dispatch(this.ctx.pipeline('elementwise', 'silu_mul_io'), [o.buffer, other.buffer], block.buffer, groups);
    } else {
      block.u32[1] = 1; // out is up
      this.ctx.dispatch(this.ctx.pipeline('elementwise', 'silu_mul_io'), [o.buffer, g.buffer], block.buffer, groups);
    }
  }

  add(x: DeviceTensor, y: DeviceTensor, n: number): void {
    this.run(ADD_KERNEL, [x, y], { n });
  }

  /** A named kernel (../backend/kernels.ts): one dispatch of the wgsl/ entry its declaration names. */
  run(kernel: KernelDef, tensors: readonly DeviceTensor[], scalars: KernelScalars): void {
    checkKernelCall(kernel, tensors, scalars);
    const g = kernel.gpu;
    if (!g) throw new Error(`run ${kernel.name}: the kernel has no GPU (WGSL) implementation`);
    const t = tensors.map((x, i) => asGpu(x, `run ${kernel.name} ${kernel.tensors[i]}`));
    const words = g.uniforms.map((u) => {
      if (!(u in scalars)) throw new Error(`run ${kernel.name}: GPU uniform '${u}' is not a scalar of the kernel`);
      return scalars[u];
    });
    const groups = Math.ceil(evalSize(g.workgroups.count, scalars, `run ${kernel.name}`) / (g.workgroups.per ?? 1));
    if (groups <= 0) return;
    const pipeline = this.ctx.pipeline(g.shader, g.entry ?? 'main');
    // A buffer bound writable may not also be bound read-only in the same dispatch.
    const written = new Set<GPUBuffer>();
    kernel.tensors.forEach((name, i) => {
      if (!kernel.writes.includes(name)) return;
      if (written.has(t[i].buffer)) throw new Error(`run ${kernel.name}: two written tensors share one buffer`);
      written.add(t[i].buffer);
    });
    const buffers = t.map((x, i) => {
      const name = kernel.tensors[i];
      if (kernel.writes.includes(name) || !written.has(x.buffer)) return x.buffer;
      const size = kernel.sizes[name];
      const n = size === undefined ? x.length : Math.min(x.length, evalSize(size, scalars, `run ${kernel.name}`));
      return this.distinct(t[kernel.tensors.findIndex((w, j) => kernel.writes.includes(w) && t[j].buffer === x.buffer)], x, n).buffer;
    });
    const block = uniformBlock(Math.max(16, Math.ceil(words.length / 4) * 16));
    words.forEach((w, i) => { if (kernel.floats?.includes(g.uniforms[i])) block.f32[i] = w; else block.u32[i] = w; });
    this.ctx.dispatch(pipeline, buffers, block.buffer, this.ctx.fold(groups));
  }

  kvAppend(kCache: DeviceTensor, vCache: DeviceTensor, k: DeviceTensor, v: DeviceTensor,
    rows: number, numKvHeads: number, headDim: number, capacity: number, pastLen: number, dtype: KvDType = 'f32',
    numValueHeads = numKvHeads): void {
    recordKvAppend(this.ctx, asCache(kCache, 'kvAppend kCache'), asCache(vCache, 'kvAppend vCache'), asGpu(k, 'kvAppend k'),
      asGpu(v, 'kvAppend v'), rows, numKvHeads, headDim, capacity, pastLen, checkKvDType(dtype, 'kvAppend'), numValueHeads);
  }

  attention(out: DeviceTensor, q: DeviceTensor, kCache: DeviceTensor, vCache: DeviceTensor,
    shape: AttentionShape, capacity: number, dtype: KvDType = 'f32'): void {
    recordAttention(this.ctx, asGpu(out, 'attention out'), asGpu(q, 'attention q'), asCache(kCache, 'attention kCache'),
      asCache(vCache, 'attention vCache'), shape, capacity, checkKvDType(dtype, 'attention'));
  }

  streamingAttention(out: DeviceTensor, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor,
    kRing: DeviceTensor, vRing: DeviceTensor, shape: AttentionShape, window: StreamingWindow,
    compensation: Compensation | null = null, dtype: KvDType = 'f32', logSumExp = false): void {
    const comp = gpuCompensation(compensation, 'streamingAttention');
    let kt = asGpu(k, 'streamingAttention k'), vt = asGpu(v, 'streamingAttention v');
    let kr = asGpu(kRing, 'streamingAttention kRing'), vr = asGpu(vRing, 'streamingAttention vRing');
    const temps: GpuTensor[] = [];
    if (checkKvDType(dtype, 'streamingAttention') !== 'f32') {
      const nV = shape.maps?.numValueHeads ?? shape.numKvHeads;
      checkPackedRing(kr, vr, shape.numKvHeads, shape.headDim, window, dtype, 'streamingAttention', nV);
      [kr, vr] = decodedRing(this.ctx, kr, vr, shape.numKvHeads, shape.headDim, window, dtype, nV);
      [kt, vt] = roundedChunk(this.ctx, kt, vt, shape.rows, shape.numKvHeads, shape.headDim, dtype, nV);
      temps.push(kr, vr, kt, vt);
    }
    recordStreamingAttention(this.ctx, asGpu(out, 'streamingAttention out'), asGpu(q, 'streamingAttention q'), kt, vt, kr, vr, shape, window, comp, logSumExp);
    releaseAll(this.ctx, temps);
  }

  ringAppend(kRing: DeviceTensor, vRing: DeviceTensor, k: DeviceTensor, v: DeviceTensor,
    rows: number, numKvHeads: number, headDim: number, pastLen: number, window: StreamingWindow,
    compensation: Compensation | null = null, dtype: KvDType = 'f32', numValueHeads = numKvHeads): void {
    const comp = gpuCompensation(compensation, 'ringAppend');
    if (window.recent < 1) throw new Error('ringAppend: recent must be at least 1');
    if (comp && numValueHeads !== numKvHeads) throw new Error('ringAppend: compensation with decoupled key/value heads (DHA) is not supported');
    const kr = asGpu(kRing, 'ringAppend kRing'), vr = asGpu(vRing, 'ringAppend vRing'), kt = asGpu(k, 'ringAppend k'), vt = asGpu(v, 'ringAppend v');
    if (checkKvDType(dtype, 'ringAppend') === 'f32') {
      if (comp) recordCompensationAppend(this.ctx, comp, kr, vr, kt, vt, rows, numKvHeads, headDim, pastLen, window);
      recordRingAppend(this.ctx, kr, vr, kt, vt, rows, numKvHeads, headDim, pastLen, window, numValueHeads);
      return;
    }
    checkPackedRing(kr, vr, numKvHeads, headDim, window, dtype, 'ringAppend', numValueHeads);
    if (comp) {
      // The sums add the stored values: the ring decoded, the chunk rounded as it will be stored.
      const [dk, dv] = decodedRing(this.ctx, kr, vr, numKvHeads, headDim, window, dtype);
      const [rk, rv] = roundedChunk(this.ctx, kt, vt, rows, numKvHeads, headDim, dtype);
      recordCompensationAppend(this.ctx, comp, dk, dv, rk, rv, rows, numKvHeads, headDim, pastLen, window);
      releaseAll(this.ctx, [dk, dv, rk, rv]);
    }
    packedRingAppend(this.ctx, (d, dOff, src, sOff, n) => this.copy(d, dOff, src, sOff, n), kr, vr, kt, vt, rows, numKvHeads, headDim, pastLen, window, dtype,
      numValueHeads);
  }
}

/** A packed ring's size: [numKvHeads][sink + recent] rows of the dtype (V: numValueHeads heads). */
function checkPackedRing(kRing: GpuTensor, vRing: GpuTensor, numKvHeads: number, headDim: number, window: StreamingWindow, dtype: KvDType, what: string,
  numValueHeads = numKvHeads): void {
  const words = (window.sink + window.recent) * kvRowWords(headDim, dtype);
  need(kRing, numKvHeads * words, `${what} kRing`); need(vRing, numValueHeads * words, `${what} vRing`);
}

function gpuCompensation(c: Compensation | null, what: string): GpuCompensation | null {
  return c && { kSum: asGpu(c.kSum, `${what} compensation kSum`), vSum: asGpu(c.vSum, `${what} compensation vSum`) };
}

/** A GPU Backend on `ctx` (from createNodeGpu() in Node, createBrowserGpu() in a browser). */
export async function createGpuBackend(ctx: GpuContext): Promise<GpuBackend> {
  return new GpuBackend(ctx);
}
