// The kernels suite on the GPU: the WGSL matmul and attention kernels through the GPU backend, next
// to the GPU's roofline (probes-gpu.ts). A sample records the op `reps` times, submits, and waits
// for a one-float read-back; reps grow until a sample lasts 20 ms, and the time per op is the
// sample's wall time over reps (host recording and the submit included, spread over the reps).
import type { DeviceTensor, StreamingWindow } from '../backend/contract.js';
import { GpuBackend } from '../gpu/backend.js';
import type { GpuContext } from '../gpu/context.js';
import type { ModelConfig } from '../model/config.js';
import { attentionWork, gemmWork, kernelRow } from './costs.js';
import { runGpuProbes } from './probes-gpu.js';
import { noiseArray } from './random-weights.js';
import { measureBatched } from './timing.js';
import type { KernelRow, Probes } from './types.js';

export interface GpuKernelOptions {
  gpu: GpuContext;
  config: ModelConfig;
  contexts: number[];
  window: StreamingWindow;
  chunk: number;
  onProgress?: (done: number, total: number, detail: string) => void;
}

export async function runGpuKernels(o: GpuKernelOptions): Promise<{ probes: Probes; rows: KernelRow[] }> {
  const gpu = new GpuBackend(o.gpu);
  let probes: Probes | null = null;
  const c = o.config;
  const H = c.hiddenSize, I = c.intermediateSize, D = c.headDim, nH = c.numHeads, kvh = c.numKvHeads;
  const rows = o.chunk, scale = 1 / Math.sqrt(D);
  const slots = o.window.sink + o.window.recent;
  const live: DeviceTensor[] = [];
  const up = (n: number, seed: number) => { const t = gpu.upload(noiseArray(n, seed)); live.push(t); return t; };
  const drop = (...ts: DeviceTensor[]) => { for (const t of ts) { gpu.free(t); live.splice(live.indexOf(t), 1); } };
  const x = up(rows * Math.max(H, I), 1);
  const out = up(rows * Math.max(H, I, nH * D), 2);
  const q = up(rows * nH * D, 3);
  const kc = up(rows * kvh * D, 4), vc = up(rows * kvh * D, 5);
  const kr = up(kvh * slots * D, 6), vr = up(kvh * slots * D, 7);
  const wUp = up(I * H, 8), wDown = up(H * I, 9);
  /** Median ms per op, the op recorded back to back. */
  const time = async (record: () => void) => (await measureBatched(record, async () => { await gpu.read(out, 0, 1); })).ms;
  const rowsOut: KernelRow[] = [];
  const steps: Array<[string, () => Promise<void>]> = [
    ['probes', async () => { probes = await runGpuProbes(o.gpu); }],
    ['gemv gate/up_proj', async () => {
      const ms = await time(() => gpu.matmul(out, x, wUp, null, 1, H, I));
      rowsOut.push(kernelRow({ kernel: 'gemv', backend: 'webgpu', shape: `gate/up_proj: 1×${H} · ${H}×${I}`, context: null }, ms, gemmWork(1, H, I), probes));
    }],
    ['gemv down_proj', async () => {
      const ms = await time(() => gpu.matmul(out, x, wDown, null, 1, I, H));
      rowsOut.push(kernelRow({ kernel: 'gemv', backend: 'webgpu', shape: `down_proj: 1×${I} · ${I}×${H}`, context: null }, ms, gemmWork(1, I, H), probes));
    }],
    ['gemv lm_head', async () => {
      if (c.vocabSize * H * 4 > o.gpu.maxBufferBytes) return;
      const wLm = up(c.vocabSize * H, 12), logits = up(c.vocabSize, 13);
      try {
        const ms = await time(() => gpu.matmul(logits, x, wLm, null, 1, H, c.vocabSize));
        rowsOut.push(kernelRow({ kernel: 'gemv', backend: 'webgpu', shape: `lm_head: 1×${H} · ${H}×${c.vocabSize}`, context: null }, ms, gemmWork(1, H, c.vocabSize), probes));
      } finally {
        drop(wLm, logits);
      }
    }],
    ['gemm gate/up_proj', async () => {
      const ms = await time(() => gpu.matmul(out, x, wUp, null, rows, H, I));
      rowsOut.push(kernelRow({ kernel: 'gemm', backend: 'webgpu', shape: `gate/up_proj: ${rows}×${H} · ${H}×${I}`, context: null }, ms, gemmWork(rows, H, I), probes));
    }],
  ];
  for (const ctx of o.contexts) {
    steps.push([`attention @${ctx}`, async () => {
      const kCache = up(kvh * ctx * D, 10), vCache = up(kvh * ctx * D, 11);
      try {
        const shape = (r: number) => ({ rows: r, numHeads: nH, numKvHeads: kvh, headDim: D, pastLen: ctx - r, scale });
        const dec = await time(() => gpu.attention(out, q, kCache, vCache, shape(1), ctx));
        rowsOut.push(kernelRow({ kernel: 'attention-decode', backend: 'webgpu', shape: `1 token, ${nH}q/${kvh}kv heads × ${ctx} keys, d ${D}`, context: ctx }, dec,
          attentionWork({ ...shape(1), window: null }), probes));
        if (ctx >= rows) {
          const pre = await time(() => gpu.attention(out, q, kCache, vCache, shape(rows), ctx));
          rowsOut.push(kernelRow({ kernel: 'attention-prefill', backend: 'webgpu', shape: `${rows}-token chunk ending at ${ctx}, ${nH}q/${kvh}kv heads`, context: ctx }, pre,
            attentionWork({ ...shape(rows), window: null }), probes));
        }
      } finally {
        drop(kCache, vCache);
      }
    }]);
  }
  const ctxTop = Math.max(...o.contexts);
  steps.push(['streaming attention', async () => {
    const shape = (r: number) => ({ rows: r, numHeads: nH, numKvHeads: kvh, headDim: D, pastLen: ctxTop - r, scale });
    const dec = await time(() => gpu.streamingAttention(out, q, kc, vc, kr, vr, shape(1), o.window));
    rowsOut.push(kernelRow({ kernel: 'streaming-decode', backend: 'webgpu', shape: `1 token, ${nH}q/${kvh}kv heads, sink ${o.window.sink} + recent ${o.window.recent}`, context: ctxTop }, dec,
      attentionWork({ ...shape(1), window: o.window }), probes));
    if (ctxTop >= rows) {
      const pre = await time(() => gpu.streamingAttention(out, q, kc, vc, kr, vr, shape(rows), o.window));
      rowsOut.push(kernelRow({ kernel: 'streaming-prefill', backend: 'webgpu', shape: `${rows}-token chunk ending at ${ctxTop}, sink ${o.window.sink} + recent ${o.window.recent}`, context: ctxTop }, pre,
        attentionWork({ ...shape(rows), window: o.window }), probes));
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
  return { probes: probes!, rows: rowsOut };
}
