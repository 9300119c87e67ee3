// The backends a named kernel runs on, for tests that check one kernel on all of them: the CPU on one
// thread and on three, the browser's CPU worker (over a MessageChannel) and the software GPU.
import type { Backend } from '../../src/backend/contract.ts';
import { createCpuBackend } from '../../src/cpu/backend.ts';
import { GpuBackend } from '../../src/gpu/backend.ts';
import type { GpuContext } from '../../src/gpu/context.ts';
import { startNodeKernelWorker } from '../../src/node/kernel-threads.ts';
import { WorkerCpuBackend } from '../../src/browser/worker-cpu.ts';
import { Random } from '../../src/tasks/random.ts';
import { channelWorker } from './channel-worker.ts';

export interface KernelBackend { name: string; gpu: boolean; make: () => Promise<Backend> }

/** Every backend; the GPU one (gpu: true) needs `gpu` non-null when made. */
export function kernelBackends(gpu: GpuContext | null): KernelBackend[] {
  return [
    { name: 'cpu', gpu: false, make: () => createCpuBackend() },
    { name: 'cpu × 3 threads', gpu: false, make: () => createCpuBackend({ threads: 3, startWorker: startNodeKernelWorker, minParallelWork: 0 }) },
    { name: 'cpu worker', gpu: false, make: () => WorkerCpuBackend.start(channelWorker().worker) },
    { name: 'gpu', gpu: true, make: async () => new GpuBackend(gpu!) },
  ];
}

/** n values uniform in (−scale, scale). */
export function uniform(r: Random, n: number, scale: number): Float32Array {
  return Float32Array.from({ length: n }, () => (2 * r.next() - 1) * scale);
}

/** Indices where a and b differ (bitwise, as f32), at most 5. */
export function differences(a: Float32Array, b: Float32Array): string[] {
  const out: string[] = [];
  if (a.length !== b.length) return [`lengths ${a.length} and ${b.length}`];
  for (let i = 0; i < a.length && out.length < 5; i++) if (!Object.is(a[i], b[i])) out.push(`[${i}] ${a[i]} vs ${b[i]}`);
  return out;
}
