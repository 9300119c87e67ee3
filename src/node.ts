// Duet's Node entry: everything the browser entry has, plus model and pattern folders on disk,
// Dawn (the optional `webgpu` package, imported only when a GPU is asked for) and WebAssembly
// kernel threads in worker_threads.
import { totalmem } from 'node:os';
import { DuetModel, type ModelOptions } from './api/model.js';
import type { HeadPattern, PatternFiles } from './attention/pattern.js';
import { httpModelFiles } from './browser/http-files.js';
import type { ModelFiles } from './model/files.js';
import { nodeModelFiles } from './node/files.js';
import { DuetError } from './errors.js';
import { createNodeGpu } from './node/gpu.js';
import { createNodeCpu, defaultThreads } from './node/kernel-threads.js';
import { chooseTrainingGpu, type TrainingDevice } from './api/device.js';
import { identifyHeadsOn, type HeadIdentification, type IdentifyOptions } from './api/identify.js';

export * from './api/public.js';
export { nodeModelFiles } from './node/files.js';
export { httpModelFiles } from './browser/http-files.js';
export { savePattern, PATTERN_FILES } from './node/pattern-files.js';
export { BENCH_SUITES, benchReportText, runBenchmark, writeBenchReport, type BenchmarkOptions, type BenchResults, type BenchSuite } from './node/bench.js';
export { trainModel, type TrainOptions, type TrainResult } from './node/train.js';
export { fallbackText, quantizeModel, type QuantizeOptions, type QuantizeResult } from './node/quantize.js';
export { DuetServer, type ServeOptions } from './server/server.js';
export { peersReportText, runPeersBenchmark, type PeerRow, type PeersBenchmarkOptions, type PeersResults } from './node/bench-peers.js';

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

function files(source: string | URL | ModelFiles): ModelFiles {
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
  });
}

export interface NodeIdentifyOptions extends IdentifyOptions {
  /** 'cpu' (default), 'gpu' (a WebGPU adapter, software or not) or 'auto' (a hardware adapter, else the CPU). */
  device?: TrainingDevice;
  gpuBackend?: string;
  notice?: (message: string) => void;
}

/** Finds the retrieval heads of a model folder (see IdentifyOptions); savePattern writes the result. */
export async function identifyHeads(source: string | URL | ModelFiles, options: NodeIdentifyOptions): Promise<HeadIdentification> {
  const { device, gpuBackend, notice = () => {}, ...rest } = options;
  const gpu = await chooseTrainingGpu(device, () => createNodeGpu({ backend: gpuBackend }), notice);
  try {
    return await identifyHeadsOn(files(source), rest, gpu);
  } finally {
    gpu?.destroy();
  }
}
