import type { DeviceTensor } from '../engine/backend.js';

/** A tensor of f32 in one GPU storage buffer. */
export class GpuTensor implements DeviceTensor {
  constructor(readonly buffer: GPUBuffer, readonly length: number) {}
}
