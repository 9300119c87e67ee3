// Owns a GPUDevice: compiled pipelines (cached by shader name + entry point), one command encoder
// that records dispatches until flush(), and a per-submit uniform arena (one 256-byte slot per
// dispatch, uploaded with a single writeBuffer right before the submit).
import { shaders } from '../generated/shaders.js';

/**
 * Whether an adapter is a software renderer (SwiftShader, llvmpipe, lavapipe, WARP, …): flagged by
 * the browser (isFallbackAdapter) or recognisable by name. `device: 'auto'` never picks one.
 */
export function isSoftwareAdapter(info: { isFallbackAdapter?: boolean; vendor?: string; architecture?: string; device?: string; description?: string },
  fallback = false): boolean {
  if (fallback || info.isFallbackAdapter) return true;
  const name = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ');
  return /swiftshader|llvmpipe|lavapipe|softpipe|software|microsoft basic render|\bwarp\b/i.test(name);
}

const UNIFORM_SLOT = 256;
const UNIFORM_SLOTS = 1024;

export class GpuContext {
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private readonly uniformData = new ArrayBuffer(UNIFORM_SLOT * UNIFORM_SLOTS);
  private readonly uniformBuffer: GPUBuffer;
  private uniformUsed = 0;
  /** Buffers to destroy once the work recorded so far has been submitted. */
  private doomed: GPUBuffer[] = [];
  /** Buffers alive on a lent device (to free them when the context goes). */
  private readonly live: Set<GPUBuffer> | null;
  private track(buffer: GPUBuffer): GPUBuffer { this.live?.add(buffer); return buffer; }
  /** Dispatches recorded since creation (exposed as a work counter). */
  dispatches = 0;
  /** Uncaptured WebGPU errors (validation, out of memory) seen on this device, oldest first (at most 100 kept). */
  readonly errors: string[] = [];

  constructor(readonly device: GPUDevice, readonly adapterDescription: string,
    /** A software renderer (see isSoftwareAdapter). */
    readonly software = false,
    /** false for a device the caller lent (destroy() then frees this context's buffers, not the device). */
    readonly ownsDevice = true) {
    this.live = ownsDevice ? null : new Set();
    this.uniformBuffer = device.createBuffer({ size: UNIFORM_SLOT * UNIFORM_SLOTS, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    device.addEventListener('uncapturederror', (e) => {
      const message = (e as GPUUncapturedErrorEvent).error.message;
      if (this.errors.length < 100) this.errors.push(message);
      console.error(`duet: WebGPU error: ${message}`);
    });
  }

  /** True while commands are recorded but not yet submitted. */
  get pending(): boolean { return this.encoder !== null; }

  /**
   * Workgroup counts for `groups` workgroups in one dispatch, folded into y when they exceed the
   * per-dimension limit. Kernels recover the linear index as wid.y * num_workgroups.x + wid.x and
   * must ignore indices ≥ groups (x · y may exceed groups by less than x).
   */
  fold(groups: number): [number, number] {
    const max = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (groups <= max) return [groups, 1];
    const y = Math.ceil(groups / max);
    if (y > max) throw new Error(`dispatch of ${groups} workgroups exceeds the device limit (${max}²)`);
    return [Math.ceil(groups / y), y];
  }

  /**
   * Destroys `buffer` once the commands recorded so far have been submitted (at once when nothing
   * is pending). Destroying a buffer that an unsubmitted command uses would invalidate the submit.
   */
  release(buffer: GPUBuffer): void {
    this.live?.delete(buffer);
    if (this.encoder) this.doomed.push(buffer);
    else buffer.destroy();
  }

  /**
   * A new buffer holding `data` from the start (mapped at creation, so unlike queue.writeBuffer the
   * contents do not depend on submit order). `usage` is added to COPY_SRC.
   */
  bufferWith(data: ArrayBufferView, usage: GPUBufferUsageFlags, label?: string): GPUBuffer {
    this.checkSize(data.byteLength, label);
    const size = Math.max(16, Math.ceil(data.byteLength / 16) * 16);
    const buffer = this.track(this.device.createBuffer({ size, usage: usage | GPUBufferUsage.COPY_SRC, mappedAtCreation: true, label }));
    new Uint8Array(buffer.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    buffer.unmap();
    return buffer;
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
    for (const b of this.doomed) b.destroy();
    this.doomed = [];
  }

  /** The largest buffer that can also be bound whole as storage. */
  get maxBufferBytes(): number {
    return Math.min(this.device.limits.maxBufferSize, this.device.limits.maxStorageBufferBindingSize);
  }

  private checkSize(byteLength: number, label?: string): void {
    const max = this.maxBufferBytes;
    if (byteLength > max) {
      throw new Error(`GPU buffer ${label ?? ''} of ${byteLength} bytes exceeds the device's storage-buffer limit of ${max} bytes`);
    }
  }

  createBuffer(byteLength: number, label?: string): GPUBuffer {
    this.checkSize(byteLength, label);
    return this.track(this.device.createBuffer({
      size: Math.max(16, Math.ceil(byteLength / 16) * 16), label,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    }));
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
    for (const b of this.doomed) b.destroy();
    this.doomed = [];
    this.encoder = null;
    this.pass = null;
    this.uniformBuffer.destroy();
    if (this.live) { for (const b of this.live) b.destroy(); this.live.clear(); } else this.device.destroy();
  }
}
