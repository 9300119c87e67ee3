// The device for identification and training, which run their own kernels (not the engine's):
// 'cpu' (their default: the bundled model's recipe is defined on the CPU kernels), 'gpu' insists on
// a WebGPU adapter, 'auto' takes a hardware one and never a software renderer.
import { DuetError } from '../errors.js';
import type { GpuContext } from '../gpu/context.js';

export type TrainingDevice = 'cpu' | 'gpu' | 'auto';

export async function chooseTrainingGpu(device: TrainingDevice | undefined, acquire: () => Promise<{ gpu: GpuContext | null; reason: string }>,
  notice: (m: string) => void): Promise<GpuContext | null> {
  const d = device ?? 'cpu';
  if (!['cpu', 'gpu', 'auto'].includes(d)) throw new DuetError('device', `must be cpu, gpu or auto (got ${JSON.stringify(d)})`);
  if (d === 'cpu') return null;
  const { gpu, reason } = await acquire();
  if (gpu && gpu.software && d === 'auto') {
    notice(`the only WebGPU adapter is a software renderer (${gpu.adapterDescription}); running on the CPU, which is faster (device 'gpu' uses it anyway)`);
    gpu.destroy();
    return null;
  }
  if (gpu) return gpu;
  if (d === 'gpu') throw new DuetError('device', `'gpu': no WebGPU adapter (${reason})`, 'unavailable');
  notice(`no WebGPU adapter (${reason}); running on the CPU`);
  return null;
}
