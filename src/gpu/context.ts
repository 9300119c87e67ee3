// Owns a GPUDevice: compiled pipelines (cached by shader name + entry point), one command encoder
// that records dispatches until flush(), a per-submit uniform arena (one 256-byte slot per
// dispatch, uploaded with a single writeBuffer right before the submit), bind groups cached by
// (pipeline, buffers, uniform slot) and a pool of read-back staging buffers, so a decode step that
// repeats the previous one's dispatches creates no GPU object. `counters` counts the traffic.
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
/** Cached bind groups kept at most (the cache is cleared when it outgrows this). */
const BIND_GROUP_CACHE = 8192;
/** Staging buffers kept per size (more concurrent reads than this destroy the extras). */
const STAGING_PER_SIZE = 4;

/** What a GpuContext has done since its creation: the costs of a step that a software GPU counts exactly. */
export interface GpuCounters {
  /** queue.submit calls. */
  submits: number;
  /** Host waits on the GPU (mapAsync round trips). */
  hostWaits: number;
  /** Bytes copied from the GPU to the host. */
  readbackBytes: number;
  /** Bytes copied from the host to the GPU (queue.writeBuffer, buffers created with contents). */
  uploadBytes: number;
  /** Compute dispatches recorded. */
  dispatches: number;
  /** GPU objects created: buffers (staging ones included), bind groups, compute pipelines. */
  buffersCreated: number;
  bindGroupsCreated: number;
  pipelinesCreated: number;
}

export function zeroCounters(): GpuCounters {
  return { submits: 0, hostWaits: 0, readbackBytes: 0, uploadBytes: 0, dispatches: 0, buffersCreated: 0, bindGroupsCreated: 0, pipelinesCreated: 0 };
}

/** after − before, field by field. */
export function counterDelta(after: GpuCounters, before: GpuCounters): GpuCounters {
  const d = zeroCounters();
  for (const k of Object.keys(d) as Array<keyof GpuCounters>) d[k] = after[k] - before[k];
  return d;
}

export interface GpuContextOptions {
  /** A software renderer (see isSoftwareAdapter). */
  software?: boolean;
  /** false for a device the caller lent (destroy() then frees this context's buffers, not the device). */
  ownsDevice?: boolean;
  /**
   * Largest buffer (bytes) this context creates or binds, below the device's own limits: lets tests
   * on a software GPU exercise the splitting of tensors that exceed a real device's limits.
   */
  maxBufferBytes?: number;
  /** The features the adapter offered (default: the device's), to tell a feature switched off from one not offered. */
  adapterFeatures?: Iterable<string>;
}

/** The optional WebGPU features Duet's kernels use when the device was created with them. */
export const OPTIONAL_FEATURES = ['subgroups', 'shader-f16'] as const;
export type OptionalFeature = typeof OPTIONAL_FEATURES[number];

/**
 * The optional features to request from an adapter: those it offers, less those switched off
 * (`{ subgroups: false }` forces the kernels' fallbacks, e.g. to test them on an adapter that has the feature).
 */
