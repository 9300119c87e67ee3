// The offload suite: one layer's decode attention with its KV cache on the main device (full
// attention, the main device's kernel) against the same layer offloaded with MagicPIG (sampled
// attention over the host store, src/kv/magicpig/method.ts), per context, on random keys.
//
// Both sides are KV method caches driven as the engine drives them (attend the decode row, then
// append it), created on the same main device (the CPU backend, or a GPU backend: then the full
// cache lives on the GPU, and so do the offloaded caches' static rings and query hashing, while
// their host stores and sampled attention run on the offload threads, as in the engine's GPU
// placements), one layer of a real model's attention shape; a token's attention is that times the
// layer count. The caches are filled by appends of random rows (no prefill attention, which at 64K
// would take minutes and does not change a decode step's cost). Keys are uniform noise plus a
// per-head offset (real keys share a mean direction, which MagicPIG's centering removes), so the
// sampled fraction is measured, not assumed. The first offloaded step centers and hashes every
// offloaded key (MagicPIG does that on the GPU after prefill); it is timed apart. Decode steps alternate between the two sides, so
// that a slow spell of a shared machine hits both alike; a row reports medians.
//
// Bytes read per token and layer: full attention reads every key and value; the offloaded side
// reads every offloaded key's codes (the collision scan), the sampled keys' key, value and norm
// (per query: a GQA group gathers per query), and the static tokens' keys and values.
import type { Backend } from '../backend/contract.js';
import { fullMethod } from '../kv/full/method.js';
import type { KvGroupCache, KvGroupShape, KvSettings } from '../kv/method.js';
import { magicpigMethod } from '../kv/magicpig/method.js';
import { codeStride } from '../kv/magicpig/params.js';
import type { MagicPigSettings } from '../kv/magicpig/settings.js';
import type { ModelConfig } from '../model/config.js';
import type { WeightDType } from '../model/quant.js';
import { asPacked, type WeightMatrix } from '../model/weights.js';
import { noiseArray, randomWeights } from './random-weights.js';
import { measure, median } from './timing.js';

export interface OffloadBenchOptions {
  config: ModelConfig;
  contexts: number[];
  /** The offloaded arms: a label and checked settings with the module (and threads, to split heads as the CPU backend does). */
  arms: Array<{ label: string; magicpig: MagicPigSettings }>;
  /**
   * The main device every arm's cache is created on: the full cache, and the offloaded caches'
   * static rings and hashing (their host stores are WebAssembly memories either way). The decode
   * row's q, k, v are uploaded to it.
   */
  main: Backend;
  /** Timed decode steps per side and context (default 16), after `warmupTokens` untimed (default 2). */
  decodeTokens?: number;
  warmupTokens?: number;
  seed?: number;
  /** Everything but attention per token (projectionsMsPerToken), added to each row's decode_ms_per_token. */
  projectionsMs?: number;
  onProgress?: (done: number, total: number, detail: string) => void;
}

export interface OffloadArmRow {
  /** 'full' or the offloaded arm's label. */
  arm: string;
  context: number;
  /** One layer's decode attention (attend + append), median ms. */
  ms_per_layer: number;
  /** × the layer count: the attention part of a decode token. */
  attention_ms_per_token: number;
  /** Full attention's ms ÷ this arm's (> 1: faster than full attention). */
  speedup: number;
  /** Bytes read per token (all layers). */
  bytes_per_token: number;
  /** projections_ms_per_token + attention_ms_per_token: a decode token (null when the projections were not measured). */
  decode_ms_per_token: number | null;
  /** Mean fraction of the offloaded keys the queries sampled per step (null: full attention). */
  sampled_fraction: number | null;
  /** The first offloaded step: centering and hashing the layer's offloaded keys (and building tables); MagicPIG does it on the GPU. */
  first_step_ms: number | null;
  /** Bytes of one layer's cache (full: K and V, on the main device; offloaded: the whole store, host and main device). */
  cache_bytes_per_layer: number;
  decode_ms_samples: number[];
}

/**
 * ms per decode token of everything but attention, the same in every arm: one layer's seven
 * projections (random weights stored as `dtype`, the first norm folded in as the engine does) ×
 * the layer count, plus the LM head; medians of repeated single-row GEMVs on `be` (the main
 * device: the CPU backend, or a GPU, where each repetition ends with a one-value readback that
 * waits for its GEMVs).
 */
