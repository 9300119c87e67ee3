// What the e2e numbers mean: speedups against full attention measured in the same run, the speedup
// the bytes read per decode step imply (decode at batch 1 is bound by memory traffic: every weight
// and every cached key/value is read once per token), and where DuoAttention crosses a target
// speedup (measured, from straight-line fits, and from the bytes model).
import { formatBytes } from '../attention/memory.js';
import type { HeadKinds } from '../attention/pattern.js';
import type { StreamingWindow } from '../backend/contract.js';
import type { ModelConfig } from '../model/config.js';
import { decodeWeightBytes, layersText } from './shapes.js';
import { rowBytes, type WeightDType } from '../model/quant.js';
import { kvRowBytes, type KvDType } from '../backend/kv-dtype.js';
import type { Crossover, E2eRow } from './types.js';

export function countHeads(kinds: HeadKinds): { retrieval: number; streaming: number } {
  let retrieval = 0, streaming = 0;
  for (const row of kinds) for (const r of row) (r ? retrieval++ : streaming++);
  return { retrieval, streaming };
}

/** K + V bytes per cached position of one head: full caches and streaming rings alike in the KV dtype. */
export function kvPositionBytes(headDim: number, kvDtype: KvDType): { full: number; ring: number } {
  return { full: 2 * kvRowBytes(headDim, kvDtype), ring: 2 * kvRowBytes(headDim, kvDtype) };
}

/**
 * Bytes one decode step reads at `context` cached tokens: the weights (as `dtype`) + K and V of every
 * head (retrieval heads' full caches and streaming heads' rings as `kvDtype`).
 */
export function decodeBytes(config: ModelConfig, heads: { retrieval: number; streaming: number }, context: number,
  window: StreamingWindow, layers = config.numLayers, dtype: WeightDType = 'f32', kvDtype: KvDType = 'f32'): number {
  const per = kvPositionBytes(config.headDim, kvDtype);
  const ring = Math.min(context, window.sink + window.recent);
  return decodeWeightBytes(config, layers, dtype) + per.full * heads.retrieval * context + per.ring * heads.streaming * ring;
}

/**
 * Fills prefill/decode speedups (full attention on the same main device and context ÷ row; for
 * decode, the full-attention steps interleaved with the row's when there are) and the bytes-model ideal.
 */
export function addSpeedups(rows: E2eRow[], config: ModelConfig, window: StreamingWindow, kindsOf: (label: string) => HeadKinds, dtype: WeightDType = 'f32'): void {
  for (const r of rows) {
    const ref = rows.find((f) => f.heads === 'full' && f.main_device === r.main_device && f.context === r.context && f.kv_dtype === r.kv_dtype);
    const ratio = (a: number | null | undefined, b: number | null) => (a && b ? a / b : null);
    r.prefill_speedup = ratio(ref?.prefill_ms, r.prefill_ms);
    r.decode_speedup = ratio(r.reference_decode_ms ?? ref?.decode_ms_per_token, r.decode_ms_per_token);
    const all = config.numLayers * config.numKvHeads;
    const full = decodeBytes(config, { retrieval: all, streaming: 0 }, r.context, window, config.numLayers, dtype, r.kv_dtype);
    r.ideal_decode_speedup = full / decodeBytes(config, countHeads(kindsOf(r.label.split('/')[0])), r.context, window, config.numLayers, dtype, r.kv_dtype);
  }
}

/** Least-squares line y = a + b·x. */
function fit(points: Array<[number, number]>): { a: number; b: number } | null {
  if (points.length < 2) return null;
  const n = points.length;
  const mx = points.reduce((s, p) => s + p[0], 0) / n, my = points.reduce((s, p) => s + p[1], 0) / n;
  let sxx = 0, sxy = 0;
  for (const [x, y] of points) { sxx += (x - mx) ** 2; sxy += (x - mx) * (y - my); }
  if (sxx === 0) return null;
  const b = sxy / sxx;
  return { a: my - b * mx, b };
}

/**
 * Context where (weights + N·k·C) = target·(weights + R·k·C + S·r·ring), i.e. where the bytes
 * read per token by full attention reach `target` times DuoAttention's (k: a full cache's bytes per
 * position, r: a ring's; ring: sink + recent).
 */
function bytesCrossover(weights: number, all: number, retrieval: number, streaming: number, per: { full: number; ring: number }, ring: number, target: number): number | null {
  const denom = (all - target * retrieval) * per.full;
  if (denom <= 0) return null;
  const c = ((target - 1) * weights + target * streaming * per.ring * ring) / denom;
  return c > 0 ? Math.ceil(c) : null;
}

export interface CrossoverInput {
  rows: E2eRow[];
  config: ModelConfig;
  /** The real model (all layers), when the bench ran fewer. */
  fullConfig: ModelConfig;
  window: StreamingWindow;
  kindsOf: (label: string) => HeadKinds;
  target?: number;
  /** Measured read rates (kernels suite): weights in GEMV, KV in the decode attention kernel. */
  rates?: { weightGbps: number; kvGbps: number } | null;
  /** How the matmul weights are stored (default f32): the bytes each step reads. */
  weights?: WeightDType;
}

