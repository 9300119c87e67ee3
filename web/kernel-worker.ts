// Entry of a WASM kernel thread in browsers (dist/web/kernel-worker.js): receives the shared memory
// and module once, then serves its share of every job until stopped.
import { serveKernelJobs, type WorkerInit } from '../src/cpu/threads.js';

self.onmessage = (event: MessageEvent<WorkerInit>) => {
  self.onmessage = null;
  void serveKernelJobs(event.data, () => self.postMessage('ready'));
};
