import type { DeviceTensor } from '../backend/contract.js';
import type { WeightDType } from '../model/quant.js';

/** A tensor of f32 in one GPU storage buffer. */
export class GpuTensor implements DeviceTensor {
  constructor(readonly buffer: GPUBuffer, readonly length: number) {}
}

/**
 * A weight matrix [rows][cols] kept in its packed storage (f16, Q8_0, Q4_0, Q4_K; src/model/quant.ts)
 * in one buffer, rows of rowBytes bytes: only matmul (as w) and embed (as the table) read it, through
 * wgsl/matmul_packed.wgsl and wgsl/embed_packed.wgsl. `length` counts its rows × cols elements.
 */
export class GpuPackedWeight implements DeviceTensor {
  constructor(readonly buffer: GPUBuffer, readonly dtype: Exclude<WeightDType, 'f32'>, readonly rows: number,
    readonly cols: number, readonly rowBytes: number) {}
  get length(): number { return this.rows * this.cols; }
}

/**
 * A weight matrix [rows][cols] too large for one buffer binding, split by rows into parts that each
 * fit (row0: the part's first row), f32 or packed alike. Only matmul (as w) and embed (as the table) read it.
 */
export class GpuRowParts implements DeviceTensor {
  constructor(readonly parts: Array<{ tensor: GpuTensor | GpuPackedWeight; row0: number; rows: number }>, readonly rows: number, readonly cols: number) {}
  get length(): number { return this.rows * this.cols; }
}

/**
 * A tensor of 32-bit words too large for one buffer binding (alloc beyond the device's
 * storage-buffer limit: in practice a long context's full KV cache), as consecutive parts of
 * `partLength` elements (the last may be shorter). write/read/copy/free take it like a GpuTensor,
 * kvAppend and attention take it as a cache (one dispatch per part); any other op refuses it.
 */
export class GpuSplitTensor implements DeviceTensor {
  constructor(readonly parts: GpuTensor[], readonly partLength: number, readonly length: number) {}

  /** The pieces of elements offset .. offset + length: part index, offset in the part, length, offset in the range. */
  *pieces(offset: number, length: number): Generator<{ part: GpuTensor; offset: number; length: number; at: number }> {
    let at = 0;
    while (at < length) {
      const i = Math.floor((offset + at) / this.partLength), inPart = (offset + at) - i * this.partLength;
      const n = Math.min(length - at, this.parts[i].length - inPart);
      yield { part: this.parts[i], offset: inPart, length: n, at };
      at += n;
    }
  }
}
