// Worker threads for the WASM kernels. Every thread holds its own instance of the shared-memory
// kernel build over one WebAssembly.Memory; a job (matmul, attention, streaming attention) is split
// into shares (blocks of output columns, or of KV heads) and the calling thread does share 0.
//
// Hand-off goes through a small control block inside the shared memory, with Atomics wait/notify
// (no message passing per job, which would cost more than a decode step's small matmuls):
//   i32[0] generation (bumped per job), i32[1] workers still running, i32[2] op, i32[3] shares the
//   workers have run (a counter that proves they did work), f64 args from byte 16.
import { instantiateKernels, type KernelExports } from './wasm.js';

export const Op = { Stop: 0, Matmul: 1, Attention: 2, Streaming: 3, MatmulPacked: 4, ProbeRead: 5, ProbePeak: 6 } as const;
export type Op = (typeof Op)[keyof typeof Op];

/** f64 arguments a job carries (the largest op, streaming attention, has 20). */
export const MAX_ARGS = 24;
/** Bytes of the control block (allocated by the backend in the shared memory). */
export const CONTROL_BYTES = 16 + MAX_ARGS * 8;

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

/** Polls i32[index] until it differs from `value`, then sleeps on it (re-checking) until it does. */
function waitWhileEquals(ctl: Int32Array, index: number, value: number): void {
  for (let i = 0; i < SPIN; i++) if (Atomics.load(ctl, index) !== value) return;
  while (Atomics.load(ctl, index) === value) Atomics.wait(ctl, index, value, WAKE_CHECK_MS);
}

/** What a worker needs to serve jobs (passed to it once at start). */
export interface WorkerInit {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  control: number;
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
    // out, q, k, v, kRing, vRing, rows, numHeads, numKvHeads, headDim, pastLen, scale, sink, recent, scratch, scratchBytes, tileRows, kSum, vSum, ringDtype
    const [h0, h1] = shareRange(a[8], s, count);
    if (h0 >= h1) return false;
    k.streamingAttention(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13],
      a[14] + s * a[15], a[16], h0, h1, a[17], a[18], a[19]);
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

  private constructor(readonly count: number, memory: WebAssembly.Memory, control: number,
    private readonly kernels: KernelExports, private readonly workers: Array<{ terminate(): void }>) {
    this.ctl = new Int32Array(memory.buffer, control, 4);
    this.args = new Float64Array(memory.buffer, control + 16, MAX_ARGS);
  }

  /** Starts count − 1 workers over `memory` (the shared build), the control block at `control`. */
  static async start(count: number, memory: WebAssembly.Memory, module: WebAssembly.Module, control: number,
    kernels: KernelExports, startWorker: StartWorker): Promise<KernelThreads> {
    new Int32Array(memory.buffer, control, 4).fill(0);
    const workers = await Promise.all(Array.from({ length: count - 1 }, (_, i) => startWorker({ module, memory, control, index: i + 1, count })));
    return new KernelThreads(count, memory, control, kernels, workers);
  }

  /** Runs a job on every thread and returns when all shares are done. */
  run(op: Op, args: number[]): void {
    this.args.set(args);
    Atomics.store(this.ctl, 2, op);
    Atomics.store(this.ctl, 1, this.count - 1);
    Atomics.add(this.ctl, 0, 1);
    Atomics.notify(this.ctl, 0);
    runShare(this.kernels, op, this.args, 0, this.count);
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
  const { kernels: k } = await instantiateKernels(init.memory, init.module);
  const ctl = new Int32Array(init.memory.buffer, init.control, 4);
  const args = new Float64Array(init.memory.buffer, init.control + 16, MAX_ARGS);
  let generation = Atomics.load(ctl, 0);
  ready();
  for (;;) {
    waitWhileEquals(ctl, 0, generation);
    generation = Atomics.load(ctl, 0);
    const op = Atomics.load(ctl, 2) as Op;
    if (op === Op.Stop) return;
    if (runShare(k, op, args, init.index, init.count)) Atomics.add(ctl, 3, 1);
    if (Atomics.sub(ctl, 1, 1) === 1) Atomics.notify(ctl, 1);
  }
}