export function crossovers(input: CrossoverInput): Crossover[] {
  const { rows, config, fullConfig, window } = input;
  const target = input.target ?? 1.5;
  const out: Crossover[] = [];
  const ring = window.sink + window.recent;
  const labels = [...new Set(rows.filter((r) => r.heads === 'duo').map((r) => r.label))];
  for (const label of labels) {
    const mine = rows.filter((r) => r.label === label && r.decode_ms_per_token !== null).sort((a, b) => a.context - b.context);
    if (mine.length === 0) continue;
    const { sparsity, placement, main_device, kv_dtype: kvDtype } = mine[0];
    if (mine.some((r) => r.kv_dtype !== kvDtype)) throw new Error(`crossovers: rows of ${label} mix KV dtypes (pass one dtype's rows at a time)`);
    const perPosition = kvPositionBytes(config.headDim, kvDtype);
    const ref = rows.filter((r) => r.heads === 'full' && r.main_device === main_device && r.decode_ms_per_token !== null);
    const measured = mine.find((r) => (r.decode_speedup ?? 0) >= target)?.context ?? null;
    const fd = fit(mine.map((r) => [r.context, r.decode_ms_per_token!]));
    // The reference line: the full-attention steps interleaved with this configuration's where there are.
    const ff = fit(mine.every((r) => r.reference_decode_ms !== null)
      ? mine.map((r) => [r.context, r.reference_decode_ms!])
      : ref.map((r) => [r.context, r.decode_ms_per_token!]));
    let fitted: number | null = null;
    // Only a rising full-attention line and a non-falling DuoAttention line say anything (noise can tilt short fits).
    if (fd && ff && ff.b > 0 && fd.b >= 0 && ff.b - target * fd.b > 0) {
      const c = (target * fd.a - ff.a) / (ff.b - target * fd.b);
      fitted = c > 0 ? Math.ceil(c) : null;
    }
    const heads = countHeads(input.kindsOf(label.split('/')[0]));
    const all = heads.retrieval + heads.streaming;
    const dtype = input.weights ?? 'f32';
    const weights = decodeWeightBytes(config, config.numLayers, dtype);
    const bytesHere = bytesCrossover(weights, all, heads.retrieval, heads.streaming, perPosition, ring, target);
    const scaleL = fullConfig.numLayers / config.numLayers;
    const bytesAll = bytesCrossover(decodeWeightBytes(fullConfig, fullConfig.numLayers, dtype), all * scaleL, heads.retrieval * scaleL, heads.streaming * scaleL, perPosition, ring, target);
    const lmShare = (config.vocabSize * rowBytes(dtype, config.hiddenSize)) / weights;
    const limit = all / heads.retrieval;
    let why = `sparsity ${sparsity}: each decode step reads ${formatBytes(weights)} of ${dtype} weights (${(lmShare * 100).toFixed(0)}% of it the LM head) `
      + `plus ${formatBytes(all * perPosition.full)} of ${kvDtype} KV per cached token under full attention; DuoAttention skips ${(sparsity * 100).toFixed(0)}% of the KV, `
      + `so its speedup approaches ${Number.isFinite(limit) ? `${limit.toFixed(2)}×` : 'no limit'} only where the KV outweighs the weights`;
    if (bytesHere === null) why += `: ${target}× is out of reach`;
    else why += `; by bytes, ${target}× comes at ${bytesHere} tokens with ${layersText(config.numLayers)}`;
    if (scaleL !== 1 && bytesAll !== null) why += ` and at ${bytesAll} tokens with all ${fullConfig.numLayers} layers (where the LM head weighs less)`;
    const rates = input.rates;
    if (rates && bytesHere !== null) {
      // Time per token ≈ weights / weight rate + KV / KV rate: the same crossover with the weights rescaled.
      const w = rates.kvGbps / rates.weightGbps;
      const timed = bytesCrossover(weights * w, all, heads.retrieval, heads.streaming, perPosition, ring, target);
      const timedAll = bytesCrossover(decodeWeightBytes(fullConfig, fullConfig.numLayers, dtype) * w, all * scaleL, heads.retrieval * scaleL, heads.streaming * scaleL, perPosition, ring, target);
      why += `; this machine's kernels read KV at ${rates.kvGbps.toFixed(1)} GB/s (decode attention) and weights at ${rates.weightGbps.toFixed(1)} GB/s (GEMV), `
        + `so a KV byte costs ${(1 / w).toFixed(1)}× a weight byte; weighting the bytes by those rates puts ${target}× at ${timed ?? '—'} tokens`
        + (scaleL !== 1 ? ` (${timedAll ?? '—'} with all ${fullConfig.numLayers} layers)` : '');
    }
    const line = (f: { a: number; b: number }) => `${f.a.toFixed(2)} ${f.b < 0 ? '−' : '+'} ${Math.abs(f.b * 1024).toFixed(3)}·(context/1K)`;
    const fitText = fd && ff ? `decode ms ≈ ${line(ff)} for full attention, ${line(fd)} for ${label}` : null;
    out.push({
      label, sparsity, placement, kv_dtype: kvDtype, target, measured_context: measured, fitted_context: fitted,
      bytes_context: bytesHere, bytes_context_all_layers: scaleL !== 1 ? bytesAll : bytesHere, why, fit: fitText,
    });
  }
  return out;
}
