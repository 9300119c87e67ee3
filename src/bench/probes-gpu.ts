// The GPU's roofline for the kernels suite (wgsl/probe.wgsl), measured on the adapter the WGSL kernel
// rows run on, in the same run: a read of a buffer larger than a GPU's caches (bandwidth) and
// independent fused multiply-add chains on registers (f32 arithmetic peak).
import type { GpuContext } from '../gpu/context.js';
import { noiseArray } from './random-weights.js';
import { measureBatched } from './timing.js';
import type { Probes } from './types.js';

/** Bytes the bandwidth probe reads per pass (less where the device's buffer limits are smaller). */
const READ_BYTES = 256 * 1024 ** 2;
/** Threads per workgroup in wgsl/probe.wgsl. */
const WG = 256;
/** vec4 loads per thread of the read probe (sets its workgroup count). */
const LOADS_PER_THREAD = 16;
/** Workgroups of the peak probe: about two waves of threads on the largest GPUs. */
const PEAK_GROUPS = 2048;
/** Flops per thread per round of the peak probe: 8 chains × 4 lanes × (multiply + add). */
const PEAK_FLOPS_PER_ROUND = 64;
/** The peak probe's rounds grow until one dispatch lasts about this long (ms), so launch costs vanish. */
const PEAK_DISPATCH_MS = 2;
// The read probe's buffer holds random values: no GPU may compress it away as zeros.

function params(n4: number, iters: number): ArrayBuffer {
  return new Uint32Array([n4, iters, 0, 0]).buffer;
}

export async function runGpuProbes(gpu: GpuContext): Promise<Probes> {
  const readBytes = Math.floor(Math.min(READ_BYTES, gpu.maxBufferBytes) / 16) * 16;
  const n4 = readBytes / 16;
  const readGroups = Math.min(gpu.limits.maxComputeWorkgroupsPerDimension, Math.ceil(n4 / (WG * LOADS_PER_THREAD)));
  const src = gpu.bufferWith(noiseArray(readBytes / 4, 12345), GPUBufferUsage.STORAGE, 'bandwidth probe');
  const sink = gpu.createBuffer(Math.max(readGroups, PEAK_GROUPS) * WG * 4, 'probe sink');
  const sync = async () => { await gpu.readBuffer(sink, 0, 4); };
  try {
    const readPipeline = gpu.pipeline('probe', 'read_sum');
    const read = await measureBatched(() => gpu.dispatch(readPipeline, [src, sink], params(n4, 0), [readGroups]), sync);
    const readMoved = readBytes + readGroups * WG * 4;

    const peakPipeline = gpu.pipeline('probe', 'fma_chains');
    const peakOnce = (iters: number) => gpu.dispatch(peakPipeline, [sink], params(0, iters), [PEAK_GROUPS]);
    let iters = 32;
    const first = await measureBatched(() => peakOnce(iters), sync, { sampleMs: 0, minSamples: 1, budgetMs: 0 });
    iters = Math.min(8192, iters * Math.max(1, Math.ceil(PEAK_DISPATCH_MS / first.ms)));
    const peak = await measureBatched(() => peakOnce(iters), sync);
    const flops = PEAK_GROUPS * WG * iters * PEAK_FLOPS_PER_ROUND;
    return { bandwidth_gbps: readMoved / read.ms / 1e6, bandwidth_buffer_bytes: readBytes, peak_gflops: flops / peak.ms / 1e6 };
  } finally {
    gpu.release(src);
    gpu.release(sink);
  }
}
