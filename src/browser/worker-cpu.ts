// The page side of the CPU worker: a Backend whose ops are posted to a Web Worker running the SIMD
// WebAssembly kernels, so long CPU work never blocks the page. Ops are fire-and-forget in order;
// `read` waits for the worker's answer. An op that fails in the worker surfaces at the next read.
import type { AttentionShape, Compensation, CpuLike, DeviceTensor, InputNorm, StreamingWindow } from '../backend/contract.js';
import type { KvDType } from '../backend/kv-dtype.js';
import { ADD_KERNEL, checkKernelCall, type KernelDef, type KernelScalars } from '../backend/kernels.js';
import { checkPacked, type PackedMatrix, type WeightDType } from '../model/quant.js';
import type { FromWorker, KernelOp, ToWorker } from './worker-protocol.js';

class WorkerTensor implements DeviceTensor {
  freed = false;
  /** `length` counts elements; a packed weight (dtype other than f32) has rows × cols of them. */
  constructor(readonly id: number, readonly length: number, readonly dtype: WeightDType = 'f32') {}
}

function asWorker(t: DeviceTensor, what: string): WorkerTensor {
  if (!(t instanceof WorkerTensor)) throw new TypeError(`${what}: not a CPU-worker tensor (allocated by another backend?)`);
  if (t.freed) throw new Error(`${what}: tensor used after free`);
  return t;
}

/** A tensor of f32 values (packed weights are only read by matmul and embed, in the worker). */
function asValues(t: DeviceTensor, what: string): WorkerTensor {
  const w = asWorker(t, what);
  if (w.dtype !== 'f32') throw new TypeError(`${what}: the tensor holds packed ${w.dtype} weights`);
  return w;
}

/** A private copy (a view's whole underlying buffer would otherwise be cloned), ready to transfer. */
function own<T extends Float32Array | Int32Array | Uint8Array>(a: T): T {
  return a.slice() as T;
}

export class WorkerCpuBackend implements CpuLike {
  readonly kind = 'cpu' as const;
  kernelCalls = 0;
  private nextId = 1;
  private nextReq = 1;
  private failure: Error | null = null;
  private readonly waiting = new Map<number, { resolve: (data: Float32Array | undefined) => void; reject: (e: Error) => void }>();

  private constructor(private readonly worker: Worker, readonly description: string) {
    worker.onmessage = (event: MessageEvent<FromWorker>) => this.receive(event.data);
    worker.onerror = (event: ErrorEvent) => this.fail(new Error(`CPU worker crashed: ${event.message || 'unknown error'}`));
  }

