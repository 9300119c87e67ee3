// Runs the suites a bench asks for on one model and gathers the results (results.json's shape).
import type { StreamingWindow } from '../backend/contract.js';
import type { Placement } from '../engine/engine.js';
import type { StartWorker } from '../cpu/threads.js';
import type { GpuContext } from '../gpu/context.js';
import type { ModelConfig } from '../model/config.js';
import type { ModelWeights } from '../model/weights.js';
import type { WeightDType } from '../model/quant.js';
import type { KvDType } from '../backend/kv-dtype.js';
import { addSpeedups, crossovers } from './analysis.js';
import { runE2e } from './e2e.js';
import { CpuPool, headConfigs, type EngineFactory } from './engines.js';
import { runGpuKernels } from './kernels-gpu.js';
import { runWasmKernels } from './kernels.js';
import { autoPlacementRows } from './auto.js';
import { runMemory, type ProcessMemory } from './memory.js';
import { decodeWeightBytes } from './shapes.js';
import type { BenchResults, KernelRow, MachineInfo } from './types.js';

export type Suite = 'kernels' | 'e2e' | 'memory';
export const SUITES: Suite[] = ['kernels', 'e2e', 'memory'];

export interface BenchModel {
  /** `shape:NAME` or the directory. */
  source: string;
  config: ModelConfig;
  /** The model with all its layers (config when nothing was cut). */
  fullConfig: ModelConfig;
  weights: ModelWeights;
  /** Storage of the matmul weights (--weights; undefined: the engine's default). */
  weightDType?: WeightDType;
  /** Gate values per layer per KV head (binarised at each sparsity). */
  alphas: number[][];
  pattern: string;
  window: StreamingWindow;
  notes: string[];
}

export interface BenchRunOptions {
  suites: Suite[];
  model: BenchModel;
  contexts: number[];
  sparsities: number[];
  /** Placements to run (only `cpu` without a GPU). */
  placements: Placement[];
  /** Full-cache dtypes: e2e and memory run once per dtype, in this order (default f32 only). */
  kvDtypes?: KvDType[];
  chunk: number;
  prefillMax: number;
  decodeTokens: number;
  warmupTokens: number;
  seed: number;
  machine: MachineInfo;
  command: string;
  /** A fresh GPU per engine, and one for the kernels suite (absent: CPU only). */
  acquireGpu?: () => Promise<{ gpu: GpuContext | null; reason: string }>;
  /** WASM kernel threads (default 1) and how to start them. */
  threads?: number;
  startWorker?: StartWorker;
  processMemory: () => ProcessMemory;
  onProgress?: (suite: string, done: number, total: number, detail: string) => void;
}

/** GB/s of the WASM GEMVs on the big matrices and of the decode attention kernel at the longest context. */
function readRates(rows: KernelRow[]): { weightGbps: number; kvGbps: number } | null {
  const gemv = rows.filter((k) => k.backend === 'wasm' && k.kernel === 'gemv' && /^(gate\/up_proj|down_proj|lm_head)/.test(k.shape));
  const attn = rows.filter((k) => k.backend === 'wasm' && k.kernel === 'attention-decode').sort((a, b) => (b.context ?? 0) - (a.context ?? 0));
  if (!gemv.length || !attn.length) return null;
  const weightBytes = gemv.reduce((a, k) => a + k.bytes, 0), weightMs = gemv.reduce((a, k) => a + k.ms, 0);
  return { weightGbps: weightBytes / weightMs / 1e6, kvGbps: attn[0].gbps };
}

