// Worker threads for the WASM kernels. Every thread holds its own instance of the shared-memory
// kernel build over each of the pool's WebAssembly memories (the CPU backend has one; the offloaded
// KV caches one per cache); a job (matmul, attention, streaming attention, sampled attention) is
// split into shares (blocks of output columns, or of KV heads) and the calling thread does share 0.
//
// Hand-off goes through a small control block in shared memory, with Atomics wait/notify (no
// message passing per job, which would cost more than a decode step's small matmuls):
//   i32[0] generation (bumped per job), i32[1] workers still running, i32[2] op, i32[3] shares the
//   workers have run (a counter that proves they did work), i32[4] the memory the job runs in,
//   f64 args from byte 32.
import { instantiateKernels, type KernelExports } from './wasm.js';

export const Op = { Stop: 0, Matmul: 1, Attention: 2, Streaming: 3, MatmulPacked: 4, ProbeRead: 5, ProbePeak: 6, Sampled: 7, Hash: 8 } as const;
export type Op = (typeof Op)[keyof typeof Op];

/** f64 arguments a job carries (the largest op, sampled attention, has 26). */
export const MAX_ARGS = 28;
/** Bytes of the control block's header (i32 words) before the f64 arguments. */
const HEADER_BYTES = 32;
/** Bytes of the control block (in shared memory: the backend allocates it in its own). */
export const CONTROL_BYTES = HEADER_BYTES + MAX_ARGS * 8;

/**
 * Polls before sleeping. A decode step is a chain of sub-millisecond jobs with little JS between
 * them; waking a sleeping thread (Atomics.wait → notify) costs tens of microseconds on a VM, a large
 * part of a 0.2-ms streaming-attention job. So both sides first poll for about this many loads
 * (tens of microseconds), and only then sleep.
 */
const SPIN = 20_000;

/**
 * Longest sleep (ms) before a thread looks at the control word again. On the 2-vCPU dev VM (Node
 * 20), about one `duet bench --suite kernels` run in six hung in the 32K decode, where both sides
 * sleep on every call: both threads parked in Atomics.wait, neither woken. The cause is not pinned
 * down (the hand-off below is correct if every notify reaches its waiter); with this bound, 20 of 20
 * runs finished. A sleeper that times out just looks again, so the bound costs nothing otherwise.
 */
const WAKE_CHECK_MS = 20;

/** False once Atomics.wait refused this thread (a browser page's main thread may not block). */
let canSleep = true;

/**
 * Polls i32[index] until it differs from `value`, then sleeps on it (re-checking) until it does.
 * Where this thread may not sleep (a page's main thread, which runs the offloaded caches' jobs in
 * browsers), it keeps polling: a job's shares take about as long as the caller's own.
 */
function waitWhileEquals(ctl: Int32Array, index: number, value: number): void {
  for (let i = 0; i < SPIN; i++) if (Atomics.load(ctl, index) !== value) return;
  while (Atomics.load(ctl, index) === value) {
    if (!canSleep) continue;
    try {
      Atomics.wait(ctl, index, value, WAKE_CHECK_MS);
    } catch (e) {
      if (!(e instanceof TypeError)) throw e;
      canSleep = false;
    }
  }
}

/** What a worker needs to serve jobs (passed to it once at start). */
export interface WorkerInit {
  module: WebAssembly.Module;
  /** The memories jobs run in (a job names one by index; null: an unused index). */
  memories: ReadonlyArray<WebAssembly.Memory | null>;
  /** The control block: CONTROL_BYTES at byte `controlOffset` of `control`. */
  control: SharedArrayBuffer;
  controlOffset: number;
  /** This worker's share index (1 … count − 1; the caller is share 0). */
  index: number;
  count: number;
}

/** Starts one worker (Node: worker_threads; browsers: a Web Worker); resolves when it is ready. */
export type StartWorker = (init: WorkerInit) => Promise<{ terminate(): void }>;

/** [start, end) of share `s` of `n` items in `count` shares, starts a multiple of `align`. */
export function shareRange(n: number, s: number, count: number, align = 1): [number, number] {
  const per = Math.ceil(n / count / align) * align;
  return [Math.min(n, s * per), Math.min(n, (s + 1) * per)];
}

/** The sampled-attention and SimHash kernels (src/kv/magicpig/magicpig.as.ts), in the same module. */
interface SampledKernel {
  simhashCodes(codes: number, norms: number, x: number, n: number, d: number, stride: number, center: number,
    planes: number, K: number, L: number, cs: number, scratch: number): void;
  magicpigAttend(out: number, stats: number, counts: number, q: number, qCodes: number, keys: number, values: number,
    kNorms: number, kCodes: number, mean: number, n: number, group: number, d: number, cs: number, L: number, K: number,
    scale: number, correction: number, order: number, start: number, scratch: number): void;
}

