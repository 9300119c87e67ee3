// loadModel for Node: model and pattern folders on disk or http(s) URLs, Dawn (the optional
// `webgpu` package, imported only when a GPU is asked for) and WebAssembly kernel threads.
import { totalmem } from 'node:os';
import { DuetModel } from '../api/model.js';
import type { ModelOptions } from '../api/model.js';
import type { HeadPattern, PatternFiles } from '../attention/pattern.js';
import { httpModelFiles } from '../browser/http-files.js';
import { DuetError } from '../errors.js';
import type { ModelFiles } from '../model/files.js';
import { nodeModelFiles } from './files.js';
import { createNodeGpu } from './gpu.js';
import { createNodeCpu, defaultThreads, startNodeKernelWorker } from './kernel-threads.js';

/** A model folder: a local path, an http(s) base URL, or a ModelFiles. */
export type ModelSource = string | URL | ModelFiles;
/** A pattern: a folder path or URL, a ModelFiles, or a parsed pattern. */
export type PatternSource = string | URL | PatternFiles | HeadPattern;

export interface NodeModelOptions extends Omit<ModelOptions, 'pattern'> {
  pattern?: PatternSource;
  /** WebAssembly kernel threads (default: every core). */
  threads?: number;
  /** Dawn backend to force ('vulkan' | 'opengles'); default: DUET_GPU_BACKEND or the first that works. */
  gpuBackend?: string;
}

export function files(source: string | URL | ModelFiles): ModelFiles {
  if (source instanceof URL) return source.protocol === 'file:' ? nodeModelFiles(source.pathname) : httpModelFiles(source.toString());
  if (typeof source === 'string') return /^https?:\/\//.test(source) ? httpModelFiles(source) : nodeModelFiles(source);
  return source;
}

export async function loadModel(source: ModelSource, options: NodeModelOptions = {}): Promise<DuetModel> {
  const { pattern, threads = defaultThreads(), gpuBackend, ...rest } = options;
  if (!(Number.isInteger(threads) && threads >= 1)) throw new DuetError('threads', `must be a positive integer (got ${threads})`);
  const patternFiles = pattern === undefined || (typeof pattern === 'object' && 'alphas' in pattern) ? pattern
    : files(pattern as string | URL | ModelFiles);
  // The loader refuses weights that would not fit this machine's memory before reading any.
  const checkpoint = { hostBytes: totalmem(), ...rest.checkpoint };
  return DuetModel.create(files(source), { id: typeof source === 'string' ? source : undefined, ...rest, checkpoint, pattern: patternFiles }, {
    acquireGpu: () => createNodeGpu({ backend: gpuBackend }),
    createCpu: () => createNodeCpu(threads),
    offloadThreads: threads > 1 ? { count: threads, startWorker: startNodeKernelWorker } : undefined,
  });
}

