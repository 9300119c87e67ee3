// Worker threads for the offloaded caches. Each cache (a layer's offloaded KV heads) is a WebAssembly
// memory of its own, so that one store may take a whole wasm32 memory; the threads are one pool per
// model, whose workers hold a kernel instance over every live cache's memory. A cache attaches its
// memory when created and detaches it when freed; the workers are started (again) by the next
// job's ready() when the set has changed. A session creates its caches together, so it costs one
// start (tens of milliseconds), not one per layer.
//
// A job splits the cache's KV heads over the threads (src/cpu/threads.ts, Op.Sampled and
// Op.Attention); every head runs the same kernel call whichever thread takes it, so the results are
// bit-identical to one thread's.
import { CONTROL_BYTES, KernelThreads, type Op, type StartWorker } from '../../cpu/threads.js';
import { kernelModule, type KernelExports } from '../../cpu/wasm.js';

export class OffloadThreads {
  /** Slot → the memory of the cache holding it (null: free slot). */
  private readonly slots: Array<WebAssembly.Memory | null> = [];
  /** Bumped per attach; the workers know the memories of `poolVersion`. */
  private version = 0;
  private poolVersion = -1;
  private pool: KernelThreads | null = null;
  private starting: Promise<void> | null = null;
  /** Worker shares of the pools already stopped. */
  private stoppedShares = 0;
  private stopped = false;

  private constructor(readonly count: number, readonly module: WebAssembly.Module, private readonly startWorker: StartWorker) {}

  /** A pool of `count` threads (the caller and count − 1 workers) started by `startWorker`. */
  static async create(count: number, startWorker: StartWorker): Promise<OffloadThreads> {
    if (!(Number.isInteger(count) && count >= 2)) throw new RangeError(`offload threads: count must be an integer ≥ 2 (got ${count})`);
    return new OffloadThreads(count, await kernelModule(true), startWorker);
  }

  /** Registers a cache's (shared) memory; returns its slot for run(). */
  attach(memory: WebAssembly.Memory): number {
    if (this.stopped) throw new Error('offload threads used after stop');
    let slot = this.slots.indexOf(null);
    if (slot < 0) slot = this.slots.push(null) - 1;
    this.slots[slot] = memory;
    this.version++;
    return slot;
  }

  /** Frees a slot (the workers drop the memory at their next restart). */
  detach(slot: number): void {
    this.slots[slot] = null;
  }

  /** Starts the workers over the attached memories unless they already hold them all. */
  async ready(): Promise<void> {
    while (this.poolVersion !== this.version) {
      if (this.stopped) throw new Error('offload threads used after stop');
      if (!this.starting) {
        const version = this.version;
        this.starting = (async () => {
          this.stopPool();
          // A fresh control block per pool: a stopping worker never sees the next pool's jobs.
          const pool = await KernelThreads.start(this.count, [...this.slots], this.module, new SharedArrayBuffer(CONTROL_BYTES), 0, this.startWorker);
          if (this.stopped) { pool.stop(); return; }
          this.pool = pool;
          this.poolVersion = version;
        })().finally(() => { this.starting = null; });
      }
      await this.starting;
    }
  }

  /** Runs a job in the memory of `slot` (`kernels`: the caller's instance over it) on every thread; after ready(). */
  run(slot: number, kernels: KernelExports, op: Op, args: number[]): void {
    if (!this.pool || this.poolVersion !== this.version || this.slots[slot] === null) {
      throw new Error('offload threads: run() before ready() picked up this cache');
    }
    this.pool.run(kernels, op, args, slot);
  }

  /** Non-empty shares the workers ran (proof that they did work). */
  get workerShares(): number { return this.stoppedShares + (this.pool?.workerShares ?? 0); }

  private stopPool(): void {
    if (!this.pool) return;
    this.stoppedShares += this.pool.workerShares;
    this.pool.stop();
    this.pool = null;
  }

  /** Stops the workers (the model is destroyed). */
  stop(): void {
    this.stopped = true;
    this.stopPool();
  }
}
