// RazorAttention's compensation token: the CPU kernels (one thread and three) and, with an
// adapter, the WebGPU kernels against the float64 reference.
import { createCpuBackend } from '../src/cpu/backend.ts';
import { startNodeKernelWorker } from '../src/node/kernel-threads.ts';
import { compensationConformance } from './helpers/compensation-conformance.ts';

compensationConformance('cpu', createCpuBackend);
compensationConformance('cpu × 3 threads', () => createCpuBackend({ threads: 3, startWorker: startNodeKernelWorker, minParallelWork: 0 }));

// The WebGPU kernels, when an adapter exists (CI without one fails, as in gpu-backend.test.ts).
import { suite } from 'uvu';
import { createNodeGpu } from '../src/node/gpu.ts';
import { GpuBackend } from '../src/gpu/backend.ts';
import { gpuTests } from './helpers/gpu-skip.ts';

const { gpu, reason } = await createNodeGpu();
if (gpu) compensationConformance('gpu', async () => new GpuBackend(gpu));
else {
  const skipped = suite('gpu compensation');
  gpuTests(skipped, false, reason)('the WebGPU compensation kernels', () => {});
  skipped.run();
}