  /** Starts `worker` (the module built from web/cpu-worker.ts) and waits until its kernels are ready. */
  static async start(worker: Worker, timeoutMs = 30_000): Promise<WorkerCpuBackend> {
    const description = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the CPU worker did not start within ${timeoutMs / 1000} s`)), timeoutMs);
      worker.onmessage = (event: MessageEvent<FromWorker>) => {
        const m = event.data;
        clearTimeout(timer);
        if (m.type === 'ready') resolve(m.description);
        else reject(new Error(m.type === 'init-error' ? m.message : `CPU worker: unexpected first message ${m.type}`));
      };
      worker.onerror = (event: ErrorEvent) => {
        clearTimeout(timer);
        event.preventDefault();
        reject(new Error(`the CPU worker failed to load: ${event.message || 'script error'}`));
      };
    }).catch((e: unknown) => { worker.terminate(); throw e; });
    return new WorkerCpuBackend(worker, description);
  }

  private receive(m: FromWorker): void {
    if (m.type === 'failed') { this.fail(new Error(m.message)); return; }
    if (m.type !== 'reply') return;
    this.kernelCalls = m.kernelCalls;
    const w = this.waiting.get(m.req);
    if (!w) return;
    this.waiting.delete(m.req);
    if (m.error) w.reject(new Error(m.error));
    else w.resolve(m.data);
  }

  private fail(e: Error): void {
    this.failure ??= e;
    for (const w of this.waiting.values()) w.reject(this.failure);
    this.waiting.clear();
  }

  private post(m: ToWorker, transfer: Transferable[] = []): void {
    if (this.failure) throw this.failure;
    this.worker.postMessage(m, transfer);
  }

  private request(m: ToWorker & { req: number }): Promise<Float32Array | undefined> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting.set(m.req, { resolve, reject });
      this.worker.postMessage(m);
    });
  }

  /** Brings kernelCalls up to date (it is otherwise refreshed with every read). */
  async refresh(): Promise<void> {
    await this.request({ op: 'stats', req: this.nextReq++ });
  }

  alloc(length: number): DeviceTensor {
    const t = new WorkerTensor(this.nextId++, length);
    this.post({ op: 'alloc', id: t.id, length });
    return t;
  }

  /** Packed weights cross as bytes (transferred, not cloned) and stay packed in the worker's WebAssembly memory. */
  uploadWeight(m: PackedMatrix): DeviceTensor {
    checkPacked(m, 'uploadWeight');
    if (m.dtype === 'f32') return this.upload(m.data as Float32Array);
    const t = new WorkerTensor(this.nextId++, m.rows * m.cols, m.dtype);
    const bytes = own(m.data as Uint8Array);
    this.post({ op: 'uploadWeight', id: t.id, dtype: m.dtype, rows: m.rows, cols: m.cols, data: bytes }, [bytes.buffer]);
    return t;
  }

  upload(data: Float32Array): DeviceTensor {
    const t = new WorkerTensor(this.nextId++, data.length);
    const copy = own(data);
    this.post({ op: 'upload', id: t.id, data: copy }, [copy.buffer]);
    return t;
  }

  write(t: DeviceTensor, data: Float32Array, offset = 0): void {
    const copy = own(data);
    this.post({ op: 'write', id: asValues(t, 'write').id, data: copy, offset }, [copy.buffer]);
  }

  copy(dst: DeviceTensor, dstOffset: number, src: DeviceTensor, srcOffset: number, length: number): void {
    this.post({ op: 'copy', dst: asValues(dst, 'copy dst').id, dstOffset, src: asValues(src, 'copy src').id, srcOffset, length });
  }

  async read(t: DeviceTensor, offset = 0, length?: number): Promise<Float32Array> {
    const data = await this.request({ op: 'read', req: this.nextReq++, id: asValues(t, 'read').id, offset, length });
    return data!;
  }

  free(t: DeviceTensor): void {
    const w = asWorker(t, 'free');
    w.freed = true;
    if (!this.failure) this.worker.postMessage({ op: 'free', id: w.id } satisfies ToWorker);
  }

  flush(): void {}

  destroy(): void {
    if (!this.failure) this.worker.postMessage({ op: 'destroy' } satisfies ToWorker);
    this.fail(new Error('the CPU worker was shut down'));
    // Let the worker see the destroy message; terminate in any case.
    setTimeout(() => this.worker.terminate(), 1000);
  }

  private call(name: KernelOp, args: unknown[]): void {
    const transfer: Transferable[] = [];
    const encoded = args.map((a) => {
      if (a instanceof WorkerTensor) return { tensor: asWorker(a, name).id };
      if (a instanceof Int32Array || a instanceof Float32Array) { const c = own(a); transfer.push(c.buffer); return c; }
      // Shapes and windows are plain objects (copied by structured clone); anything else is a mistake.
      if (a !== null && typeof a === 'object' && Object.getPrototypeOf(a) !== Object.prototype) {
        throw new TypeError(`${name}: not a CPU-worker tensor (allocated by another backend?)`);
      }
      // A plain object's tensors (the compensation state) become refs too.
      if (a !== null && typeof a === 'object') {
        return Object.fromEntries(Object.entries(a).map(([key, x]) => [key, x instanceof WorkerTensor ? { tensor: asWorker(x, name).id } : x]));
      }
      return a;
    });
    this.post({ op: 'call', name, args: encoded }, transfer);
  }

  embed(out: DeviceTensor, table: DeviceTensor, ids: Int32Array, dim: number): void {
    this.call('embed', [out, table, ids, dim]);
  }
  rmsnorm(out: DeviceTensor, x: DeviceTensor, weight: DeviceTensor, rows: number, dim: number, eps: number): void {
    this.call('rmsnorm', [out, x, weight, rows, dim, eps]);
  }
  matmul(out: DeviceTensor, x: DeviceTensor, w: DeviceTensor, bias: DeviceTensor | null,
    rows: number, inDim: number, outDim: number, accumulate = false, xOffset = 0, norm: InputNorm | null = null): void {
    this.call('matmul', [out, x, w, bias, rows, inDim, outDim, accumulate, xOffset, norm && { weight: norm.weight, eps: norm.eps }]);
  }
  rope(x: DeviceTensor, rows: number, numHeads: number, headDim: number, positions: Int32Array, invFreq: DeviceTensor): void {
    this.call('rope', [x, rows, numHeads, headDim, positions, invFreq]);
  }
  siluMul(out: DeviceTensor, gate: DeviceTensor, up: DeviceTensor, n: number): void {
    this.call('siluMul', [out, gate, up, n]);
  }
  add(x: DeviceTensor, y: DeviceTensor, n: number): void {
    this.run(ADD_KERNEL, [x, y], { n });
  }
  /** Any named kernel: checked here (so a bad call throws at once), run in the worker by the same declaration. */
  run(kernel: KernelDef, tensors: readonly DeviceTensor[], scalars: KernelScalars): void {
    checkKernelCall(kernel, tensors, scalars);
    const ids = tensors.map((t, i) => asValues(t, `run ${kernel.name} ${kernel.tensors[i]}`).id);
    this.post({ op: 'run', kernel, tensors: ids, scalars: { ...scalars } });
  }
  kvAppend(kCache: DeviceTensor, vCache: DeviceTensor, k: DeviceTensor, v: DeviceTensor,
    rows: number, numKvHeads: number, headDim: number, capacity: number, pastLen: number, dtype: KvDType = 'f32',
    numValueHeads = numKvHeads): void {
    this.call('kvAppend', [kCache, vCache, k, v, rows, numKvHeads, headDim, capacity, pastLen, dtype, numValueHeads]);
  }
  attention(out: DeviceTensor, q: DeviceTensor, kCache: DeviceTensor, vCache: DeviceTensor,
    shape: AttentionShape, capacity: number, dtype: KvDType = 'f32'): void {
    this.call('attention', [out, q, kCache, vCache, { ...shape }, capacity, dtype]);
  }
  streamingAttention(out: DeviceTensor, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor,
    kRing: DeviceTensor, vRing: DeviceTensor, shape: AttentionShape, window: StreamingWindow,
    compensation: Compensation | null = null, dtype: KvDType = 'f32', logSumExp = false): void {
    this.call('streamingAttention', [out, q, k, v, kRing, vRing, { ...shape }, { sink: window.sink, recent: window.recent },
      compensation && { kSum: compensation.kSum, vSum: compensation.vSum }, dtype, logSumExp]);
  }
  ringAppend(kRing: DeviceTensor, vRing: DeviceTensor, k: DeviceTensor, v: DeviceTensor,
    rows: number, numKvHeads: number, headDim: number, pastLen: number, window: StreamingWindow,
    compensation: Compensation | null = null, dtype: KvDType = 'f32', numValueHeads = numKvHeads): void {
    this.call('ringAppend', [kRing, vRing, k, v, rows, numKvHeads, headDim, pastLen, { sink: window.sink, recent: window.recent },
      compensation && { kSum: compensation.kSum, vSum: compensation.vSum }, dtype, numValueHeads]);
  }
}
