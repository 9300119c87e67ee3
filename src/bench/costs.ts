// Work of each kernel: flops and the bytes it must move at least once, for GFLOP/s, GB/s and the
// roofline. Attention counts 4 flops per (query head, key, dim): q·k and p·v, a multiply and an add each.
import type { StreamingWindow } from '../backend/contract.js';
import type { KernelRow, Probes } from './types.js';

export interface Work { flops: number; bytes: number }

export function gemmWork(rows: number, inDim: number, outDim: number): Work {
  return { flops: 2 * rows * inDim * outDim, bytes: (inDim * outDim + rows * (inDim + outDim)) * 4 };
}

/** Keys that query position i sees under full causal attention. */
const fullKeys = (i: number) => i + 1;

/** Keys that query position i sees in a streaming head: j ≤ i with j < sink or j > i − recent. */
export function streamingKeys(i: number, w: StreamingWindow): number {
  const sinks = Math.min(w.sink, i + 1);
  const recentStart = Math.max(w.sink, i - w.recent + 1);
  return sinks + Math.max(0, i - recentStart + 1);
}

export interface AttentionProblem {
  rows: number;
  pastLen: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** Streaming window, or null for full attention. */
  window: StreamingWindow | null;
}

export function attentionWork(p: AttentionProblem): Work {
  let keys = 0;
  for (let r = 0; r < p.rows; r++) {
    const i = p.pastLen + r;
    keys += p.window ? streamingKeys(i, p.window) : fullKeys(i);
  }
  const end = p.pastLen + p.rows;
  const cached = p.window ? Math.min(end, p.window.sink + p.window.recent + p.rows) : end;
  const kvBytes = 2 * p.numKvHeads * cached * p.headDim * 4;
  const qoBytes = 2 * p.rows * p.numHeads * p.headDim * 4;
  return { flops: 4 * p.numHeads * p.headDim * keys, bytes: kvBytes + qoBytes };
}

/** A kernel row from a median time, with its shares of `probes` (the roofline of the backend it ran on) when given. */
export function kernelRow(base: Pick<KernelRow, 'kernel' | 'backend' | 'shape' | 'context'> & Partial<KernelRow>, ms: number, work: Work,
  probes: Probes | null): KernelRow {
  const gflops = work.flops / ms / 1e6, gbps = work.bytes / ms / 1e6;
  let pctPeak: number | null = null, pctBw: number | null = null, pctRoof: number | null = null;
  if (probes) {
    pctPeak = gflops / probes.peak_gflops;
    pctBw = gbps / probes.bandwidth_gbps;
    const attainable = Math.min(probes.peak_gflops, (work.flops / work.bytes) * probes.bandwidth_gbps);
    pctRoof = gflops / attainable;
  }
  return {
    ...base, ms, flops: work.flops, bytes: work.bytes, gflops, gbps,
    pct_of_peak: pctPeak, pct_of_bandwidth: pctBw, pct_of_roofline: pctRoof,
  };
}
