// The benchmark as a library call (Node: it measures this process's memory and runs kernel
// threads in worker_threads): picks the GPU (never a software renderer under 'auto'), assembles
// the model (random weights with a real model's shapes, or a checkpoint cut to some layers), the
// gate values (a pattern, or random) and the window, then runs the suites and returns the results.
import { totalmem } from 'node:os';
import { loadPattern, type PatternFiles } from '../attention/pattern.js';
import { e2eSequenceLength } from '../bench/e2e.js';
import { isSoftwareGpu, machineInfo, processMemory } from '../bench/machine.js';
import { randomAlphas, randomWeights } from '../bench/random-weights.js';
import { renderText, writeReport } from '../bench/report.js';
import { runBench, SUITES, type BenchModel, type Suite } from '../bench/run.js';
import { benchShape, layersText } from '../bench/shapes.js';
import type { BenchResults } from '../bench/types.js';
import type { StreamingWindow } from '../backend/contract.js';
import type { DeviceChoice, Placement } from '../engine/engine.js';
import { DuetError } from '../errors.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import type { ModelFiles } from '../model/files.js';
import { isWeightDType, WEIGHT_DTYPES, type WeightDType } from '../model/quant.js';
import { kvDTypeOption } from '../engine/kv-dtype.js';
import type { KvDType } from '../backend/kv-dtype.js';
import { nodeModelFiles } from './files.js';
import { createNodeGpu } from './gpu.js';
import { defaultThreads, startNodeKernelWorker } from './kernel-threads.js';

export { SUITES as BENCH_SUITES, type Suite as BenchSuite } from '../bench/run.js';
export type { BenchResults } from '../bench/types.js';

/** Share of the machine's memory that a shape's f32 host weights may take when only GPU placements run. */
const HOST_WEIGHT_SHARE = 0.5;

export interface BenchmarkOptions {
  /** Default all: kernels (throughput against a measured roofline), e2e (prefill/decode per placement), memory. */
  suites?: Suite[];
  /** A checkpoint folder (or files); without one, random weights with the shapes of `shape`. */
  model?: string | ModelFiles;
  /** A real model's shapes for random weights (default llama-3.2-1b); see SHAPES in src/bench/shapes.ts. */
  shape?: string;
  /** Only the first layers (default: what fits the placements' memory for a shape, all of a checkpoint). */
  layers?: number;
  /** Gate values to binarise at each sparsity (a folder path, files or a parsed pattern); default random ones. */
  pattern?: string | PatternFiles;
  /** Context lengths in tokens (default 1024, 4096, 16384). */
  contexts?: number[];
  /** DuoAttention sparsities compared with full attention (default 0.25, 0.5, 0.75). */
  sparsities?: number[];
  /** Default every placement the device allows (split, gpu, cpu with a GPU; cpu without). */
  placements?: Placement[];
  /** 'auto' (default) skips software GPUs, 'gpu' insists (and labels software timings), 'cpu' never asks. */
  device?: DeviceChoice;
  /** Streaming window (default the pattern's, else sink 128, recent 256). */
  window?: Partial<StreamingWindow>;
  prefillChunk?: number;
  /** Longest prefill that is measured (longer ones are estimated); default 2048. */
  prefillMax?: number;
  decodeTokens?: number;
  warmupTokens?: number;
  seed?: number;
  /** WebAssembly kernel threads (default every core). */
  threads?: number;
  weights?: WeightDType;
  /** Full KV cache dtypes to compare (default f32): the e2e and memory suites run once per dtype. */
  kvDtypes?: KvDType[];
  /** Recorded in the results (e.g. the command line that ran this). */
  command?: string;
  notice?: (message: string) => void;
  /** `what`: a suite, "loading" (a checkpoint) or "random weights (…)". */
  onProgress?: (what: string, done: number, total: number, detail: string) => void;
}

export function positiveInts(value: number[] | undefined, fallback: number[], field: string, min: number): number[] {
  const list = value ?? fallback;
  if (!Array.isArray(list) || list.length === 0) throw new DuetError(field, 'must be a non-empty list');
  for (const n of list) if (!(Number.isInteger(n) && n >= min)) throw new DuetError(field, `${n} is not an integer ≥ ${min}`);
  return [...new Set(list)];
}

export function int(value: number | undefined, field: string, min: number, fallback: number): number {
  const v = value ?? fallback;
  if (!(Number.isInteger(v) && v >= min)) throw new DuetError(field, `must be an integer ≥ ${min} (got ${v})`);
  return v;
}

