// The e2e suite: for each head configuration (full attention, DuoAttention at each sparsity) and
// placement, one engine; for each context, the prefill time and the decode time per token.
//
// Prefill up to `prefillMax` tokens runs for real (one session.forward of the whole prompt, in
// chunks, as `duet generate` does). Longer prompts would take minutes per configuration on a small
// CPU, so there the prefill is estimated: a chunk's cost is linear in its start position (the
// projections are constant, causal attention grows with the keys before it), so the sum over n
// chunks is n · (first + last) / 2. The first chunk is timed once per configuration, the last one
// at the context itself (each the faster of two runs), and n − 1 of the n LM-head steps that these
// separate calls add are taken off (a whole prefill computes logits once).
// Such a session starts from a synthetic cache: pastLen is set without running the tokens before
// (the cache holds zeros; attention costs the same whatever the values).
//
// Decode continues from there: `warmup` untimed tokens, then `tokens` timed ones. Each DuoAttention
// configuration decodes interleaved with full attention on the same main device (one token each,
// alternating), so that a slow spell of a shared machine hits both sides of a ratio alike; a row
// reports the median. Full-attention engines live for the whole suite; a DuoAttention engine
// lives for one context at a time (its shared weights stay uploaded through the full engine, see
// engines.ts), which keeps the CPU side's memory to two engines and two caches.
import type { Placement } from '../engine/engine.js';
import type { Engine } from '../engine/engine.js';
import type { Session } from '../engine/session.js';
import { createBenchEngine, placementsFor, type EngineFactory, type HeadConfig } from './engines.js';
import { randomIds } from './random-weights.js';
import { measure, median, yieldToEventLoop } from './timing.js';
import type { E2eRow, KvBytes } from './types.js';
import { counterDelta, perTokenCounters, zeroCounters, type GpuCounters } from '../gpu/context.js';
import { Sampler } from '../engine/sampler.js';

/** Decode steps pick their token as generation does (greedy: on the GPU when it is the main device). */
const greedy = new Sampler({});

export interface E2eOptions {
  factory: EngineFactory;
  heads: HeadConfig[];
  placements: Placement[];
  contexts: number[];
  chunk: number;
  prefillMax: number;
  decodeTokens: number;
  warmupTokens: number;
  seed: number;
  onProgress?: (done: number, total: number, detail: string) => void;
}

/** ms of the final norm + LM head + logits read-back that ends every forward call. */
async function logitsStepMs(engine: Engine): Promise<number> {
  const { main, lmHead, finalNorm, config } = engine.model;
  const last = main.alloc(config.hiddenSize), logits = main.alloc(config.vocabSize);
  try {
    return await measure(async () => {
      main.matmul(logits, last, lmHead, null, 1, config.hiddenSize, config.vocabSize, false, 0, { weight: finalNorm, eps: config.rmsNormEps });
      await main.read(logits);
    }, { warmup: 1, minReps: 3, budgetMs: 300 });
  } finally { main.free(last); main.free(logits); }
}

export function kvOf(k: { retrievalBytes: number; streamingBytes: number; byDevice: { gpu: number; cpu: number } }): KvBytes {
  return { gpu: k.byDevice.gpu, cpu: k.byDevice.cpu, retrieval: k.retrievalBytes, streaming: k.streamingBytes, total: k.retrievalBytes + k.streamingBytes };
}

/**
 * Longest sequence a run makes: a full-attention session lives through every DuoAttention
 * configuration on its device, decoding `tokens` + 1 steps beside each (`duoRuns` at most).
 */
export function e2eSequenceLength(maxContext: number, warmupTokens: number, decodeTokens: number, duoRuns: number): number {
  return maxContext + warmupTokens + (decodeTokens + 1) * Math.max(1, duoRuns);
}

interface Job {
  label: string;
  h: HeadConfig;
  base: Pick<E2eRow, 'label' | 'heads' | 'sparsity' | 'placement' | 'kv_dtype' | 'main_device'>;
  engine: Engine | null;
  error?: string;
  firstChunkMs: number | null;
  logitsMs: number | null;
}

