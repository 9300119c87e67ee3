// The kernels suite on the GPU: the WGSL matmul and attention kernels through the GPU backend. A
// sample records the op `reps` times, submits, and waits for a one-float read-back; the time per
// op is the sample's wall time over reps (submission overhead included, amortised).
import type { DeviceTensor, StreamingWindow } from '../engine/backend.js';
import { GpuBackend } from '../gpu/backend.js';
import type { GpuContext } from '../gpu/context.js';
import type { ModelConfig } from '../model/config.js';
import { attentionWork, gemmWork, kernelRow } from './costs.js';
import { measure } from './timing.js';
import type { KernelRow } from './types.js';

export interface GpuKernelOptions {
  gpu: GpuContext;
  config: ModelConfig;
  contexts: number[];
  window: StreamingWindow;
  chunk: number;
  onProgress?: (done: number, total: number, detail: string) => void;
}

function randomArray(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1103515245) + 12345) >>> 0; a[i] = s / 2147483648 - 1; }
  return a;
}

export async function runGpuKernels(o: GpuKernelOptions): Promise<KernelRow[]> {
  const gpu = new GpuBackend(o.gpu);
  const c = o.config;
  const H = c.hiddenSize, I = c.intermediateSize, D = c.headDim, nH = c.numHeads, kvh = c.numKvHeads;
  const rows = o.chunk, scale = 1 / Math.sqrt(D);
  const slots = o.window.sink + o.window.recent;
  const live: DeviceTensor[] = [];
  const up = (n: number, seed: number) => { const t = gpu.upload(randomArray(n, seed)); live.push(t); return t; };
  const x = up(rows * Math.max(H, I), 1);
  const out = up(rows * Math.max(H, I, nH * D), 2);
  const q = up(rows * nH * D, 3);
  const kc = up(rows * kvh * D, 4), vc = up(rows * kvh * D, 5);
  const kr = up(kvh * slots * D, 6), vr = up(kvh * slots * D, 7);
  const wUp = up(I * H, 8), wDown = up(H * I, 9);
  /** Median ms per op: `record` runs `reps` times per sample. */
  const time = async (reps: number, record: () => void, slow = false) => {
    const ms = await measure(async () => { for (let i = 0; i < reps; i++) record(); await gpu.read(out, 0, 1); },
      slow ? { warmup: 1, minReps: 1, budgetMs: 1500 } : { warmup: 2, minReps: 3, budgetMs: 500 });
    return ms / reps;
  };
  const rowsOut: KernelRow[] = [];
  const steps: Array<[string, () => Promise<void>]> = [
    ['gemv gate/up_proj', async () => {
      const ms = await time(8, () => gpu.matmul(out, x, wUp, null, 1, H, I));
      rowsOut.push(kernelRow({ kernel: 'gemv', backend: 'webgpu', shape: `gate/up_proj: 1×${H} · ${H}×${I}`, context: null }, ms, gemmWork(1, H, I), null));
    }],
    ['gemv down_proj', async () => {
      const ms = await time(8, () => gpu.matmul(out, x, wDown, null, 1, I, H));
      rowsOut.push(kernelRow({ kernel: 'gemv', backend: 'webgpu', shape: `down_proj: 1×${I} · ${I}×${H}`, context: null }, ms, gemmWork(1, I, H), null));
    }],
    ['gemm gate/up_proj', async () => {
      const ms = await time(1, () => gpu.matmul(out, x, wUp, null, rows, H, I), true);
      rowsOut.push(kernelRow({ kernel: 'gemm', backend: 'webgpu', shape: `gate/up_proj: ${rows}×${H} · ${H}×${I}`, context: null }, ms, gemmWork(rows, H, I), null));
    }],
  ];
  for (const ctx of o.contexts) {
    steps.push([`attention @${ctx}`, async () => {
      const kCache = up(kvh * ctx * D, 10), vCache = up(kvh * ctx * D, 11);
      try {
        const shape = (r: number) => ({ rows: r, numHeads: nH, numKvHeads: kvh, headDim: D, pastLen: ctx - r, scale });
        const dec = await time(8, () => gpu.attention(out, q, kCache, vCache, shape(1), ctx));
        rowsOut.push(kernelRow({ kernel: 'attention-decode', backend: 'webgpu', shape: `1 token, ${nH}q/${kvh}kv heads × ${ctx} keys, d ${D}`, context: ctx }, dec,
          attentionWork({ ...shape(1), window: null }), null));
        if (ctx >= rows) {
          const pre = await time(1, () => gpu.attention(out, q, kCache, vCache, shape(rows), ctx), true);
          rowsOut.push(kernelRow({ kernel: 'attention-prefill', backend: 'webgpu', shape: `${rows}-token chunk ending at ${ctx}, ${nH}q/${kvh}kv heads`, context: ctx }, pre,
            attentionWork({ ...shape(rows), window: null }), null));
        }
      } finally {
        for (const t of [kCache, vCache]) { gpu.free(t); live.splice(live.indexOf(t), 1); }
      }
    }]);
  }
  const ctxTop = Math.max(...o.contexts);
  steps.push(['streaming attention', async () => {
    const shape = (r: number) => ({ rows: r, numHeads: nH, numKvHeads: kvh, headDim: D, pastLen: ctxTop - r, scale });
    const dec = await time(8, () => gpu.streamingAttention(out, q, kc, vc, kr, vr, shape(1), o.window));
    rowsOut.push(kernelRow({ kernel: 'streaming-decode', backend: 'webgpu', shape: `1 token, ${nH}q/${kvh}kv heads, sink ${o.window.sink} + recent ${o.window.recent}`, context: ctxTop }, dec,
      attentionWork({ ...shape(1), window: o.window }), null));
    if (ctxTop >= rows) {
      const pre = await time(1, () => gpu.streamingAttention(out, q, kc, vc, kr, vr, shape(rows), o.window), true);
      rowsOut.push(kernelRow({ kernel: 'streaming-prefill', backend: 'webgpu', shape: `${rows}-token chunk ending at ${ctxTop}, sink ${o.window.sink} + recent ${o.window.recent}`, context: ctxTop }, pre,
        attentionWork({ ...shape(rows), window: o.window }), null));
    }
  }]);
  try {
    for (let i = 0; i < steps.length; i++) {
      o.onProgress?.(i, steps.length, steps[i][0]);
      await steps[i][1]();
    }
    o.onProgress?.(steps.length, steps.length, 'done');
  } finally {
    for (const t of live) gpu.free(t);
  }
  return rowsOut;
}
