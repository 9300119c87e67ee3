// The kernels suite on the CPU: the WASM SIMD kernels the engine runs (through the CPU backend, as
// the engine calls them) next to a roofline measured in the same process: a memory-bandwidth probe
// and a SIMD peak probe (assembly/probe.ts).
//
// Weights and KV caches are read from a pool larger than the CPU caches, moving to a fresh window
// on every call, because in a real decode step nothing is still cached from the previous call.
import type { StreamingWindow } from '../backend/contract.js';
import { CpuBackend, CpuTensor } from '../cpu/backend.js';
import type { StartWorker } from '../cpu/threads.js';
import { instantiateKernels, kernelMemory, type KernelExports } from '../cpu/wasm.js';
import type { ModelConfig } from '../model/config.js';
import { noiseArray } from './random-weights.js';
import { WASM_BUDGET } from './shapes.js';
import { attentionWork, gemmWork, kernelRow } from './costs.js';
import { measure, measureBest, warmFor } from './timing.js';
import type { KernelRow, Probes } from './types.js';

/** Bytes the bandwidth probe streams through (far beyond any L3). */
const PROBE_BUFFER = 256 * 1024 * 1024;
/** Decode kernels take 0.1–20 ms: the median of as many calls as fit the budget, since single
 * sub-millisecond calls on a shared VM scatter widely. */
const DECODE_TIMING = { budgetMs: 300, maxReps: 3000 };
const SCALING_TIMING = { budgetMs: 400, maxReps: 3000 };
/** Rotating windows cover at least this much memory. */
const POOL_MIN = 512 * 1024 * 1024;

export interface KernelSuiteOptions {
  config: ModelConfig;
  contexts: number[];
  sparsities: number[];
  window: StreamingWindow;
  chunk: number;
  /** Kernel threads (default 1); with more, the suite also measures the scaling from one thread. */
  threads?: number;
  startWorker?: StartWorker;
  onProgress?: (done: number, total: number, detail: string) => void;
}

/** A CPU backend with its own memory, random data in a big pool, and views into that pool. */
class Bench {
  readonly cpu: CpuBackend;
  private pool: CpuTensor;
  private cursor = 0;

  constructor(readonly kernels: KernelExports, memory: WebAssembly.Memory, poolBytes: number) {
    this.cpu = new CpuBackend(kernels, memory);
    this.pool = this.random(poolBytes / 4);
  }

  /** A tensor of `length` random values in [−1, 1). */
  random(length: number): CpuTensor {
    const t = this.cpu.alloc(length);
    const block = noiseArray(Math.min(length, 1 << 16), 12345);
    for (let off = 0; off < length; off += block.length) this.cpu.write(t, block.subarray(0, Math.min(block.length, length - off)), off);
    return t;
  }

  /** The next window of `length` floats of the pool (wrapping), so repeated calls miss the caches. */
  window(length: number): CpuTensor {
    const n = this.pool.length;
    if (length > n) throw new Error(`kernel bench: a ${length * 4}-byte operand exceeds the ${n * 4}-byte pool`);
    const aligned = Math.ceil(length / 16) * 16;
    if (this.cursor + aligned > n) this.cursor = 0;
    const t = new CpuTensor(this.pool.ptr + this.cursor * 4, length);
    this.cursor += aligned;
    return t;
  }
}

/**
 * The roofline on `threads` threads at once (1: the calling thread only): the best of several
 * samples after a warm-up long enough for V8's optimising tier, since a roofline is the most the
 * machine does. Run before the kernels and again after them; the suite keeps the better of the two.
 */
async function runWasmProbes(bench: Bench, threads: number): Promise<Probes> {
  const k = bench.kernels, cpu = bench.cpu;
  const buf = cpu.alloc(PROBE_BUFFER / 4);
  try {
    const read = (bytes: number, reps: number) => threads > 1 ? cpu.probeAllThreads('read', buf.ptr, bytes, reps) : k.probeRead(buf.ptr, bytes, reps);
    const peak = (iters: number) => threads > 1 ? cpu.probeAllThreads('peak', iters) : k.probePeak(iters);
    await warmFor(500, () => { read(1 << 16, 4); peak(20000); });
    const readMs = await measureBest(() => { read(PROBE_BUFFER, 1); }, { minReps: 7, budgetMs: 1000 });
    const iters = 1_000_000;
    const peakMs = await measureBest(() => { peak(iters); }, { minReps: 7, budgetMs: 800 });
    const flops = iters * Number(k.PEAK_PROBE_FLOPS.value) * threads;
    return { bandwidth_gbps: PROBE_BUFFER / readMs / 1e6, bandwidth_buffer_bytes: PROBE_BUFFER, peak_gflops: flops / peakMs / 1e6, threads };
  } finally {
    cpu.free(buf);
  }
}

