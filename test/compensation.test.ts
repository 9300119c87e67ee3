// RazorAttention's compensation token: the CPU kernels (one thread and three) and, with an
// adapter, the WebGPU kernels against the float64 reference.
import { createCpuBackend } from '../src/cpu/backend.ts';
import { startNodeKernelWorker } from '../src/node/kernel-threads.ts';
import { compensationConformance } from './helpers/compensation-conformance.ts';

compensationConformance('cpu', createCpuBackend);
compensationConformance('cpu × 3 threads', () => createCpuBackend({ threads: 3, startWorker: startNodeKernelWorker, minParallelWork: 0 }));
