// `duet bench --suite offload` (or `duet bench --offload [K,L]`): one layer's decode attention with
// the KV cache on the main device against the same layer offloaded with MagicPIG, per context, on a
// real model's attention shape (src/bench/offload.ts measures). The main device is the CPU backend
// (device 'cpu', the default: the same threads on both sides) or a WebGPU adapter (device 'gpu':
// the full cache, the offloaded caches' static rings and the query hashing on the GPU, their host
// stores and sampled attention on the offload threads; no adapter is an error, never the CPU
// instead). The projections are timed on the main device too (the engine's GEMVs there). Writes
// offload.json and offload-decode.svg (ms per token vs context) atomically.
import { mkdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { createCpuBackend } from '../cpu/backend.js';
import { DuetError } from '../errors.js';
import { isSoftwareGpu, machineInfo } from '../bench/machine.js';
import type { Backend } from '../backend/contract.js';
import { GpuBackend } from '../gpu/backend.js';
import { createNodeGpu } from './gpu.js';
import { projectionsMsPerToken, runOffloadBench, type OffloadArmRow } from '../bench/offload.js';
import { defaultWeightDType } from '../engine/device-model.js';
import type { WeightDType } from '../model/quant.js';
import { shapeSpec } from '../bench/shapes.js';
import { parseModelConfig } from '../model/config.js';
import type { MachineInfo } from '../bench/types.js';
import { describeOffload, magicpigSettings, type MagicPigOptions } from '../kv/magicpig/settings.js';
import { OffloadThreads } from '../kv/magicpig/threads.js';
import { lineChart } from '../plot/svg.js';
import { writeFileAtomic } from './atomic.js';
import { claimOutputFolder } from './output-folder.js';
import { int, positiveInts } from './bench.js';
import { startNodeKernelWorker } from './kernel-threads.js';

/** What the suite writes (and all it replaces) in its folder. */
export const OFFLOAD_FILES = ['offload.json', 'offload-decode.svg'];

export interface OffloadBenchmarkOptions {
  /** Folder for offload.json and offload-decode.svg (created if missing; those two files are replaced). */
  out: string;
  /** A real model's shape (default llama-3.2-1b). */
  shape?: string;
  /** Contexts in tokens (default 4096, 16384, 32768, 65536). */
  contexts?: number[];
  /** MagicPIG's K, L (default: for the head size), sinks, local. */
  offload?: MagicPigOptions;
  /**
   * The main device (default 'cpu'): where the full-attention cache lives and the offloaded caches'
   * static rings and query hashing run. 'gpu' needs a WebGPU adapter (none: a DuetError on
   * `device`); a software one runs, and the results say so (machine.gpu_software).
   */
  device?: 'cpu' | 'gpu';
  /** Threads (default every core): the offload threads, and with device 'cpu' the CPU backend's kernel threads (full attention, the projections). */
  threads?: number;
  /** Storage of the random weights timed for the projections (default: the engine's default for the shape on the device: q8_0 or f32 on the CPU, f32 on a GPU). */
  weights?: WeightDType;
  decodeTokens?: number;
  warmupTokens?: number;
  seed?: number;
  command?: string;
  onProgress?: (done: number, total: number, detail: string) => void;
}

export interface OffloadResults {
  rows: OffloadArmRow[];
  settings: {
    shape: string; contexts: number[];
    /** The main device that ran the full arm and the offloaded arms' static rings and hashing (their sampled attention: the host's offload threads). */
    device: 'cpu' | 'gpu';
    threads: number; offload: string; decode_tokens: number; warmup_tokens: number; weights: WeightDType;
    /** Where the projections were timed (the main device's GEMVs, the same in every arm). */
    projections_device: 'cpu' | 'gpu';
    projections_ms_per_token: number;
  };
  machine: MachineInfo;
  files: string[];
}

export async function runOffloadBenchmark(o: OffloadBenchmarkOptions): Promise<OffloadResults> {
  const shapeName = o.shape ?? 'llama-3.2-1b';
  const config = parseModelConfig(shapeSpec(shapeName).config, `${shapeName} shape`);
  const contexts = positiveInts(o.contexts, [4096, 16384, 32768, 65536], 'contexts', 2);
  const threads = int(o.threads, 'threads', 1, availableParallelism());
  const device = o.device ?? 'cpu';
  if (device !== 'cpu' && device !== 'gpu') throw new DuetError('device', `must be cpu or gpu (got ${JSON.stringify(device)})`);
  const decodeTokens = int(o.decodeTokens, 'decodeTokens', 1, 16), warmupTokens = int(o.warmupTokens, 'warmupTokens', 0, 2);
  if (o.offload?.topk !== undefined) throw new DuetError('offload.topk', 'is not measured by the offload suite (it times the sampled attention)');
  const base = await magicpigSettings(o.offload ?? {}, config.headDim);
  // Checked before any work: only this suite's two files may be replaced.
  claimOutputFolder(o.out, { flag: 'out', what: 'offload benchmark results', owns: (n) => OFFLOAD_FILES.includes(n) });
  // The GPU before anything else: without one, device 'gpu' fails here (never runs on the CPU instead).
  let gpu: GpuBackend | null = null, gpuName: string | null = null;
  if (device === 'gpu') {
    const { gpu: ctx, reason } = await createNodeGpu();
    if (!ctx) throw new DuetError('device', `'gpu': no WebGPU adapter (${reason})`, 'unavailable');
    gpuName = ctx.adapterDescription;
    gpu = new GpuBackend(ctx);
  }
  let cpu: Awaited<ReturnType<typeof createCpuBackend>> | undefined, pool: OffloadThreads | undefined;
  const weights = o.weights ?? defaultWeightDType(config, device);
  let rows: OffloadArmRow[], projectionsMs = 0;
  try {
    mkdirSync(o.out, { recursive: true });
    // (With a GPU the CPU backend has nothing to run: the host's share is the offload threads'.)
    if (!gpu) cpu = await createCpuBackend(threads > 1 ? { threads, startWorker: startNodeKernelWorker } : {});
    pool = threads > 1 ? await OffloadThreads.create(threads, startNodeKernelWorker) : undefined;
    const main: Backend = gpu ?? cpu!;
    // The collision search both ways: the scan of every code, and MagicPIG's bucket tables.
    const arms = [{ label: 'offloaded, scan', magicpig: { ...base, threads: pool } }, { label: 'offloaded, tables', magicpig: { ...base, tables: true, threads: pool } }];
    o.onProgress?.(0, 1, `projections: one layer's GEMVs as ${weights}`);
    projectionsMs = await projectionsMsPerToken(main, config, weights, o.seed);
    rows = await runOffloadBench({ config, contexts, arms, main, decodeTokens, warmupTokens, seed: o.seed, projectionsMs, onProgress: o.onProgress });
  } finally { pool?.stop(); cpu?.destroy(); gpu?.destroy(); }
  const settings: OffloadResults['settings'] = { shape: shapeName, contexts, device, threads, offload: describeOffload(base), decode_tokens: decodeTokens,
    warmup_tokens: warmupTokens, weights, projections_device: device, projections_ms_per_token: projectionsMs };
  const machine = machineInfo(gpuName, gpuName === null ? "not used: device 'cpu' (every arm on the CPU)"
    : isSoftwareGpu(gpuName) ? 'software GPU: its timings mean nothing for GPU speed' : '');
  const files = OFFLOAD_FILES.map((n) => join(o.out, n));
  writeFileAtomic(files[0], `${JSON.stringify({ version: 1, created: new Date().toISOString(), command: o.command, machine, settings, rows }, null, 1)}\n`);
  const series = [...new Set(rows.map((r) => r.arm))].map((arm) => ({
    label: arm === 'full' ? `full attention (cache on the ${device === 'gpu' ? 'GPU' : 'CPU'})` : arm,
    points: rows.filter((r) => r.arm === arm).map((r): [number, number] => [r.context, r.decode_ms_per_token ?? r.attention_ms_per_token]),
  }));
  writeFileAtomic(files[1], lineChart(series, {
    title: `decode per token, ${shapeName} (${config.numLayers} layers, ${deviceText(device, null, threads)}${gpuName && isSoftwareGpu(gpuName) ? ', a software GPU' : ''})`,
    xLabel: 'context (tokens)', yLabel: `ms per decode token (projections ${weights}, ${projectionsMs.toFixed(0)} ms, + attention)`, logX: true, height: 440,
  }));
  return { rows, settings, machine, files };
}

/** The main device in words: 'CPU, 2 threads' or 'GPU <adapter>, 16 offload threads'. */
function deviceText(device: 'cpu' | 'gpu', gpu: string | null | undefined, threads: number): string {
  const t = `${threads} thread${threads > 1 ? 's' : ''}`;
  if (device !== 'gpu') return `CPU, ${t}`;
  return `main device GPU${gpu ? ` ${gpu}` : ''}${gpu && isSoftwareGpu(gpu) ? ' (a software GPU: its timings mean nothing)' : ''}, host ${t}`;
}

/** The rows as a table. */
export function offloadReportText(r: Pick<OffloadResults, 'rows' | 'settings'> & { machine?: Pick<MachineInfo, 'gpu'> }): string {
  const st = r.settings, device = st.device ?? 'cpu';
  const lines = [
    `${st.shape}, ${st.offload}, ${deviceText(device, r.machine?.gpu, st.threads)}; projections (${st.weights} weights, on the ${(st.projections_device ?? 'cpu').toUpperCase()}) ${st.projections_ms_per_token.toFixed(1)} ms/token in every arm`,
    'context  arm                 attention ms/tok  vs full  decode ms/tok  GiB read/token  sampled  first step ms/layer  store GiB/layer',
  ];
  for (const x of r.rows) {
    lines.push([String(x.context).padStart(7), x.arm.padEnd(18), x.attention_ms_per_token.toFixed(1).padStart(17), `${x.speedup.toFixed(2)}x`.padStart(8),
      (x.decode_ms_per_token === null ? '-' : x.decode_ms_per_token.toFixed(1)).padStart(14),
      (x.bytes_per_token / 2 ** 30).toFixed(3).padStart(15), (x.sampled_fraction === null ? '-' : `${(100 * x.sampled_fraction).toFixed(2)}%`).padStart(8),
      (x.first_step_ms === null ? '-' : x.first_step_ms.toFixed(0)).padStart(20), (x.cache_bytes_per_layer / 2 ** 30).toFixed(3).padStart(16)].join(' '));
  }
  lines.push('(attention: one layer measured, × the layer count, medians of interleaved decode steps; decode = projections + attention;');
  if (device === 'gpu') lines.push(' on the GPU: the projections, full attention, the static rings + hashing; each step timed to its output row read back; sampled attention on the host;');
  lines.push(' first step = centering + hashing the offloaded keys (+ tables), once;');
  lines.push(' bytes read: full = every K and V; offloaded = codes scanned or buckets visited + sampled K, V, norm + static K, V)');
  return lines.join('\n');
}