const EMPTY = {
  prefill_ms: null, prefill_method: null, decode_ms_per_token: null, decode_ms_samples: [], decode_tokens: 0, reference_decode_ms: null,
  prefill_speedup: null, decode_speedup: null, ideal_decode_speedup: null, kv: null, counters: null,
} satisfies Partial<E2eRow>;

/** Prefill of `context` tokens into `session` (measured, or estimated from the first and last chunk). */
async function prefill(job: Job, session: Session, ids: number[], context: number, o: E2eOptions): Promise<{ ms: number; method: 'measured' | 'estimated' }> {
  const engine = job.engine!;
  if (context <= o.prefillMax || context <= o.chunk) {
    const t0 = performance.now();
    await session.forward(ids.slice(0, context));
    return { ms: performance.now() - t0, method: 'measured' };
  }
  // Chunk timings: the faster of two runs each (a single run is at the mercy of a noisy neighbour).
  if (job.firstChunkMs === null) {
    const first = engine.newSession(o.chunk, o.chunk);
    try {
      const times: number[] = [];
      for (let i = 0; i < 2; i++) {
        first.pastLen = 0;
        const t0 = performance.now();
        await first.forward(ids.slice(0, o.chunk));
        times.push(performance.now() - t0);
      }
      job.firstChunkMs = Math.min(...times);
    } finally { first.dispose(); }
    job.logitsMs = await logitsStepMs(engine);
  }
  const times: number[] = [];
  for (let i = 0; i < 2; i++) {
    session.pastLen = context - o.chunk;
    const t0 = performance.now();
    await session.forward(ids.slice(context - o.chunk, context));
    times.push(performance.now() - t0);
  }
  const lastChunkMs = Math.min(...times);
  const n = context / o.chunk;
  return { ms: (n * (job.firstChunkMs + lastChunkMs)) / 2 - (n - 1) * job.logitsMs!, method: 'estimated' };
}

interface Live {
  job: Job; session: Session; prefill: { ms: number; method: 'measured' | 'estimated' }; next: number; samples: number[];
  /** GPU counters summed over the timed steps. */
  counters: GpuCounters;
}

/** A session of `job` at `context`: prefilled, warmed up, ready for timed decode steps. */
async function open(job: Job, ids: number[], context: number, capacity: number, o: E2eOptions): Promise<Live> {
  const session = job.engine!.newSession(capacity, o.chunk);
  try {
    const p = await prefill(job, session, ids, context, o);
    let next = context;
    for (let i = 0; i < o.warmupTokens; i++) await session.next([ids[next++]], greedy);
    return { job, session, prefill: p, next, samples: [], counters: zeroCounters() };
  } catch (e) {
    session.dispose();
    throw e;
  }
}

async function step(x: Live, ids: number[]): Promise<void> {
  const ctx = x.job.engine?.gpu?.ctx;
  const before = ctx?.snapshot();
  const t0 = performance.now();
  await x.session.next([ids[x.next++]], greedy);
  x.samples.push(performance.now() - t0);
  if (ctx && before) {
    const d = counterDelta(ctx.snapshot(), before);
    for (const k of Object.keys(d) as Array<keyof GpuCounters>) x.counters[k] += d[k];
  }
}

async function startEngine(job: Job, o: E2eOptions, ids: number[]): Promise<void> {
  job.engine = await createBenchEngine(o.factory, job.h, job.base.placement);
  // Warm-up: optimised WASM tiers, GPU pipelines of a fresh device.
  const n = Math.min(o.chunk, 16);
  const warm = job.engine.newSession(n + 4, n);
  try {
    await warm.forward(ids.slice(0, n));
    for (let i = 0; i < 2; i++) await warm.forward([ids[i]]);
  } finally { warm.dispose(); }
}