/** Each figure the better of two probe runs. */
function bestProbes(a: Probes, b: Probes): Probes {
  return { ...a, bandwidth_gbps: Math.max(a.bandwidth_gbps, b.bandwidth_gbps), peak_gflops: Math.max(a.peak_gflops, b.peak_gflops) };
}

/** Recomputes a row's shares of the roofline with `probes` (rows are measured before the last probe run). */
function rescore(row: KernelRow, probes: Probes): KernelRow {
  return kernelRow(row, row.ms, { flops: row.flops, bytes: row.bytes }, probes);
}

interface Task { label: string; run: () => Promise<KernelRow[]> }

export async function runWasmKernels(o: KernelSuiteOptions): Promise<{ probes: Probes; rows: KernelRow[]; notes: string[] }> {
  const c = o.config;
  const H = c.hiddenSize, I = c.intermediateSize, D = c.headDim, nH = c.numHeads, kvh = c.numKvHeads, V = c.vocabSize;
  const maxCtx = Math.max(...o.contexts);
  /** Floats of the largest activation of `r` rows. */
  const rowsOf = (r: number) => r * Math.max(H, I, nH * D);
  const lmBytes = V * H * 4;
  const kvBytes = 2 * kvh * maxCtx * D * 4;
  // Everything fits the CPU backend's WASM budget (shapes.ts): the probe buffer, the pool, small operands.
  const small = (rowsOf(o.chunk) + V) * 4 * 4;
  const poolCap = Math.floor((WASM_BUDGET - PROBE_BUFFER - small) / 64) * 64;
  const poolBytes = Math.min(poolCap, Math.ceil(Math.max(POOL_MIN, lmBytes, kvBytes) / 64) * 64);
  const notes: string[] = [];
  const fits = (bytes: number, what: string) => {
    if (bytes <= poolBytes) return true;
    notes.push(`kernels: ${what} skipped (${(bytes / 2 ** 30).toFixed(2)} GiB of operands, more than the CPU backend can hold next to the probes)`);
    return false;
  };
  const threads = o.threads ?? 1;
  const { kernels, memory } = await instantiateKernels(kernelMemory(threads > 1));
  const bench = new Bench(kernels, memory, poolBytes);
  const cpu = bench.cpu;
  if (threads > 1) {
    if (!o.startWorker) throw new Error('kernels suite: threads > 1 need a way to start workers');
    await cpu.startThreads(threads, o.startWorker);
  }
  const scale = 1 / Math.sqrt(D);
  const rows = o.chunk;
  const xMax = rowsOf(1);
  const x = bench.random(rows * xMax);
  const out = cpu.alloc(Math.max(rowsOf(rows), V));
  const q = bench.random(rows * nH * D);
  const kChunk = bench.random(rows * kvh * D), vChunk = bench.random(rows * kvh * D);
  const slots = o.window.sink + o.window.recent;
  let probes: Probes | null = null;
  /** With more than one thread, the one-thread roofline for the scaling rows' one-thread baselines. */
  let probesOne: Probes | null = null;

  const gemm = (label: string, r: number, inDim: number, outDim: number): Task => ({
    label: `${r === 1 ? 'gemv' : 'gemm'} ${label}`,
    run: async () => {
      const ms = await measure(() => cpu.matmul(out, x, bench.window(inDim * outDim), null, r, inDim, outDim),
        r === 1 ? { budgetMs: 400 } : { warmup: 0, minReps: 2, budgetMs: 1500 });
      return [kernelRow({ kernel: r === 1 ? 'gemv' : 'gemm', backend: 'wasm', shape: `${label}: ${r}×${inDim} · ${inDim}×${outDim}`, context: null }, ms, gemmWork(r, inDim, outDim), probes)];
    },
  });
  /** Full attention of `heads` KV heads (and their query heads) at `ctx`, r query rows at the end. */
  const full = (ctx: number, r: number, kv: number) => {
    const cache = bench.window(2 * kv * ctx * D);
    const kc = new CpuTensor(cache.ptr, kv * ctx * D), vc = new CpuTensor(cache.ptr + kv * ctx * D * 4, kv * ctx * D);
    cpu.attention(out, q, kc, vc, { rows: r, numHeads: kv * (nH / kvh), numKvHeads: kv, headDim: D, pastLen: ctx - r, scale }, ctx);
  };
  const streaming = (ctx: number, r: number, kv: number) => {
    const ring = bench.window(2 * kv * slots * D);
    const kr = new CpuTensor(ring.ptr, kv * slots * D), vr = new CpuTensor(ring.ptr + kv * slots * D * 4, kv * slots * D);
    cpu.streamingAttention(out, q, kChunk, vChunk, kr, vr, { rows: r, numHeads: kv * (nH / kvh), numKvHeads: kv, headDim: D, pastLen: ctx - r, scale }, o.window);
  };
  const attnWork = (ctx: number, r: number, kv: number, window: StreamingWindow | null) =>
    attentionWork({ rows: r, pastLen: ctx - r, numHeads: kv * (nH / kvh), numKvHeads: kv, headDim: D, window });

  const tasks: Task[] = [
    {
      label: 'probes',
      run: async () => {
        probes = await runWasmProbes(bench, threads);
        if (threads > 1) probesOne = await runWasmProbes(bench, 1);
        return [];
      },
    },
    gemm('q_proj', 1, H, nH * D), gemm('k_proj', 1, H, kvh * D), gemm('o_proj', 1, nH * D, H),
    gemm('gate/up_proj', 1, H, I), gemm('down_proj', 1, I, H),
    ...(fits(lmBytes, 'the lm_head GEMV') ? [gemm('lm_head', 1, H, V)] : []),
    gemm('gate/up_proj', rows, H, I), gemm('down_proj', rows, I, H),
  ];
  const contexts = o.contexts.filter((ctx) => fits(2 * kvh * ctx * D * 4, `attention at ${ctx} tokens`));
  for (const ctx of contexts) {
    tasks.push({
      label: `attention decode @${ctx}`,
      run: async () => {
        const ms = await measure(() => full(ctx, 1, kvh), DECODE_TIMING);
        return [kernelRow({ kernel: 'attention-decode', backend: 'wasm', shape: `1 token, ${nH}q/${kvh}kv heads × ${ctx} keys, d ${D}`, context: ctx }, ms, attnWork(ctx, 1, kvh, null), probes)];
      },
    });
  }
  const ctxTop = maxCtx;
  tasks.push({
    label: 'streaming decode',
    run: async () => {
      const ms = await measure(() => streaming(ctxTop, 1, kvh), DECODE_TIMING);
      return [kernelRow({ kernel: 'streaming-decode', backend: 'wasm', shape: `1 token, ${nH}q/${kvh}kv heads, sink ${o.window.sink} + recent ${o.window.recent}`, context: ctxTop }, ms, attnWork(ctxTop, 1, kvh, o.window), probes)];
    },
  });
  for (const ctx of contexts) {
    if (ctx < rows) continue;
    tasks.push({
      label: `attention prefill @${ctx}`,
      run: async () => {
        const ms = await measure(() => full(ctx, rows, kvh), { warmup: 0, minReps: 1, budgetMs: 1500 });
        return [kernelRow({ kernel: 'attention-prefill', backend: 'wasm', shape: `${rows}-token chunk ending at ${ctx}, ${nH}q/${kvh}kv heads`, context: ctx }, ms, attnWork(ctx, rows, kvh, null), probes)];
      },
    });
    tasks.push({
      label: `streaming prefill @${ctx}`,
      run: async () => {
        const ms = await measure(() => streaming(ctx, rows, kvh), { warmup: 0, minReps: 2, budgetMs: 600 });
        return [kernelRow({ kernel: 'streaming-prefill', backend: 'wasm', shape: `${rows}-token chunk ending at ${ctx}, sink ${o.window.sink} + recent ${o.window.recent}`, context: ctx }, ms, attnWork(ctx, rows, kvh, o.window), probes)];
      },
    });
  }
  // The attention part of one layer's decode step: full attention vs DuoAttention's split of the
  // layer's KV heads (round((1 − s)·kv) full, the rest streaming).
  for (const ctx of contexts) {
    tasks.push({
      label: `decode attention per layer @${ctx}`,
      run: async () => {
        const out: KernelRow[] = [];
        const fullMs = await measure(() => full(ctx, 1, kvh), DECODE_TIMING);
        const base = { kernel: 'attention-decode-layer', backend: 'wasm' as const, context: ctx };
        out.push(kernelRow({ ...base, config: 'full', speedup_vs_full: 1, shape: `${kvh} full KV heads at ${ctx}` }, fullMs, attnWork(ctx, 1, kvh, null), probes));
        for (const s of o.sparsities) {
          const ret = Math.round((1 - s) * kvh), str = kvh - ret;
          const ms = await measure(() => { if (ret) full(ctx, 1, ret); if (str) streaming(ctx, 1, str); }, DECODE_TIMING);
          const a = ret ? attnWork(ctx, 1, ret, null) : { flops: 0, bytes: 0 }, b = str ? attnWork(ctx, 1, str, o.window) : { flops: 0, bytes: 0 };
          out.push(kernelRow({ ...base, config: `duo@${s}`, speedup_vs_full: fullMs / ms, shape: `${ret} full + ${str} streaming KV heads at ${ctx}` }, ms,
            { flops: a.flops + b.flops, bytes: a.bytes + b.bytes }, probes));
        }
        return out;
      },
    });
  }

  // Thread scaling: the same kernel on one thread and on all of them, interleaved in one task.
  if (threads > 1) {
    const scaling = (label: string, kernel: string, work: { flops: number; bytes: number }, run: () => void): Task => ({
      label: `${label} on 1 vs ${threads} threads`,
      run: async () => {
        const oneMs = await measure(() => cpu.singleThreaded(run), SCALING_TIMING);
        const manyMs = await measure(run, SCALING_TIMING);
        const base = { kernel, backend: 'wasm' as const, context: null, shape: `${label}, 1 vs ${threads} threads` };
        return [
          kernelRow({ ...base, threads: 1, speedup_vs_one_thread: 1 }, oneMs, work, probesOne),
          kernelRow({ ...base, threads, speedup_vs_one_thread: oneMs / manyMs }, manyMs, work, probes),
        ];
      },
    });
    tasks.push(
      scaling(`gemv gate/up_proj 1×${H} · ${H}×${I}`, 'gemv', gemmWork(1, H, I), () => cpu.matmul(out, x, bench.window(H * I), null, 1, H, I)),
      scaling(`gemv down_proj 1×${I} · ${I}×${H}`, 'gemv', gemmWork(1, I, H), () => cpu.matmul(out, x, bench.window(H * I), null, 1, I, H)),
      scaling(`streaming decode, ${kvh} KV heads, sink ${o.window.sink} + recent ${o.window.recent}`, 'streaming-decode', attnWork(ctxTop, 1, kvh, o.window), () => streaming(ctxTop, 1, kvh)),
      ...contexts.slice(-1).map((ctx) => scaling(`attention decode, ${kvh} KV heads × ${ctx} keys`, 'attention-decode', attnWork(ctx, 1, kvh, null), () => full(ctx, 1, kvh))),
    );
  }

  // Optimise the kernels on small problems first (V8 starts WebAssembly in its baseline tier).
  const tinyW = bench.window(64 * 64);
  const warmCtx = Math.min(256, maxCtx), warmRows = Math.min(32, rows, warmCtx);
  await warmFor(300, () => {
    cpu.matmul(out, x, tinyW, null, 1, 64, 64);
    cpu.matmul(out, x, tinyW, null, warmRows, 64, 64);
    full(warmCtx, 1, kvh); full(warmCtx, warmRows, kvh);
    streaming(warmCtx, 1, kvh); streaming(warmCtx, warmRows, kvh);
  });
  const result: KernelRow[] = [];
  for (let i = 0; i < tasks.length; i++) {
    o.onProgress?.(i, tasks.length, tasks[i].label);
    result.push(...await tasks[i].run());
  }
  // The probes again after the kernels: the better of the two runs is the roofline every row is scored against.
  o.onProgress?.(tasks.length, tasks.length + 1, 'probes (again)');
  const all = bestProbes(probes!, await runWasmProbes(bench, threads));
  const one = threads > 1 ? bestProbes(probesOne!, await runWasmProbes(bench, 1)) : all;
  o.onProgress?.(tasks.length + 1, tasks.length + 1, 'done');
  cpu.destroy();
  const scored = result.map((r) => rescore(r, r.threads === 1 ? one : all));
  // Above the roofline means the probe (or the row's count of bytes) is wrong, never a fast kernel: say so.
  for (const r of scored) {
    const over = [r.pct_of_peak! > 1 ? `${(r.pct_of_peak! * 100).toFixed(0)}% of the SIMD peak` : '', r.pct_of_bandwidth! > 1 ? `${(r.pct_of_bandwidth! * 100).toFixed(0)}% of the memory bandwidth` : '']
      .filter(Boolean);
    if (over.length) {
      notes.push(`kernels: ${r.kernel} ${r.shape}${r.threads ? ` (${r.threads} threads)` : ''} ran at ${over.join(' and ')} probed in this run: `
        + 'its operands were partly in cache, or the machine ran faster during the row than during both probe runs');
    }
  }
  return { probes: all, rows: scored, notes };
}