/** Runs share `s` of a job whose op and arguments are in `a`; false when the share is empty. */
export function runShare(k: KernelExports, op: Op, a: Float64Array, s: number, count: number): boolean {
  if (op === Op.Matmul) {
    // out, x, w, bias, rows, inDim, outDim, accumulate: a block of output columns.
    const [c0, c1] = shareRange(a[6], s, count, 4);
    if (c0 >= c1) return false;
    k.matmul(a[0] + c0 * 4, a[6], a[1], a[2] + c0 * a[5] * 4, a[3] ? a[3] + c0 * 4 : 0, a[4], a[5], c1 - c0, a[7]);
  } else if (op === Op.MatmulPacked) {
    // out, x, w, bias, rows, inDim, outDim, accumulate, dtype, rowBytes, scratch, scratchBytes: a block of output rows of W.
    const [c0, c1] = shareRange(a[6], s, count, 4);
    if (c0 >= c1) return false;
    k.matmulPacked(a[0] + c0 * 4, a[6], a[1], a[2] + c0 * a[9], a[3] ? a[3] + c0 * 4 : 0, a[4], a[5], c1 - c0, a[7], a[8], a[9], a[10] + s * a[11]);
  } else if (op === Op.Attention) {
    // out, q, kCache, vCache, rows, numHeads, numKvHeads, headDim, pastLen, scale, capacity, scratch, scratchBytes, tileRows, kvDtype, kMap, vMap
    const [h0, h1] = shareRange(a[6], s, count);
    if (h0 >= h1) return false;
    k.attention(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11] + s * a[12], a[13], h0, h1, a[14], a[15], a[16]);
  } else if (op === Op.Streaming) {
    // out, q, k, v, kRing, vRing, rows, numHeads, numKvHeads, headDim, pastLen, scale, sink, recent, scratch, scratchBytes, tileRows, kSum, vSum, ringDtype,
    // kMap, vMap, numKeyHeads, numValueHeads (decoupled heads: numKvHeads is then the query head count), lse (0: none)
    const [h0, h1] = shareRange(a[8], s, count);
    if (h0 >= h1) return false;
    k.streamingAttention(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13],
      a[14] + s * a[15], a[16], h0, h1, a[17], a[18], a[19], a[20], a[21], a[22], a[23], a[24]);
  } else if (op === Op.Sampled) {
    // MagicPIG's sampled partial softmax of every KV head (src/kv/magicpig/method.ts), heads split:
    // out, stats, counts, q, qCodes, keys, values, norms, codes, means, n, group, headDim, cs, L, K,
    // scale, weights (the correction's table, 0: none), numKvHeads, capacity, off, scratch, scratchBytes, tabled, order, start.
    // Rows [0, tabled) are found through the head's bucket tables, rows [tabled, n) by the scan:
    // two partials per query, the tables' in the first half of out/stats/counts, the scan's in the second.
    const [h0, h1] = shareRange(a[18], s, count);
    if (h0 >= h1) return false;
    const g = a[11], d = a[12], cs = a[13], L = a[14], K = a[15], H = a[18], off = a[20], tabled = a[23];
    const sk = k as unknown as SampledKernel, scratch = a[21] + s * a[22];
    for (let h = h0; h < h1; h++) {
      const row = h * a[19] * d * 4, outs = [a[0] + h * g * d * 4, a[1] + h * g * 8, a[2] + h * g * 4] as const;
      const q = a[3] + h * g * d * 4, qCodes = a[4] + h * g * cs * 2, mean = a[9] + h * d * 4;
      const keys = a[5] + row, values = a[6] + row, norms = a[7] + h * off * 4, codes = a[8] + h * off * cs * 2;
      const second = [H * g * d * 4, H * g * 8, H * g * 4] as const;
      // Without tables (tabled 0) this is a scan of no rows: an empty partial.
      sk.magicpigAttend(outs[0], outs[1], outs[2], q, qCodes, keys, values, norms, codes, mean, tabled, g, d, cs, L, K, a[16], a[17],
        tabled > 0 ? a[24] + h * L * off * 4 : 0, a[25] + h * L * ((1 << K) + 1) * 4, scratch);
      sk.magicpigAttend(outs[0] + second[0], outs[1] + second[1], outs[2] + second[2], q, qCodes, keys + tabled * d * 4, values + tabled * d * 4,
        norms + tabled * 4, codes + tabled * cs * 2, mean, a[10] - tabled, g, d, cs, L, K, a[16], a[17], 0, 0, scratch);
    }
  } else if (op === Op.Hash) {
    // SimHash codes of n rows per KV head, heads split: codes, codesStride, norms, normsStride, x,
    // xStride, n, d, center, centerStride, planes, K, L, cs, numKvHeads, scratch, scratchBytes
    // (strides in bytes between heads; norms or center 0: none).
    const [h0, h1] = shareRange(a[14], s, count);
    if (h0 >= h1) return false;
    const sk = k as unknown as SampledKernel;
    for (let h = h0; h < h1; h++) {
      sk.simhashCodes(a[0] + h * a[1], a[2] ? a[2] + h * a[3] : 0, a[4] + h * a[5], a[6], a[7], a[7], a[8] ? a[8] + h * a[9] : 0,
        a[10], a[11], a[12], a[13], a[15] + s * a[16]);
    }
  } else if (op === Op.ProbeRead) {
    // ptr, bytes, reps: each thread streams its own 64-byte-aligned slice of the buffer.
    const [b0, b1] = shareRange(a[1], s, count, 64);
    if (b0 >= b1) return false;
    k.probeRead(a[0] + b0, b1 - b0, a[2]);
  } else if (op === Op.ProbePeak) {
    // iters: every thread runs the whole register-only loop.
    k.probePeak(a[0]);
  } else {
    return false;
  }
  return true;
}