export async function runE2e(o: E2eOptions): Promise<E2eRow[]> {
  const { config } = o.factory;
  const jobs: Job[] = o.heads.flatMap((h) => placementsFor(h, o.placements).map((p) => ({
    label: `${h.label}/${p}`, h,
    base: { label: `${h.label}/${p}`, heads: h.heads, sparsity: h.sparsity, placement: p, kv_dtype: o.factory.kvDtype ?? 'f32', main_device: p === 'cpu' ? 'cpu' as const : 'gpu' as const },
    engine: null, firstChunkMs: null, logitsMs: null,
  })));
  const fullJobs = jobs.filter((j) => j.h.heads === 'full'), duoJobs = jobs.filter((j) => j.h.heads === 'duo');
  const refOf = (j: Job) => fullJobs.find((f) => f.base.main_device === j.base.main_device);
  const pairs = (f: Job) => Math.max(1, duoJobs.filter((j) => refOf(j) === f).length);
  const maxCtx = Math.max(...o.contexts);
  const ids = randomIds(e2eSequenceLength(maxCtx, o.warmupTokens, o.decodeTokens, duoJobs.length) + o.chunk, config.vocabSize, o.seed);
  const total = fullJobs.length + o.contexts.length * jobs.length;
  let done = 0;
  const progress = (detail: string) => o.onProgress?.(done++, total, detail);
  const rows: E2eRow[] = [];
  const failed = (job: Job, context: number, e: unknown) => rows.push({ ...job.base, ...EMPTY, context, error: e instanceof Error ? e.message : String(e) });
  const row = (x: Live, context: number, reference: number[] = []) => rows.push({
    ...x.job.base, ...EMPTY, context, prefill_ms: x.prefill.ms, prefill_method: x.prefill.method,
    decode_ms_per_token: x.samples.length ? median(x.samples) : null, decode_ms_samples: x.samples,
    decode_tokens: x.samples.length, reference_decode_ms: reference.length ? median(reference) : null, kv: kvOf(x.session.kvMemory()),
    counters: x.job.engine?.gpu && x.samples.length ? perTokenCounters(x.counters, x.samples.length) : null,
  });
  try {
    for (const job of fullJobs) {
      progress(`${job.label}: engine`);
      try { await startEngine(job, o, ids); } catch (e) { job.error = (e as Error).message; }
    }
    for (const context of o.contexts) {
      const refs = new Map<Job, Live>();
      try {
        for (const job of fullJobs) {
          progress(`${job.label} @${context}`);
          if (!job.engine) { failed(job, context, job.error); continue; }
          try {
            refs.set(job, await open(job, ids, context, e2eSequenceLength(context, o.warmupTokens, o.decodeTokens, pairs(job)), o));
          } catch (e) { failed(job, context, e); }
          await yieldToEventLoop();
        }
        for (const job of duoJobs) {
          progress(`${job.label} @${context}`);
          let x: Live | null = null;
          try {
            await startEngine(job, o, ids);
            x = await open(job, ids, context, context + o.warmupTokens + o.decodeTokens, o);
            const ref = refOf(job);
            const y = ref ? refs.get(ref) ?? null : null;
            // One untimed step re-warms the reference after this engine's setup evicted it from the caches.
            if (y) await y.session.forward([ids[y.next++]]);
            const before = y?.samples.length ?? 0;
            for (let t = 0; t < o.decodeTokens; t++) {
              if (y && t % 2 === 0) await step(y, ids);
              await step(x, ids);
              if (y && t % 2 === 1) await step(y, ids);
            }
            row(x, context, y ? y.samples.slice(before) : []);
          } catch (e) {
            failed(job, context, e);
          } finally {
            x?.session.dispose();
            job.engine?.dispose();
            job.engine = null;
          }
          await yieldToEventLoop();
        }
        for (const y of refs.values()) {
          // Without a DuoAttention partner, full attention decodes alone.
          if (y.samples.length === 0) for (let t = 0; t < o.decodeTokens; t++) await step(y, ids);
          row(y, context);
        }
      } finally {
        for (const y of refs.values()) y.session.dispose();
      }
    }
  } finally {
    for (const job of jobs) job.engine?.dispose();
  }
  o.onProgress?.(total, total, 'done');
  // Rows in job order (full first), then context.
  const order = new Map(jobs.map((j, i) => [j.label, i]));
  return rows.sort((a, b) => order.get(a.label)! - order.get(b.label)! || a.context - b.context);
}
