// WebGPU in Node through Dawn (the `webgpu` npm package). Tries the backends a headless Linux box
// has: Vulkan (a real GPU, or SwiftShader when VK_ICD_FILENAMES points at it), then OpenGL ES over
// Mesa (llvmpipe), which only offers a "compatibility" adapter.
// `webgpu` is imported on first use, so a Node user without it (an optional dependency) runs on the CPU.
import { GpuContext, isSoftwareAdapter, wantedFeatures, type OptionalFeature } from '../gpu/context.js';
import { GpuBackend } from '../gpu/backend.js';

let globalsInstalled = false;
/**
 * Dawn's `create()` instance must outlive its devices: if it is garbage-collected, the next
 * mapAsync aborts the process (std::system_error). Each context keeps its instance reachable.
 */
const instances = new WeakMap<GpuContext, unknown>();

export interface NodeGpuOptions {
  /** Dawn backend to force ('vulkan' | 'opengles'); default: DUET_GPU_BACKEND or auto. */
  backend?: string;
  /** Largest buffer the context creates or binds (below the device's limits; see GpuContextOptions). */
  maxBufferBytes?: number;
  /**
   * Optional features (subgroups, shader-f16) are requested whenever the adapter offers them; set
   * one to false to leave it off (the kernels then use their fallbacks).
   */
  features?: Partial<Record<OptionalFeature, boolean>>;
}

/** Returns a GPU context, or null with the reason when no adapter is available. */
export async function createNodeGpu(options: NodeGpuOptions = {}): Promise<{ gpu: GpuContext | null; reason: string }> {
  let dawn: typeof import('webgpu');
  try {
    dawn = await import('webgpu');
  } catch (err) {
    return { gpu: null, reason: `the optional 'webgpu' package (Dawn) is not installed (${(err as Error).message.split('\n')[0]})` };
  }
  const { create, globals } = dawn;
  if (!globalsInstalled) { Object.assign(globalThis, globals); globalsInstalled = true; }
  const wanted = options.backend ?? process.env.DUET_GPU_BACKEND;
  const attempts: Array<{ backend: string | null; featureLevel: 'core' | 'compatibility' }> = wanted
    ? [{ backend: wanted, featureLevel: wanted === 'opengles' ? 'compatibility' : 'core' }]
    : [{ backend: null, featureLevel: 'core' }, { backend: 'opengles', featureLevel: 'compatibility' }];
  const failures: string[] = [];
  for (const { backend, featureLevel } of attempts) {
    if (backend === 'opengles' && !process.env.EGL_PLATFORM) process.env.EGL_PLATFORM = 'surfaceless';
    try {
      const navigatorGpu = create(backend ? [`backend=${backend}`] : []);
      const adapter = await navigatorGpu.requestAdapter({ featureLevel, powerPreference: 'high-performance' });
      if (!adapter) { failures.push(`${backend ?? 'default'}: no adapter`); continue; }
      const l = adapter.limits;
      const device = await adapter.requestDevice({
        requiredFeatures: wantedFeatures(adapter.features, options.features),
        requiredLimits: {
          maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
          maxBufferSize: l.maxBufferSize,
          maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
          maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
          maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
          maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
          maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
        },
      });
      // (GpuContext logs and records uncaptured errors.)
      const info = adapter.info;
      const name = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ') || 'unknown adapter';
      const software = isSoftwareAdapter(info, (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter);
      const extras = [...device.features].filter((f) => f === 'subgroups' || f === 'shader-f16');
      const gpu = new GpuContext(device, `${name} (${[`${backend ?? 'default'} backend`, featureLevel, ...extras].join(', ')})`, { software, maxBufferBytes: options.maxBufferBytes, adapterFeatures: adapter.features });
      instances.set(gpu, { navigatorGpu, adapter });
      return { gpu, reason: '' };
    } catch (err) {
      failures.push(`${backend ?? 'default'}: ${(err as Error).message}`);
    }
  }
  return { gpu: null, reason: failures.join('; ') };
}

/** A GPU Backend over Dawn, or null with the reason when no adapter is available. */
export async function createNodeGpuBackend(options: NodeGpuOptions = {}): Promise<{ backend: GpuBackend | null; reason: string }> {
  const { gpu, reason } = await createNodeGpu(options);
  return { backend: gpu ? new GpuBackend(gpu) : null, reason };
}
