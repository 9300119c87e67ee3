// Owns a GPUDevice: compiled pipelines (cached by shader name + entry point), one command encoder
// that records dispatches until flush(), and a per-submit uniform arena (one 256-byte slot per
// dispatch, uploaded with a single writeBuffer right before the submit).
import { shaders } from '../generated/shaders.js';

const UNIFORM_SLOT = 256;
const UNIFORM_SLOTS = 1024;

export class GpuContext {
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private readonly uniformData = new ArrayBuffer(UNIFORM_SLOT * UNIFORM_SLOTS);
  private readonly uniformBuffer: GPUBuffer;
  private uniformUsed = 0;
  /** Dispatches recorded since creation (exposed as a work counter). */
  dispatches = 0;

  constructor(readonly device: GPUDevice, readonly adapterDescription: string) {
    this.uniformBuffer = device.createBuffer({ size: UNIFORM_SLOT * UNIFORM_SLOTS, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  }

  get limits(): GPUSupportedLimits { return this.device.limits; }

  /** A compute pipeline for `shaderName` (a file in wgsl/ without extension), compiled once. */
  pipeline(shaderName: string, entryPoint = 'main', constants?: Record<string, number>): GPUComputePipeline {
    const key = `${shaderName}:${entryPoint}:${constants ? JSON.stringify(constants) : ''}`;
    let p = this.pipelines.get(key);
    if (!p) {
      const code = shaders[shaderName];
      if (code === undefined) throw new Error(`unknown WGSL shader '${shaderName}' (no wgsl/${shaderName}.wgsl)`);
      const module = this.device.createShaderModule({ code, label: shaderName });
      p = this.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint, constants }, label: key });
      this.pipelines.set(key, p);
    }
    return p;
  }

  /**
   * Records one dispatch. `buffers` bind to @group(0) @binding(0..n-1) in order; when `uniforms`
   * is given it binds at @binding(n) as a uniform block (at most 256 bytes).
   */
  dispatch(pipeline: GPUComputePipeline, buffers: GPUBuffer[], uniforms: ArrayBuffer | null,
    workgroups: [number, number?, number?]): void {
    const entries: GPUBindGroupEntry[] = buffers.map((buffer, binding) => ({ binding, resource: { buffer } }));
    if (uniforms) {
      if (uniforms.byteLength > UNIFORM_SLOT) throw new Error(`uniform block of ${uniforms.byteLength} bytes exceeds ${UNIFORM_SLOT}`);
      if (this.uniformUsed === UNIFORM_SLOTS) this.flush();
      const offset = this.uniformUsed++ * UNIFORM_SLOT;
      new Uint8Array(this.uniformData, offset, uniforms.byteLength).set(new Uint8Array(uniforms));
      entries.push({ binding: buffers.length, resource: { buffer: this.uniformBuffer, offset, size: UNIFORM_SLOT } });
    }
    const maxGroups = this.device.limits.maxComputeWorkgroupsPerDimension;
    const [x, y = 1, z = 1] = workgroups;
    if (x > maxGroups || y > maxGroups || z > maxGroups) {
      throw new Error(`dispatch of ${x}×${y}×${z} workgroups exceeds the device limit ${maxGroups} per dimension (${pipeline.label})`);
    }
    if (x === 0 || y === 0 || z === 0) return;
    const bindGroup = this.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    const pass = this.computePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
    this.dispatches++;
  }

  /** The command encoder for copies; ends the open compute pass so ordering is kept. */
  commandEncoder(): GPUCommandEncoder {
    if (this.pass) { this.pass.end(); this.pass = null; }
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    return this.encoder;
  }

  private computePass(): GPUComputePassEncoder {
    if (!this.pass) this.pass = this.commandEncoder().beginComputePass();
    return this.pass;
  }

  /** Uploads this submit's uniforms and submits everything recorded so far. */
  flush(): void {
    if (!this.encoder) return;
    if (this.pass) { this.pass.end(); this.pass = null; }
    if (this.uniformUsed > 0) {
      this.device.queue.writeBuffer(this.uniformBuffer, 0, this.uniformData, 0, this.uniformUsed * UNIFORM_SLOT);
    }
    this.device.queue.submit([this.encoder.finish()]);
    this.encoder = null;
    this.uniformUsed = 0;
  }

  createBuffer(byteLength: number, label?: string): GPUBuffer {
    const max = Math.min(this.device.limits.maxBufferSize, this.device.limits.maxStorageBufferBindingSize);
    if (byteLength > max) {
      throw new Error(`GPU buffer ${label ?? ''} of ${byteLength} bytes exceeds the device's storage-buffer limit of ${max} bytes`);
    }
    return this.device.createBuffer({
      size: Math.max(16, Math.ceil(byteLength / 16) * 16), label,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
  }

  /** Copies byteLength bytes of `src` at srcOffset to host memory, after all recorded work. */
  async readBuffer(src: GPUBuffer, srcOffset: number, byteLength: number): Promise<ArrayBuffer> {
    const size = Math.ceil(byteLength / 4) * 4;
    const staging = this.device.createBuffer({ size: Math.max(4, size), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    this.commandEncoder().copyBufferToBuffer(src, srcOffset, staging, 0, size);
    this.flush();
    await staging.mapAsync(GPUMapMode.READ);
    const out = staging.getMappedRange().slice(0, byteLength);
    staging.unmap();
    staging.destroy();
    return out;
  }

  destroy(): void {
    this.uniformBuffer.destroy();
    this.device.destroy();
  }
}