/** The calling thread's side of the pool. */
export class KernelThreads {
  private readonly ctl: Int32Array;
  private readonly args: Float64Array;

  private constructor(readonly count: number, control: SharedArrayBuffer, offset: number,
    private readonly workers: Array<{ terminate(): void }>) {
    this.ctl = new Int32Array(control, offset, HEADER_BYTES / 4);
    this.args = new Float64Array(control, offset + HEADER_BYTES, MAX_ARGS);
  }

  /**
   * Starts count − 1 workers over `memories` (the shared build), the control block at byte
   * `offset` of `control` (shared memory: a memory's own buffer, or a SharedArrayBuffer).
   */
  static async start(count: number, memories: ReadonlyArray<WebAssembly.Memory | null>, module: WebAssembly.Module, control: SharedArrayBuffer, offset: number,
    startWorker: StartWorker): Promise<KernelThreads> {
    new Int32Array(control, offset, HEADER_BYTES / 4).fill(0);
    const workers = await Promise.all(Array.from({ length: count - 1 },
      (_, i) => startWorker({ module, memories, control, controlOffset: offset, index: i + 1, count })));
    return new KernelThreads(count, control, offset, workers);
  }

  /**
   * Runs a job on every thread in memory `memory` (an index into the pool's memories; `kernels`
   * is the calling thread's instance over it) and returns when all shares are done.
   */
  run(kernels: KernelExports, op: Op, args: number[], memory = 0): void {
    this.args.set(args);
    Atomics.store(this.ctl, 4, memory);
    Atomics.store(this.ctl, 2, op);
    Atomics.store(this.ctl, 1, this.count - 1);
    Atomics.add(this.ctl, 0, 1);
    Atomics.notify(this.ctl, 0);
    runShare(kernels, op, this.args, 0, this.count);
    for (let left = Atomics.load(this.ctl, 1); left !== 0; left = Atomics.load(this.ctl, 1)) waitWhileEquals(this.ctl, 1, left);
  }

  /** Non-empty shares run by the workers so far. */
  get workerShares(): number { return Atomics.load(this.ctl, 3); }

  stop(): void {
    Atomics.store(this.ctl, 2, Op.Stop);
    Atomics.add(this.ctl, 0, 1);
    Atomics.notify(this.ctl, 0);
    for (const w of this.workers) w.terminate();
  }
}

/** A worker's loop: waits for jobs, runs its share, reports; returns on Stop. */
export async function serveKernelJobs(init: WorkerInit, ready: () => void): Promise<void> {
  const instances = await Promise.all(init.memories.map(async (m) => (m ? (await instantiateKernels(m, init.module)).kernels : null)));
  const ctl = new Int32Array(init.control, init.controlOffset, HEADER_BYTES / 4);
  const args = new Float64Array(init.control, init.controlOffset + HEADER_BYTES, MAX_ARGS);
  let generation = Atomics.load(ctl, 0);
  ready();
  for (;;) {
    waitWhileEquals(ctl, 0, generation);
    generation = Atomics.load(ctl, 0);
    const op = Atomics.load(ctl, 2) as Op;
    if (op === Op.Stop) return;
    if (runShare(instances[Atomics.load(ctl, 4)]!, op, args, init.index, init.count)) Atomics.add(ctl, 3, 1);
    if (Atomics.sub(ctl, 1, 1) === 1) Atomics.notify(ctl, 1);
  }
}
