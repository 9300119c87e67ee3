// Starts WASM kernel threads in Node (worker_threads running src/node/kernel-worker, bundled as
// dist/kernel-worker.js), and the CPU backend that uses them.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { createCpuBackend, type CpuBackend } from '../cpu/backend.js';
import type { StartWorker } from '../cpu/threads.js';

// Under tsx (tests) the sources run as .ts, and a worker only gets tsx's loader if it registers it
// before importing the entry (as in train-pool.ts).
const FROM_SOURCE = import.meta.url.endsWith('.ts');
const WORKER_URL = new URL(FROM_SOURCE ? './kernel-worker.ts' : './kernel-worker.js', import.meta.url);

export const startNodeKernelWorker: StartWorker = (init) => new Promise((resolve, reject) => {
  const w = FROM_SOURCE
    ? new Worker(`import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(WORKER_URL.href)}); })`, { eval: true, workerData: init })
    : new Worker(WORKER_URL, { workerData: init });
  w.once('error', reject);
  w.once('message', () => {
    // A thread parked in Atomics.wait must not keep the process alive.
    w.unref();
    resolve({ terminate: () => { void w.terminate(); } });
  });
});

/** Default thread count: every core the process may use. */
export function defaultThreads(): number { return availableParallelism(); }

/** The CPU backend with `threads` kernel threads (default: all cores). */
export function createNodeCpu(threads = defaultThreads()): Promise<CpuBackend> {
  return createCpuBackend({ threads, startWorker: startNodeKernelWorker });
}
