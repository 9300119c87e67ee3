import type { DeviceTensor } from '../engine/backend.js';

/** A tensor of f32 in one GPU storage buffer. */
export class GpuTensor implements DeviceTensor {
  constructor(readonly buffer: GPUBuffer, readonly length: number) {}
}

/**
 * A weight matrix [rows][cols] too large for one buffer binding, split by rows into parts that each
 * fit (row0: the part's first row). Only matmul (as w) and embed (as the table) read it.
 */
export class GpuRowParts implements DeviceTensor {
  constructor(readonly parts: Array<{ tensor: GpuTensor; row0: number; rows: number }>, readonly rows: number, readonly cols: number) {}
  get length(): number { return this.rows * this.cols; }
}
