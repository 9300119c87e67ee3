// Entry points of the browser workers ('duet/worker'): a page that passes `cpuWorker` to loadModel
// starts a module worker whose script calls serveCpuBackend(). With cross-origin isolation that
// worker starts kernel threads from 'kernel-worker.js' next to its own script, each calling
// serveKernelThread().
import { serveKernelJobs, type WorkerInit } from './cpu/threads.js';

export { serveCpuBackend } from './browser/cpu-worker.js';

/** Serves the WebAssembly kernel jobs of one thread (call once in the kernel worker's script). */
export function serveKernelThread(): void {
  const scope = globalThis as unknown as { onmessage: ((e: MessageEvent<WorkerInit>) => void) | null; postMessage(m: string): void };
  scope.onmessage = (event) => {
    scope.onmessage = null;
    void serveKernelJobs(event.data, () => scope.postMessage('ready'));
  };
}