export async function projectionsMsPerToken(be: Backend, config: ModelConfig, dtype: WeightDType, seed = 0): Promise<number> {
  const { hiddenSize: Hd, intermediateSize: I, numHeads, numKvHeads, headDim: D, vocabSize: V, numLayers } = config;
  const w = randomWeights({ ...config, numLayers: 1 }, seed, undefined, dtype), l = w.layers[0];
  // (A GPU gets every matrix through uploadWeight, as the engine places weights: one larger than its buffer limits is split by rows.)
  const up = (m: WeightMatrix, inDim: number, outDim: number) => (be.kind === 'gpu' ? be.uploadWeight(asPacked(m, outDim, inDim))
    : m instanceof Float32Array ? be.upload(m) : be.uploadWeight(m));
  const mats: Array<[WeightMatrix, number, number]> = [[l.wq, Hd, numHeads * D], [l.wk, Hd, numKvHeads * D], [l.wv, Hd, numKvHeads * D],
    [l.wo, numHeads * D, Hd], [l.wGate, Hd, I], [l.wUp, Hd, I], [l.wDown, I, Hd]];
  const layer = mats.map(([m, inDim, outDim]) => ({ w: up(m, inDim, outDim), inDim, outDim }));
  const head = { w: up(w.lmHead, Hd, V), inDim: Hd, outDim: V };
  const x = be.upload(noiseArray(Math.max(Hd, I, numHeads * D), seed + 3)), out = be.alloc(Math.max(V, I, Hd));
  const norm = { weight: be.upload(l.inputNorm), eps: config.rmsNormEps };
  try {
    const run = (ms: typeof layer) => async () => {
      for (const m of ms) be.matmul(out, x, m.w, null, 1, m.inDim, m.outDim, false, 0, m.inDim === Hd ? norm : undefined);
      await be.read(out, 0, 1);
    };
    const layerMs = await measure(run(layer), { warmup: 2, minReps: 5, budgetMs: 1500 });
    const headMs = await measure(run([head]), { warmup: 1, minReps: 3, budgetMs: 1000 });
    return layerMs * numLayers + headMs;
  } finally {
    for (const t of [...layer.map((m) => m.w), head.w, x, out, norm.weight]) be.free(t);
  }
}

/** Rows appended per fill call (keeps the upload buffers small). */
const FILL_CHUNK = 2048;

