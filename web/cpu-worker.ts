// Entry of the CPU worker (dist/web/cpu-worker.js): the SIMD WebAssembly kernels, off the page's thread.
import { serveCpuBackend } from 'duet/worker';

serveCpuBackend();