/** The GPU the bench may use: its name (null: none) and a note on why (none, or software). */
async function benchGpu(device: DeviceChoice): Promise<{ name: string | null; note: string }> {
  if (device === 'cpu') return { name: null, note: "device 'cpu'" };
  const { gpu, reason } = await createNodeGpu();
  if (!gpu) {
    if (device === 'gpu') throw new DuetError('device', `'gpu': no WebGPU adapter (${reason})`, 'unavailable');
    return { name: null, note: `no WebGPU adapter (${reason})` };
  }
  const name = gpu.adapterDescription;
  gpu.destroy();
  if (isSoftwareGpu(name) && device === 'auto') {
    return { name: null, note: `${name} is a software GPU: skipped (its timings say nothing about GPUs; device 'gpu' runs it anyway)` };
  }
  return { name, note: isSoftwareGpu(name) ? 'software GPU: its timings mean nothing for GPU speed' : '' };
}

export async function runBenchmark(o: BenchmarkOptions = {}): Promise<BenchResults> {
  const suites = o.suites ?? [...SUITES];
  if (!Array.isArray(suites) || suites.length === 0) throw new DuetError('suites', `must be a non-empty list of ${SUITES.join(', ')}`);
  for (const s of suites) if (!SUITES.includes(s)) throw new DuetError('suites', `${JSON.stringify(s)} is not one of ${SUITES.join(', ')}`);
  if (o.model !== undefined && o.shape !== undefined) throw new DuetError('shape', 'cannot be combined with model');
  const contexts = positiveInts(o.contexts, [1024, 4096, 16384], 'contexts', 2).sort((a, b) => a - b);
  const sparsities = o.sparsities ?? [0.25, 0.5, 0.75];
  for (const s of sparsities) if (!(s >= 0 && s <= 1)) throw new DuetError('sparsities', `${s} is not a sparsity in [0, 1]`);
  const device = o.device ?? 'auto';
  if (!['auto', 'cpu', 'gpu'].includes(device)) throw new DuetError('device', `must be auto, cpu or gpu (got ${JSON.stringify(device)})`);
  for (const p of o.placements ?? []) if (!['split', 'gpu', 'cpu'].includes(p)) throw new DuetError('placements', `${JSON.stringify(p)} is not split, gpu or cpu`);
  if (o.weights !== undefined && !isWeightDType(o.weights)) throw new DuetError('weights', `must be one of ${WEIGHT_DTYPES.join(', ')} (got ${JSON.stringify(o.weights)})`);
  const kvDtypes = o.kvDtypes ?? ['f32'];
  if (!Array.isArray(kvDtypes) || kvDtypes.length === 0) throw new DuetError('kvDtypes', 'must be a non-empty list of f32, f16, int8');
  for (const d of kvDtypes) kvDTypeOption(d, 'kvDtypes');
  if (new Set(kvDtypes).size !== kvDtypes.length) throw new DuetError('kvDtypes', `lists a dtype twice (${kvDtypes.join(', ')})`);
  const chunk = int(o.prefillChunk, 'prefillChunk', 1, 512);
  const prefillMax = int(o.prefillMax, 'prefillMax', 0, 2048);
  const decodeTokens = int(o.decodeTokens, 'decodeTokens', 1, 8);
  const warmupTokens = int(o.warmupTokens, 'warmupTokens', 0, 2);
  const seed = int(o.seed, 'seed', -Infinity, 0);
  const threads = int(o.threads, 'threads', 1, defaultThreads());
  const layers = o.layers === undefined ? undefined : int(o.layers, 'layers', 1, 0);
  const notice = o.notice ?? (() => {});
  const progress = o.onProgress ?? (() => {});

  const gpu = await benchGpu(device);
  let placements: Placement[];
  if (gpu.name) placements = o.placements ?? ['split', 'gpu', 'cpu'];
  else {
    const needGpu = o.placements?.filter((p) => p !== 'cpu') ?? [];
    if (needGpu.length) throw new DuetError('placements', `${needGpu.join(',')} need a GPU (${gpu.note})`, 'unavailable');
    placements = ['cpu'];
  }
  if (gpu.note && device !== 'cpu') notice(gpu.note);
  // Every DuoAttention configuration (sparsity × placement) decodes beside the full-attention session of its device.
  const positions = e2eSequenceLength(Math.max(...contexts), warmupTokens, decodeTokens, sparsities.length * placements.length);

  // The model: random weights with a real model's shapes, or a checkpoint.
  let model: BenchModel;
  const notes: string[] = [];
  let fullLayers: number;
  if (o.model === undefined) {
    const name = o.shape ?? 'llama-3.2-1b';
    const residency = { engines: sparsities.length ? 2 : 1, kvFactor: 1 + Math.max(0, ...sparsities.map((x) => 1 - x)) };
    // Without the cpu placement the CPU backend holds no weights: the host's memory bounds the layers.
    const hostBudget = placements.includes('cpu') ? undefined : HOST_WEIGHT_SHARE * totalmem();
    const shape = benchShape(name, { layers, positions, chunk, residency, hostBudget, weights: o.weights });
    const what = `random weights (${name}, ${layersText(shape.config.numLayers)})`;
    const weights = randomWeights(shape.config, seed, (d, t) => progress(what, d, t, ''), o.weights ?? 'keep');
    notes.push(`random weights with the shapes of ${shape.source}`, ...shape.notes);
    model = { source: `shape:${name}`, config: shape.config, fullConfig: shape.full, weights, alphas: [], pattern: '', window: { sink: 0, recent: 1 }, notes };
    fullLayers = shape.full.numLayers;
  } else {
    const files = typeof o.model === 'string' ? nodeModelFiles(o.model) : o.model;
    const source = typeof o.model === 'string' ? o.model : files.name;
    const ckpt = await loadCheckpoint(files, { weights: o.weights ?? 'keep', onProgress: (d, t) => progress('loading', d, t, '') });
    let config = ckpt.config, weights = ckpt.weights;
    fullLayers = config.numLayers;
    if (layers !== undefined) {
      if (layers > config.numLayers) throw new DuetError('layers', `${layers}: ${source} has ${config.numLayers} layers`);
      if (layers < config.numLayers) notes.push(`${layers} of ${config.numLayers} layers; times are for ${layersText(layers)} plus the embedding and LM head`);
      config = { ...config, numLayers: layers };
      weights = { ...weights, layers: weights.layers.slice(0, layers) };
    }
    if (config.maxPositionEmbeddings < positions) {
      notes.push(`max_position_embeddings raised from ${config.maxPositionEmbeddings} to ${positions} for the longest context`);
      config = { ...config, maxPositionEmbeddings: positions };
    }
    model = { source, config, fullConfig: { ...ckpt.config }, weights, alphas: [], pattern: '', window: { sink: 0, recent: 1 }, notes };
  }
  const { config } = model;
  let sink = o.window?.sink === undefined ? undefined : int(o.window.sink, 'window.sink', 0, 0);
  let recent = o.window?.recent === undefined ? undefined : int(o.window.recent, 'window.recent', 1, 1);
  if (o.pattern !== undefined) {
    const files = typeof o.pattern === 'string' ? nodeModelFiles(o.pattern) : o.pattern;
    const pattern = await loadPattern(files, fullLayers, config.numKvHeads);
    model.alphas = pattern.alphas.slice(0, config.numLayers);
    sink ??= pattern.sink; recent ??= pattern.recent;
    model.pattern = `${typeof o.pattern === 'string' ? o.pattern : files.name}${config.numLayers < fullLayers ? ` (first ${layersText(config.numLayers)})` : ''}`;
  } else {
    model.alphas = randomAlphas(config.numLayers, config.numKvHeads, seed);
    model.pattern = `random gate values (seed ${seed})`;
  }
  model.window = { sink: sink ?? 128, recent: recent ?? 256 };
  model.weightDType = o.weights;

  return runBench({
    suites, model, contexts, sparsities, placements, kvDtypes, chunk, prefillMax, decodeTokens, warmupTokens, seed,
    machine: machineInfo(gpu.name, gpu.note), command: o.command ?? 'runBenchmark',
    acquireGpu: gpu.name ? () => createNodeGpu() : undefined,
    threads, startWorker: startNodeKernelWorker, processMemory,
    onProgress: (suite, d, t, detail) => progress(suite, d, t, detail),
  });
}

/** Writes results.json and the SVG plots into `dir` (atomically); returns the files' paths, results.json first. */
export function writeBenchReport(results: BenchResults, dir: string): string[] {
  return writeReport(results, dir);
}

/** The results as text tables (what `duet bench` prints). */
export function benchReportText(results: BenchResults): string {
  return renderText(results);
}