export async function runOffloadBench(o: OffloadBenchOptions): Promise<OffloadArmRow[]> {
  const { config, main: be } = o;
  const decode = o.decodeTokens ?? 16, warmup = o.warmupTokens ?? 2, seed = o.seed ?? 0;
  const H = config.numKvHeads, G = config.numHeads / config.numKvHeads, D = config.headDim, layers = config.numLayers;
  const shape: KvGroupShape = { numKvHeads: H, group: G, headDim: D, layer: 0 };
  const base: KvSettings = { kvDtype: 'f32', window: { sink: 0, recent: 1 }, compensation: false };
  const offsets = noiseArray(H * D, seed + 7).map((x) => 0.5 * x);
  const keyRows = (rows: number, at: number) => {
    const k = noiseArray(rows * H * D, seed + 1000 + at);
    for (let i = 0; i < k.length; i++) k[i] += offsets[i % (H * D)];
    return k;
  };
  const rows: OffloadArmRow[] = [];
  const total = o.contexts.length * (o.arms.length + 1);
  let done = 0;
  for (const n of o.contexts) {
    const capacity = n + warmup + decode + 1;
    const caches: Array<{ arm: string; cache: KvGroupCache; s?: MagicPigSettings }> = [{ arm: 'full', cache: fullMethod.create(be, shape, capacity, base) }];
    try {
      for (const a of o.arms) caches.push({ arm: a.label, cache: magicpigMethod.create(be, shape, capacity, { ...base, magicpig: a.magicpig }), s: a.magicpig });
      // The methods measured ignore append's queries (a method that scores keys, like locret, would not).
      const qFill = be.alloc(FILL_CHUNK * H * G * D);
      for (let at = 0; at < n; at += FILL_CHUNK) {
        const r = Math.min(FILL_CHUNK, n - at);
        const k = be.upload(keyRows(r, at)), v = be.upload(noiseArray(r * H * D, seed + 5000 + at));
        for (const c of caches) await c.cache.append(k, v, r, at, qFill);
        be.free(k); be.free(v);
        o.onProgress?.(done, total, `context ${n}: filled ${Math.min(n, at + r)} rows`);
      }
      const gpu = be.kind === 'gpu';
      // A GPU's fill (full attention's appends are recorded, not run) completes before the first step: a read waits for it.
      if (gpu) await be.read(qFill, 0, 1);
      be.free(qFill);
      const step = async (cache: KvGroupCache, pastLen: number): Promise<number> => {
        const q = be.upload(noiseArray(H * G * D, seed + 9000 + pastLen)), k = be.upload(keyRows(1, pastLen + 1e6));
        const v = be.upload(noiseArray(H * D, seed + 7000 + pastLen)), out = be.alloc(H * G * D);
        try {
          // (The uploads are submitted before the timed span.)
          be.flush();
          const t0 = performance.now();
          await cache.attend(out, q, k, v, 1, pastLen);
          await cache.append(k, v, 1, pastLen, q);
          // On a GPU, full attention's attend and append only record commands, and an offloaded
          // cache's step leaves the output's upload and its ring append queued (its promises resolve
          // after its one readback): reading the output row back waits for all of that step's GPU
          // work, so it is inside the timed span, in every arm alike (one small readback per step
          // that the engine does not make: its next layer follows on the GPU).
          if (gpu) await be.read(out);
          return performance.now() - t0;
        } finally { for (const t of [q, k, v, out]) be.free(t); }
      };
      const first: number[] = [];
      for (const c of caches) {
        first.push(await step(c.cache, n));
        o.onProgress?.(done, total, `context ${n}: ${c.arm} first step ${first[first.length - 1].toFixed(0)} ms`);
      }
      const samples = caches.map(() => [] as number[]);
      const counted = caches.map((c) => c.cache.sampling?.().sampled.length ?? 0);
      for (let t = 1; t <= warmup + decode; t++) {
        for (const [i, c] of caches.entries()) {
          const ms = await step(c.cache, n + t);
          if (t > warmup) samples[i].push(ms);
        }
      }
      const fullMs = median(samples[0]);
      for (const [i, c] of caches.entries()) {
        const ms = median(samples[i]);
        let bytes = 2 * H * (n + 1) * D * 4, fraction: number | null = null;
        if (c.s) {
          // Sampled keys per step (summed over the queries) of the timed steps, against the offloaded keys per query.
          const sm = c.cache.sampling!(), from = counted[i] + warmup;
          const sampled = sm.sampled.slice(from), offloaded = sm.offloaded.slice(from);
          fraction = sampled.reduce((a, x) => a + x, 0) / offloaded.reduce((a, x) => a + x, 0);
          // At position n: m offloaded keys, sinks + local + 1 static ones. The scan reads every code;
          // tables read the query's L buckets (about m·L / 2^K entries of 4 bytes) and the tail's codes.
          const m = Math.max(0, n - c.s.sinks - c.s.local), statics = n + 1 - m;
          const find = c.s.tables ? H * G * (m * c.s.L / (1 << c.s.K)) * 4 : H * m * codeStride(c.s.L) * 2;
          bytes = find + (sampled.reduce((a, x) => a + x, 0) / sampled.length) * (2 * D * 4 + 4) + 2 * H * statics * D * 4;
        }
        rows.push({
          arm: c.arm, context: n, ms_per_layer: ms, attention_ms_per_token: ms * layers,
          decode_ms_per_token: o.projectionsMs === undefined ? null : o.projectionsMs + ms * layers, speedup: fullMs / ms,
          bytes_per_token: Math.round(bytes * layers), sampled_fraction: fraction, first_step_ms: c.s ? first[i] : null,
          cache_bytes_per_layer: c.cache.bytes(), decode_ms_samples: samples[i],
        });
        o.onProgress?.(++done, total, `context ${n}: ${c.arm} ${ms.toFixed(2)} ms per layer`);
      }
    } finally { for (const c of caches) c.cache.free(); }
  }
  return rows;
}