export async function runBench(o: BenchRunOptions): Promise<BenchResults> {
  const { model } = o;
  const config = model.config;
  const heads = headConfigs(config, model.alphas, o.sparsities);
  const kindsOf = (label: string) => {
    const h = heads.find((x) => x.label === label);
    if (!h) throw new Error(`no head configuration "${label}"`);
    return h.kinds;
  };
  const kvDtypes = o.kvDtypes ?? ['f32'];
  const factory: EngineFactory = { config, weights: model.weights, weightDType: model.weightDType, window: model.window, pool: new CpuPool({ threads: o.threads, startWorker: o.startWorker }), acquireGpu: o.acquireGpu };
  const results: BenchResults = {
    version: 1, created: new Date().toISOString(), command: o.command, machine: o.machine,
    model: {
      source: model.source, layers: config.numLayers, layers_total: model.fullConfig.numLayers, hidden_size: config.hiddenSize,
      intermediate_size: config.intermediateSize, num_heads: config.numHeads, num_kv_heads: config.numKvHeads, head_dim: config.headDim,
      vocab_size: config.vocabSize, decode_weight_bytes: decodeWeightBytes(config, config.numLayers, model.weightDType ?? 'f32'), pattern: model.pattern, sink: model.window.sink, recent: model.window.recent,
    },
    notes: [...model.notes],
    settings: {
      suites: o.suites, contexts: o.contexts, sparsities: o.sparsities, placements: o.placements, prefill_chunk: o.chunk,
      prefill_max: o.prefillMax, kv_dtypes: kvDtypes, threads: o.threads ?? 1, decode_tokens: o.decodeTokens, warmup_tokens: o.warmupTokens, seed: o.seed,
    },
    probes: null, gpu_probes: null, kernels: [], e2e: [], memory: [], crossovers: [], plots: [],
  };
  const progress = (suite: string) => (d: number, t: number, detail: string) => o.onProgress?.(suite, d, t, detail);

  if (o.suites.includes('kernels')) {
    const wasm = await runWasmKernels({ config, contexts: o.contexts, sparsities: o.sparsities, window: model.window, chunk: o.chunk, threads: o.threads, startWorker: o.startWorker, onProgress: progress('kernels (wasm)') });
    results.probes = wasm.probes;
    results.kernels.push(...wasm.rows);
    results.notes.push(...wasm.notes);
    if (o.acquireGpu) {
      const { gpu, reason } = await o.acquireGpu();
      if (!gpu) results.notes.push(`WGSL kernels skipped: no WebGPU adapter (${reason})`);
      else {
        try {
          const g = await runGpuKernels({ gpu, config, contexts: o.contexts, window: model.window, chunk: o.chunk, onProgress: progress('kernels (webgpu)') });
          results.gpu_probes = g.probes;
          results.kernels.push(...g.rows);
        } finally { gpu.destroy(); }
      }
    }
  }
  // Per KV dtype its own engines (the pool shares the weights between them); speedups and crossovers
  // compare rows of one dtype only.
  const suffix = (kv: KvDType) => (kvDtypes.length > 1 ? ` (KV ${kv})` : '');
  if (o.suites.includes('e2e')) {
    for (const kvDtype of kvDtypes) {
      const rows = await runE2e({
        factory: { ...factory, kvDtype }, heads, placements: o.placements, contexts: o.contexts, chunk: o.chunk, prefillMax: o.prefillMax,
        decodeTokens: o.decodeTokens, warmupTokens: o.warmupTokens, seed: o.seed, onProgress: progress(`e2e${suffix(kvDtype)}`),
      });
      addSpeedups(rows, config, model.window, kindsOf, model.weightDType);
      results.e2e.push(...rows);
      results.crossovers.push(...crossovers({ rows, config, fullConfig: model.fullConfig, window: model.window, kindsOf, rates: readRates(results.kernels), weights: model.weightDType }));
    }
    if (o.acquireGpu && o.placements.includes('split') && o.placements.includes('gpu')) {
      o.onProgress?.('auto placement', 0, 1, 'calibrating');
      results.auto_placement = await autoPlacementRows({
        config, heads, window: model.window, e2e: results.e2e.filter((r) => r.kv_dtype === kvDtypes[0]), acquireGpu: o.acquireGpu, cpu: () => factory.pool.lease(),
      });
      o.onProgress?.('auto placement', 1, 1, 'done');
    }
  }
  if (o.suites.includes('memory')) {
    for (const kvDtype of kvDtypes) {
      results.memory.push(...await runMemory({
        factory: { ...factory, kvDtype }, heads, placements: o.placements, contexts: o.contexts, processMemory: o.processMemory, onProgress: progress(`memory${suffix(kvDtype)}`),
      }));
    }
  }
  factory.pool.close();
  return results;
}
