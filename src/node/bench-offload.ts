// `duet bench --suite offload` (or `duet bench --offload [K,L]`): one layer's decode attention with
// the KV cache on the main device against the same layer offloaded with MagicPIG, per context, on a
// real model's attention shape (src/bench/offload.ts measures), on the CPU with the same threads on
// both sides. Writes offload.json and offload-decode.svg (ms per token vs context) atomically.
import { mkdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { createCpuBackend } from '../cpu/backend.js';
import { DuetError } from '../errors.js';
import { machineInfo } from '../bench/machine.js';
import { runOffloadBench, type OffloadArmRow } from '../bench/offload.js';
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
  /** Threads on both sides (default every core). */
  threads?: number;
  decodeTokens?: number;
  warmupTokens?: number;
  seed?: number;
  command?: string;
  onProgress?: (done: number, total: number, detail: string) => void;
}

export interface OffloadResults {
  rows: OffloadArmRow[];
  settings: { shape: string; contexts: number[]; threads: number; offload: string; decode_tokens: number; warmup_tokens: number };
  machine: MachineInfo;
  files: string[];
}

export async function runOffloadBenchmark(o: OffloadBenchmarkOptions): Promise<OffloadResults> {
  const shapeName = o.shape ?? 'llama-3.2-1b';
  const config = parseModelConfig(shapeSpec(shapeName).config, `${shapeName} shape`);
  const contexts = positiveInts(o.contexts, [4096, 16384, 32768, 65536], 'contexts', 2);
  const threads = int(o.threads, 'threads', 1, availableParallelism());
  const decodeTokens = int(o.decodeTokens, 'decodeTokens', 1, 16), warmupTokens = int(o.warmupTokens, 'warmupTokens', 0, 2);
  if (o.offload?.topk !== undefined) throw new DuetError('offload.topk', 'is not measured by the offload suite (it times the sampled attention)');
  const base = await magicpigSettings(o.offload ?? {}, config.headDim);
  // Checked before any work: only this suite's two files may be replaced.
  claimOutputFolder(o.out, { flag: 'out', what: 'offload benchmark results', owns: (n) => OFFLOAD_FILES.includes(n) });
  mkdirSync(o.out, { recursive: true });
  const cpu = await createCpuBackend(threads > 1 ? { threads, startWorker: startNodeKernelWorker } : {});
  const pool = threads > 1 ? await OffloadThreads.create(threads, startNodeKernelWorker) : undefined;
  let rows: OffloadArmRow[];
  try {
    // The collision search both ways: the scan of every code, and MagicPIG's bucket tables.
    const arms = [{ label: 'offloaded, scan', magicpig: { ...base, threads: pool } }, { label: 'offloaded, tables', magicpig: { ...base, tables: true, threads: pool } }];
    rows = await runOffloadBench({ config, contexts, arms, cpu, decodeTokens, warmupTokens, seed: o.seed, onProgress: o.onProgress });
  } finally { pool?.stop(); cpu.destroy(); }
  const settings = { shape: shapeName, contexts, threads, offload: describeOffload(base), decode_tokens: decodeTokens, warmup_tokens: warmupTokens };
  const machine = machineInfo(null, 'not used: both sides run on the CPU');
  const files = OFFLOAD_FILES.map((n) => join(o.out, n));
  writeFileAtomic(files[0], `${JSON.stringify({ version: 1, created: new Date().toISOString(), command: o.command, machine, settings, rows }, null, 1)}\n`);
  const series = [...new Set(rows.map((r) => r.arm))].map((arm) => ({
    label: arm === 'full' ? 'full attention (cache on the main device)' : arm,
    points: rows.filter((r) => r.arm === arm).map((r): [number, number] => [r.context, r.attention_ms_per_token]),
  }));
  writeFileAtomic(files[1], lineChart(series, {
    title: `decode attention per token, ${shapeName} (${config.numLayers} layers, CPU, ${threads} thread${threads > 1 ? 's' : ''})`,
    xLabel: 'context (tokens)', yLabel: 'ms per token (attention only)', logX: true, height: 440,
  }));
  return { rows, settings, machine, files };
}

/** The rows as a table. */
export function offloadReportText(r: Pick<OffloadResults, 'rows' | 'settings'>): string {
  const lines = [
    `${r.settings.shape}, ${r.settings.offload}, ${r.settings.threads} thread${r.settings.threads > 1 ? 's' : ''}; attention only, all layers`,
    'context  arm                 ms/token  vs full  GiB read/token  sampled  first step ms/layer  store GiB/layer',
  ];
  for (const x of r.rows) {
    lines.push([String(x.context).padStart(7), x.arm.padEnd(18), x.attention_ms_per_token.toFixed(1).padStart(9), `${x.speedup.toFixed(2)}x`.padStart(8),
      (x.bytes_per_token / 2 ** 30).toFixed(3).padStart(15), (x.sampled_fraction === null ? '-' : `${(100 * x.sampled_fraction).toFixed(2)}%`).padStart(8),
      (x.first_step_ms === null ? '-' : x.first_step_ms.toFixed(0)).padStart(20), (x.cache_bytes_per_layer / 2 ** 30).toFixed(3).padStart(16)].join(' '));
  }
  lines.push('(one layer measured, × the layer count; medians of interleaved decode steps; first step = centering + hashing the offloaded keys (+ tables), once;');
  lines.push(' bytes read: full = every K and V; offloaded = codes scanned or buckets visited + sampled K, V, norm + static K, V)');
  return lines.join('\n');
}
