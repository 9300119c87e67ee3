// WASM kernel threads in browsers: nested Web Workers (dist/web/kernel-worker.js) over the CPU
// worker's shared memory. Shared memory needs a cross-origin isolated page (COOP/COEP headers,
// which `duet web` sends); elsewhere the CPU backend stays on one thread.
import type { StartWorker } from '../cpu/threads.js';

/** Threads worth starting here: every core (capped), or 1 without cross-origin isolation. */
export function browserThreads(cap = 8): number {
  const isolated = (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === true;
  const cores = (globalThis.navigator as { hardwareConcurrency?: number } | undefined)?.hardwareConcurrency ?? 1;
  return isolated ? Math.max(1, Math.min(cap, cores)) : 1;
}

/** Starts kernel workers made by `make` (a module worker whose script calls serveKernelThread()). */
export function browserKernelStarter(make: () => Worker): StartWorker {
  return (init) => new Promise((resolve, reject) => {
    const w = make();
    w.onerror = (e) => reject(new Error(`kernel worker failed to start: ${e.message}`));
    w.onmessage = () => resolve({ terminate: () => w.terminate() });
    w.postMessage(init);
  });
}

/** Starts a kernel worker from the script next to the current one (a worker's own location). */
export const startBrowserKernelWorker: StartWorker = browserKernelStarter(
  () => new Worker(new URL('kernel-worker.js', (globalThis as unknown as { location: Location }).location.href), { type: 'module' }));