export function wantedFeatures(offered: { has(name: string): boolean }, use: Partial<Record<OptionalFeature, boolean>> = {}): OptionalFeature[] {
  return OPTIONAL_FEATURES.filter((f) => offered.has(f) && use[f] !== false);
}

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
  /** Counts since creation (read them, never write them). */
  readonly counters: GpuCounters = zeroCounters();
  private readonly bindGroups = new Map<string, GPUBindGroup>();
  /** Per buffer: its id in bind-group keys, and the keys that use it (dropped when it is released). */
  private readonly bufferIds = new WeakMap<GPUBuffer, { id: number; keys: Set<string> }>();
  private nextBufferId = 1;
  /** Free MAP_READ staging buffers by size. */
  private readonly staging = new Map<number, GPUBuffer[]>();
  private readonly bufferLimit: number | null;
  readonly software: boolean;
  readonly ownsDevice: boolean;
  /** The device has the `subgroups` feature: the decode GEMVs use subgroup reductions (wgsl/lib/gemv8_subgroup.wgsl). */
  readonly subgroups: boolean;
  /** The device has `shader-f16`: f16 weights' GEMV reads halves natively (wgsl/matmul_f16*.wgsl). */
  readonly shaderF16: boolean;
  /** The features the adapter offered (a superset of the device's when some were left off). */
  readonly adapterFeatures: ReadonlySet<string>;
  /** Dispatches recorded per kernel ("shader:entry"), to tell which variant ran. */
  readonly kernelDispatches = new Map<string, number>();
  private readonly kernelNames = new WeakMap<GPUComputePipeline, string>();
  /** Uncaptured WebGPU errors (validation, out of memory) seen on this device, oldest first (at most 100 kept). */
  readonly errors: string[] = [];
  /** Uncaptured errors seen in all, and how many of them a read has already reported (see readBuffer). */
  private errorCount = 0;
  private errorsReported = 0;

  constructor(readonly device: GPUDevice, readonly adapterDescription: string, options: GpuContextOptions = {}) {
    this.software = options.software ?? false;
    this.ownsDevice = options.ownsDevice ?? true;
    this.subgroups = device.features.has('subgroups');
    this.shaderF16 = device.features.has('shader-f16');
    this.adapterFeatures = new Set(options.adapterFeatures ?? device.features);
    const limit = options.maxBufferBytes;
    if (limit !== undefined && !(Number.isInteger(limit) && limit >= 256 && limit % 16 === 0)) {
      throw new RangeError(`GpuContext maxBufferBytes must be a multiple of 16 of at least 256 (got ${limit})`);
    }
    this.bufferLimit = limit ?? null;
    this.live = this.ownsDevice ? null : new Set();
    this.uniformBuffer = this.newBuffer({ size: UNIFORM_SLOT * UNIFORM_SLOTS, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    device.addEventListener('uncapturederror', (e) => {
      const message = (e as GPUUncapturedErrorEvent).error.message;
      this.errorCount++;
      if (this.errors.length < 100) this.errors.push(message);
      console.error(`duet: WebGPU error: ${message}`);
    });
  }

  /** Dispatches recorded since creation (a work counter). */
  get dispatches(): number { return this.counters.dispatches; }

  /** A snapshot of the counters. */
  snapshot(): GpuCounters { return { ...this.counters }; }

  private newBuffer(descriptor: GPUBufferDescriptor): GPUBuffer {
    this.counters.buffersCreated++;
    return this.device.createBuffer(descriptor);
  }

  /** queue.writeBuffer, counted. Runs at the next submit, before the commands recorded for it. */
  writeBuffer(buffer: GPUBuffer, offset: number, data: ArrayBufferView): void {
    this.counters.uploadBytes += data.byteLength;
    this.device.queue.writeBuffer(buffer, offset, data.buffer, data.byteOffset, data.byteLength);
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
    this.forgetBindGroups(buffer);
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
    const buffer = this.track(this.newBuffer({ size, usage: usage | GPUBufferUsage.COPY_SRC, mappedAtCreation: true, label }));
    this.counters.uploadBytes += data.byteLength;
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
      if (!new RegExp(`\\bfn\\s+${entryPoint}\\s*\\(`).test(code)) throw new Error(`WGSL shader '${shaderName}' has no entry point '${entryPoint}'`);
      const module = this.device.createShaderModule({ code, label: shaderName });
      this.counters.pipelinesCreated++;
      p = this.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint, constants }, label: key });
      this.pipelines.set(key, p);
      this.kernelNames.set(p, `${shaderName}:${entryPoint}`);
    }
    return p;
  }

  /**
   * Records one dispatch. `buffers` bind to @group(0) @binding(0..n-1) in order; when `uniforms`
   * is given it binds at @binding(n) as a uniform block (at most 256 bytes).
   */
  dispatch(pipeline: GPUComputePipeline, buffers: GPUBuffer[], uniforms: ArrayBuffer | null,
    workgroups: [number, number?, number?]): void {
    const maxGroups = this.device.limits.maxComputeWorkgroupsPerDimension;
    const [x, y = 1, z = 1] = workgroups;
    if (x > maxGroups || y > maxGroups || z > maxGroups) {
      throw new Error(`dispatch of ${x}×${y}×${z} workgroups exceeds the device limit ${maxGroups} per dimension (${pipeline.label})`);
    }
    if (uniforms && uniforms.byteLength > UNIFORM_SLOT) throw new Error(`uniform block of ${uniforms.byteLength} bytes exceeds ${UNIFORM_SLOT}`);
    if (x === 0 || y === 0 || z === 0) return;
    let offset = -1;
    if (uniforms) {
      if (this.uniformUsed === UNIFORM_SLOTS) this.flush();
      offset = this.uniformUsed++ * UNIFORM_SLOT;
      new Uint8Array(this.uniformData, offset, uniforms.byteLength).set(new Uint8Array(uniforms));
    }
    const bindGroup = this.bindGroup(pipeline, buffers, offset);
    const pass = this.computePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
    this.counters.dispatches++;
    const name = this.kernelNames.get(pipeline) ?? pipeline.label;
    this.kernelDispatches.set(name, (this.kernelDispatches.get(name) ?? 0) + 1);
  }

  /**
   * The bind group of `buffers` (+ the uniform slot at `offset`, when ≥ 0) for `pipeline`: cached, so
   * a step that repeats the previous one's dispatches (same buffers, same slots) creates none.
   */
  private bindGroup(pipeline: GPUComputePipeline, buffers: GPUBuffer[], offset: number): GPUBindGroup {
    const ids = buffers.map((b) => this.bufferEntry(b).id);
    const key = `${pipeline.label}|${ids.join(',')}|${offset}`;
    let group = this.bindGroups.get(key);
    if (!group) {
      const entries: GPUBindGroupEntry[] = buffers.map((buffer, binding) => ({ binding, resource: { buffer } }));
      if (offset >= 0) entries.push({ binding: buffers.length, resource: { buffer: this.uniformBuffer, offset, size: UNIFORM_SLOT } });
      if (this.bindGroups.size >= BIND_GROUP_CACHE) this.clearBindGroups();
      group = this.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
      this.counters.bindGroupsCreated++;
      this.bindGroups.set(key, group);
      for (const b of buffers) this.bufferEntry(b).keys.add(key);
    }
    return group;
  }

  private bufferEntry(buffer: GPUBuffer): { id: number; keys: Set<string> } {
    let e = this.bufferIds.get(buffer);
    if (!e) { e = { id: this.nextBufferId++, keys: new Set() }; this.bufferIds.set(buffer, e); }
    return e;
  }

  private forgetBindGroups(buffer: GPUBuffer): void {
    const e = this.bufferIds.get(buffer);
    if (!e) return;
    for (const key of e.keys) this.bindGroups.delete(key);
    this.bufferIds.delete(buffer);
  }

  private clearBindGroups(): void {
    this.bindGroups.clear();
    // Ids stay valid; the key sets only name entries that may be gone (deleting those is harmless).
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
      this.writeBuffer(this.uniformBuffer, 0, new Uint8Array(this.uniformData, 0, this.uniformUsed * UNIFORM_SLOT));
    }
    this.device.queue.submit([this.encoder.finish()]);
    this.counters.submits++;
    this.encoder = null;
    this.uniformUsed = 0;
    for (const b of this.doomed) b.destroy();
    this.doomed = [];
  }

  /** The largest buffer that can also be bound whole as storage (or the maxBufferBytes option, when smaller). */
  get maxBufferBytes(): number {
    const device = Math.min(this.device.limits.maxBufferSize, this.device.limits.maxStorageBufferBindingSize);
    return this.bufferLimit === null ? device : Math.min(device, this.bufferLimit);
  }

  private checkSize(byteLength: number, label?: string): void {
    const max = this.maxBufferBytes;
    if (byteLength > max) {
      throw new Error(`GPU buffer ${label ?? ''} of ${byteLength} bytes exceeds the device's storage-buffer limit of ${max} bytes`);
    }
  }

  createBuffer(byteLength: number, label?: string): GPUBuffer {
    this.checkSize(byteLength, label);
    return this.track(this.newBuffer({
      size: Math.max(16, Math.ceil(byteLength / 16) * 16), label,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    }));
  }

  /**
   * Copies byteLength bytes of `src` at srcOffset to host memory, after all recorded work: one
   * submit and one host wait, through a staging buffer taken from (and given back to) the pool.
   * Rejects when the device reported an uncaptured error (a failed allocation, a validation error)
   * since the previous read: the work it read back may have been skipped, so its bytes cannot be
   * trusted. The error is reported once; later reads go on.
   */
  async readBuffer(src: GPUBuffer, srcOffset: number, byteLength: number): Promise<ArrayBuffer> {
    const size = Math.ceil(byteLength / 4) * 4;
    const slot = Math.max(256, 2 ** Math.ceil(Math.log2(Math.max(4, size))));
    const free = this.staging.get(slot);
    const staging = free?.pop() ?? this.newBuffer({ size: slot, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'read staging' });
    this.commandEncoder().copyBufferToBuffer(src, srcOffset, staging, 0, size);
    this.flush();
    this.counters.hostWaits++;
    this.counters.readbackBytes += size;
    let out: ArrayBuffer;
    try {
      await staging.mapAsync(GPUMapMode.READ, 0, size);
      out = staging.getMappedRange(0, size).slice(0, byteLength);
      staging.unmap();
    } catch (err) {
      staging.destroy();
      throw err;
    }
    const list = this.staging.get(slot) ?? [];
    if (list.length < STAGING_PER_SIZE) { list.push(staging); this.staging.set(slot, list); } else staging.destroy();
    this.throwNewErrors();
    return out;
  }

  private throwNewErrors(): void {
    const n = this.errorCount - this.errorsReported;
    if (n === 0) return;
    this.errorsReported = this.errorCount;
    const last = this.errors.length ? this.errors[this.errors.length - 1] : 'not kept';
    throw new Error(`WebGPU reported ${n} error${n > 1 ? 's' : ''} since the last read (the latest: ${last}); the GPU's results cannot be trusted`);
  }

  destroy(): void {
    for (const b of this.doomed) b.destroy();
    this.doomed = [];
    this.encoder = null;
    this.pass = null;
    this.uniformBuffer.destroy();
    for (const list of this.staging.values()) for (const b of list) b.destroy();
    this.staging.clear();
    this.bindGroups.clear();
    if (this.live) { for (const b of this.live) b.destroy(); this.live.clear(); } else this.device.destroy();
  }
}

/** Per-decoded-token averages of a decode phase's counters (the names `duet generate --json` and the bench print). */
export interface PerTokenCounters {
  submits_per_token: number;
  host_waits_per_token: number;
  readback_bytes_per_token: number;
  upload_bytes_per_token: number;
  dispatches_per_token: number;
  gpu_objects_created_per_token: number;
}

export function perTokenCounters(decode: GpuCounters, tokens: number): PerTokenCounters {
  const per = (n: number) => (tokens > 0 ? n / tokens : 0);
  return {
    submits_per_token: per(decode.submits),
    host_waits_per_token: per(decode.hostWaits),
    readback_bytes_per_token: per(decode.readbackBytes),
    upload_bytes_per_token: per(decode.uploadBytes),
    dispatches_per_token: per(decode.dispatches),
    gpu_objects_created_per_token: per(decode.buffersCreated + decode.bindGroupsCreated + decode.pipelinesCreated),
  };
}
