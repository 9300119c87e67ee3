// Duet's browser (and default) entry: load a model from a base URL (cached with the Cache API),
// from files the user picked, or from any ModelFiles; run it on navigator.gpu and WebAssembly.
// Nothing here imports Node modules or Dawn (the Node entry is src/node.ts).
import { createBrowserGpu } from './browser/gpu.js';
import { cachedModelFiles } from './browser/cached-files.js';
import { httpModelFiles, pickedModelFiles } from './browser/http-files.js';
import { browserKernelStarter, browserThreads } from './browser/kernel-threads.js';
import { WorkerCpuBackend } from './browser/worker-cpu.js';
import { createCpuBackend } from './cpu/backend.js';
import { DuetModel, type ModelOptions } from './api/model.js';
import type { HeadPattern, PatternFiles } from './attention/pattern.js';
import type { ModelFiles } from './model/files.js';

export * from './api/public.js';
export { cachedModelFiles, type CacheCounters } from './browser/cached-files.js';
export { httpModelFiles, pickedModelFiles } from './browser/http-files.js';

/** A model folder: a base URL (HF layout), the files of a picked folder, or a ModelFiles. */
export type ModelSource = string | URL | FileList | File[] | ModelFiles;
/** A pattern folder: a base URL, picked files, a ModelFiles, or a parsed pattern. */
export type PatternSource = string | URL | FileList | File[] | PatternFiles | HeadPattern;

export interface BrowserModelOptions extends Omit<ModelOptions, 'pattern'> {
  pattern?: PatternSource;
  /** Keep downloads in the Cache API (default true; a cache name picks the cache). */
  cache?: boolean | string;
  /**
   * Runs the WebAssembly kernels in a module worker whose script calls serveCpuBackend() from
   * 'duet/worker', so long CPU work never blocks the page. Give a function that starts it: it is
   * called when the engine is placed (a worker started earlier could say it is ready before anyone
   * listens). Default: the kernels run on the calling thread.
   */
  cpuWorker?: () => Worker;
  /**
   * Starts a kernel thread: a module worker whose script calls serveKernelThread() from
   * 'duet/worker'. With it, and cross-origin isolation, the offloaded caches (`offload`) split their
   * KV heads over one such worker per core but one (capped at 8); without it they run on this thread.
   */
  kernelWorker?: () => Worker;
}

function files(source: ModelSource | PatternFiles, o: BrowserModelOptions, step: 'download' | 'pattern'): ModelFiles {
  if (typeof source === 'string' || source instanceof URL) {
    const url = new URL(String(source), (globalThis as { location?: Location }).location?.href).toString();
    if (o.cache === false) return httpModelFiles(url);
    return cachedModelFiles(url, {
      cacheName: typeof o.cache === 'string' ? o.cache : undefined,
      onProgress: (done, total, file) => o.onProgress?.({ step, done, total, detail: file }),
    });
  }
  if (Array.isArray(source) || (typeof FileList !== 'undefined' && source instanceof FileList)) return pickedModelFiles(source as File[]);
  return source as ModelFiles;
}

export async function loadModel(source: ModelSource, options: BrowserModelOptions = {}): Promise<DuetModel> {
  const { pattern, cpuWorker, kernelWorker, ...rest } = options;
  const threads = browserThreads();
  const patternFiles = pattern === undefined || (typeof pattern === 'object' && 'alphas' in pattern) ? pattern
    : files(pattern as ModelSource | PatternFiles, options, 'pattern');
  return DuetModel.create(files(source, options, 'download'), { ...rest, pattern: patternFiles }, {
    acquireGpu: async () => {
      try { return await createBrowserGpu(); } catch (e) { return { gpu: null, reason: `WebGPU device request failed: ${(e as Error).message}` }; }
    },
    createCpu: async () => {
      if (cpuWorker) {
        try {
          return await WorkerCpuBackend.start(cpuWorker());
        } catch (e) {
          options.notice?.(`the WebAssembly worker did not start (${(e as Error).message ?? e}); the CPU kernels run on this thread`);
        }
      }
      return createCpuBackend();
    },
    offloadThreads: kernelWorker && threads > 1 ? { count: threads, startWorker: browserKernelStarter(kernelWorker) } : undefined,
  });
}
