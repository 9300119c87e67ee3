// WebGPU in the browser (navigator.gpu), with the adapter's storage limits requested.
import { GpuContext, isSoftwareAdapter, wantedFeatures } from '../gpu/context.js';

export async function createBrowserGpu(): Promise<{ gpu: GpuContext | null; reason: string }> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) return { gpu: null, reason: 'navigator.gpu is not available in this browser' };
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) return { gpu: null, reason: 'navigator.gpu.requestAdapter() returned no adapter' };
  const l = adapter.limits;
  const device = await adapter.requestDevice({
    requiredFeatures: wantedFeatures(adapter.features),
    requiredLimits: {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
    },
  });
  const info = adapter.info;
  const name = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ') || 'WebGPU adapter';
  const software = isSoftwareAdapter(info, (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter);
  return { gpu: new GpuContext(device, name, { software }), reason: '' };
}
