// The CPU Backend: every op runs at once in the SIMD WebAssembly kernels (assembly/). Tensors are
// blocks of the kernel module's linear memory; host inputs (token ids, positions) are staged in
// short-lived blocks. Attention works on query tiles with O(tile) scratch, so memory does not grow
// with the context beyond the caches themselves.
import { checkHeadMaps, checkInputNorm, type AttentionShape, type Backend, type Compensation, type DeviceTensor, type InputNorm, type StreamingWindow } from '../backend/contract.js';
import { WasmHeap } from './memory.js';
import { CONTROL_BYTES, KernelThreads, MAX_ARGS, Op, runShare, type StartWorker } from './threads.js';
import { instantiateKernels, kernelMemory, kernelModule, type KernelExports } from './wasm.js';
import { ADD_KERNEL, checkKernelCall, type KernelDef, type KernelScalars } from '../backend/kernels.js';
import { KV_DTYPE_ID, checkKvDType, kvRowWords, type KvDType } from '../backend/kv-dtype.js';
import { GGML_TYPE, checkPacked, dequantizeRow, packedBytes, rowBytes, type PackedMatrix, type WeightDType } from '../model/quant.js';

/** Query rows per attention tile (tile = rows × GQA group query vectors sharing each K/V block). */
const TILE_ROWS = 16;
/** Below this many multiply-adds a job stays on the calling thread (waking workers costs more). */
const MIN_PARALLEL_WORK = 1 << 15;

export class CpuTensor implements DeviceTensor {
  freed = false;
  constructor(readonly ptr: number, readonly length: number) {}
}

/** A weight matrix in packed storage (quant.ts): `length` counts its rows × cols elements. */
export class CpuWeight extends CpuTensor {
  constructor(ptr: number, readonly dtype: WeightDType, readonly rows: number, readonly cols: number, readonly byteLength: number) {
    super(ptr, rows * cols);
  }
}

function asCpu(t: DeviceTensor, what: string): CpuTensor {
  if (!(t instanceof CpuTensor)) throw new TypeError(`${what}: not a CPU tensor (allocated by another backend?)`);
  if (t.freed) throw new Error(`${what}: tensor used after free`);
  return t;
}

function need(t: DeviceTensor, elements: number, what: string): void {
  if (elements > t.length) throw new RangeError(`${what}: needs ${elements} elements, the tensor has ${t.length}`);
}

function count(n: number, what: string): void {
  if (!(Number.isInteger(n) && n >= 0)) throw new RangeError(`${what} must be a non-negative integer (got ${n})`);
}

export class CpuBackend implements Backend {
  readonly kind = 'cpu' as const;
  /** Kernel invocations so far (proof of which side did the work). */
  kernelCalls = 0;
  private readonly heap: WasmHeap;
  private threads: KernelThreads | null = null;
  private minParallelWork = MIN_PARALLEL_WORK;
  /** A job's arguments when it runs on this thread alone (the threads read theirs from shared memory). */
  private readonly single = new Float64Array(MAX_ARGS);

  constructor(private readonly k: KernelExports, memory: WebAssembly.Memory) {
    this.heap = new WasmHeap(memory, k.heapBase());
  }

  get threadCount(): number { return this.threads?.count ?? 1; }
  /** Shares of split jobs that worker threads ran (proof that the threads did work). */
  get workerShares(): number { return this.threads?.workerShares ?? this.stoppedShares; }
  private stoppedShares = 0;
  get description(): string {
    const n = this.threadCount;
    return `WebAssembly SIMD (f32x4), ${n === 1 ? 'single thread' : `${n} threads`}`;
  }

  /** Starts worker threads (the memory must be shared); called once by createCpuBackend. */
  async startThreads(count: number, startWorker: StartWorker, minParallelWork = MIN_PARALLEL_WORK): Promise<void> {
    this.minParallelWork = minParallelWork;
    const control = this.heap.alloc(CONTROL_BYTES);
    this.threads = await KernelThreads.start(count, [this.heap.memory], await kernelModule(true), this.heap.memory.buffer as unknown as SharedArrayBuffer, control, startWorker);
  }

  /** Runs fn with every job on the calling thread (the bench's one-thread baseline). */
  singleThreaded<T>(fn: () => T): T {
    const keep = this.threads;
    this.threads = null;
    try { return fn(); } finally { this.threads = keep; }
  }

  /**
   * The bench's roofline probes on every kernel thread at once (bypassing the small-job threshold),
   * so rows measured on all threads are compared with the roofline of all threads: `read` streams
   * `bytes` at `ptr` split over the threads; `peak` runs `iters` iterations on each thread.
   */
  probeAllThreads(kind: 'read', ptr: number, bytes: number, reps: number): void;
  probeAllThreads(kind: 'peak', iters: number): void;
  probeAllThreads(kind: 'read' | 'peak', ...args: number[]): void {
    const op = kind === 'read' ? Op.ProbeRead : Op.ProbePeak;
    if (this.threads) { this.threads.run(this.k, op, args); return; }
    this.single.set(args);
    runShare(this.k, op, this.single, 0, 1);
  }

  /** Runs a job split across the threads when it is big enough, else on this thread. */
  private job(op: Op, args: number[], work: number): void {
    this.kernelCalls++;
    if (this.threads && work >= this.minParallelWork) { this.threads.run(this.k, op, args); return; }
    this.single.set(args);
    runShare(this.k, op, this.single, 0, 1);
  }

  /** Bytes of WebAssembly memory held (tensors, caches, free gaps). */
  get memoryBytes(): number { return this.heap.highWater; }

  alloc(length: number): CpuTensor {
    count(length, 'alloc length');
    const ptr = this.heap.alloc(length * 4);
    this.heap.f32.fill(0, ptr >>> 2, (ptr >>> 2) + length);
    return new CpuTensor(ptr, length);
  }

  upload(data: Float32Array): CpuTensor {
    const ptr = this.heap.alloc(data.length * 4);
    this.heap.f32.set(data, ptr >>> 2);
    return new CpuTensor(ptr, data.length);
  }

  uploadWeight(m: PackedMatrix): CpuTensor {
    checkPacked(m, 'uploadWeight');
    if (m.dtype === 'f32') return this.upload(m.data as Float32Array);
    const bytes = packedBytes(m);
    const ptr = this.heap.alloc(bytes);
    new Uint8Array(this.heap.memory.buffer, ptr, bytes).set(m.data as Uint8Array);
    return new CpuWeight(ptr, m.dtype, m.rows, m.cols, bytes);
  }

  write(t: DeviceTensor, data: Float32Array, offset = 0): void {
    const c = asCpu(t, 'write');
    if (c instanceof CpuWeight) throw new TypeError(`write: the tensor holds packed ${c.dtype} weights`);
    count(offset, 'write offset');
    need(t, offset + data.length, 'write');
    this.heap.f32.set(data, (c.ptr >>> 2) + offset);
  }

  copy(dst: DeviceTensor, dstOffset: number, src: DeviceTensor, srcOffset: number, length: number): void {
    const d = asCpu(dst, 'copy dst'), s = asCpu(src, 'copy src');
    count(dstOffset, 'copy dstOffset'); count(srcOffset, 'copy srcOffset'); count(length, 'copy length');
    need(dst, dstOffset + length, 'copy dst');
    need(src, srcOffset + length, 'copy src');
    const f = this.heap.f32;
    f.copyWithin((d.ptr >>> 2) + dstOffset, (s.ptr >>> 2) + srcOffset, (s.ptr >>> 2) + srcOffset + length);
  }

  async read(t: DeviceTensor, offset = 0, length?: number): Promise<Float32Array> {
    const c = asCpu(t, 'read');
    if (c instanceof CpuWeight) throw new TypeError(`read: the tensor holds packed ${c.dtype} weights`);
    const n = length ?? t.length - offset;
    count(offset, 'read offset'); count(n, 'read length');
    need(t, offset + n, 'read');
    const start = (c.ptr >>> 2) + offset;
    return this.heap.f32.slice(start, start + n);
  }

  free(t: DeviceTensor): void {
    const c = asCpu(t, 'free');
    c.freed = true;
    this.heap.release(c.ptr, c instanceof CpuWeight ? c.byteLength : c.length * 4);
  }

  flush(): void {}
  destroy(): void {
    this.stoppedShares = this.workerShares;
    this.threads?.stop();
    this.threads = null;
  }

  embed(out: DeviceTensor, table: DeviceTensor, ids: Int32Array, dim: number): void {
    const o = asCpu(out, 'embed out'), tb = asCpu(table, 'embed table');
    need(out, ids.length * dim, 'embed out');
    const vocab = Math.floor(table.length / dim);
    const f = this.heap.f32;
    const packed = tb instanceof CpuWeight ? this.packedView(tb) : null;
    if (packed && packed.cols !== dim) throw new RangeError(`embed: the table's rows have ${packed.cols} elements, not ${dim}`);
    ids.forEach((id, r) => {
      if (!(id >= 0 && id < vocab)) throw new RangeError(`embed: token id ${id} is outside the vocabulary (0..${vocab - 1})`);
      if (packed) { dequantizeRow(packed, id, f, (o.ptr >>> 2) + r * dim); return; }
      const src = (tb.ptr >>> 2) + id * dim;
      f.copyWithin((o.ptr >>> 2) + r * dim, src, src + dim);
    });
  }

  rmsnorm(out: DeviceTensor, x: DeviceTensor, weight: DeviceTensor, rows: number, dim: number, eps: number): void {
    need(x, rows * dim, 'rmsnorm x'); need(out, rows * dim, 'rmsnorm out'); need(weight, dim, 'rmsnorm weight');
    this.kernelCalls++;
    this.k.rmsnorm(asCpu(out, 'rmsnorm').ptr, asCpu(x, 'rmsnorm').ptr, asCpu(weight, 'rmsnorm').ptr, rows, dim, eps);
  }

  matmul(out: DeviceTensor, x: DeviceTensor, w: DeviceTensor, bias: DeviceTensor | null,
    rows: number, inDim: number, outDim: number, accumulate = false, xOffset = 0, norm: InputNorm | null = null): void {
    need(x, xOffset + rows * inDim, 'matmul x'); need(w, inDim * outDim, 'matmul w'); need(out, rows * outDim, 'matmul out');
    if (bias) need(bias, outDim, 'matmul bias');
    if (norm) {
      // The norm runs once into scratch (the same kernel as rmsnorm, so the result is identical to
      // rmsnorm then matmul); the GPU folds it into the matmul's loads instead.
      checkInputNorm(norm, inDim, 'matmul');
      const bytes = rows * inDim * 4, xn = this.heap.alloc(bytes);
      try {
        this.kernelCalls++;
        this.k.rmsnorm(xn, asCpu(x, 'matmul x').ptr + xOffset * 4, asCpu(norm.weight, 'matmul norm weight').ptr, rows, inDim, norm.eps);
        this.matmulAt(out, xn, w, bias, rows, inDim, outDim, accumulate);
      } finally { this.heap.release(xn, bytes); }
      return;
    }
    this.matmulAt(out, asCpu(x, 'matmul').ptr + xOffset * 4, w, bias, rows, inDim, outDim, accumulate);
  }

  /** The matmul of rows of x starting at heap address xPtr. */
  private matmulAt(out: DeviceTensor, xPtr: number, w: DeviceTensor, bias: DeviceTensor | null,
    rows: number, inDim: number, outDim: number, accumulate: boolean): void {
    if (w instanceof CpuWeight) {
      if (w.rows !== outDim || w.cols !== inDim) throw new RangeError(`matmul: packed ${w.dtype} weights are [${w.rows}, ${w.cols}], the call needs [${outDim}, ${inDim}]`);
      const dtype = GGML_TYPE[w.dtype as Exclude<WeightDType, 'f32'>];
      const bytes = Math.ceil(this.k.packedScratchFloats(dtype, inDim) / 4) * 16;
      const scratch = this.heap.alloc(bytes * this.threadCount);
      try {
        this.job(Op.MatmulPacked, [asCpu(out, 'matmul').ptr, xPtr, asCpu(w, 'matmul').ptr,
          bias ? asCpu(bias, 'matmul bias').ptr : 0, rows, inDim, outDim, accumulate ? 1 : 0, dtype, rowBytes(w.dtype, inDim), scratch, bytes],
        rows * inDim * outDim);
      } finally { this.heap.release(scratch, bytes * this.threadCount); }
      return;
    }
    this.job(Op.Matmul, [asCpu(out, 'matmul').ptr, xPtr, asCpu(w, 'matmul').ptr,
      bias ? asCpu(bias, 'matmul bias').ptr : 0, rows, inDim, outDim, accumulate ? 1 : 0], rows * inDim * outDim);
  }

  rope(x: DeviceTensor, rows: number, numHeads: number, headDim: number, positions: Int32Array, invFreq: DeviceTensor): void {
    need(x, rows * numHeads * headDim, 'rope x'); need(invFreq, headDim / 2, 'rope invFreq');
    if (positions.length < rows) throw new RangeError(`rope: ${rows} rows but ${positions.length} positions`);
    const pos = this.stageInts(positions.subarray(0, rows));
    try {
      this.kernelCalls++;
      this.k.rope(asCpu(x, 'rope').ptr, rows, numHeads, headDim, pos, asCpu(invFreq, 'rope').ptr);
    } finally { this.heap.release(pos, rows * 4); }
  }

  siluMul(out: DeviceTensor, gate: DeviceTensor, up: DeviceTensor, n: number): void {
    need(out, n, 'siluMul out'); need(gate, n, 'siluMul gate'); need(up, n, 'siluMul up');
    this.kernelCalls++;
    this.k.siluMul(asCpu(out, 'siluMul').ptr, asCpu(gate, 'siluMul').ptr, asCpu(up, 'siluMul').ptr, n);
  }

  add(x: DeviceTensor, y: DeviceTensor, n: number): void {
    this.run(ADD_KERNEL, [x, y], { n });
  }

  /** A named kernel (../backend/kernels.ts): the WASM export its declaration names, on this thread. */
  run(kernel: KernelDef, tensors: readonly DeviceTensor[], scalars: KernelScalars): void {
    checkKernelCall(kernel, tensors, scalars);
    const cpu = kernel.cpu;
    if (!cpu) throw new Error(`run ${kernel.name}: the kernel has no CPU (WASM) implementation`);
    const exports = this.k as unknown as Record<string, unknown>;
    const fn = exports[cpu.export], floats = cpu.scratch && exports[cpu.scratch.export];
    if (typeof fn !== 'function') throw new Error(`run ${kernel.name}: the CPU kernel module has no export '${cpu.export}'`);
    if (cpu.scratch && typeof floats !== 'function') throw new Error(`run ${kernel.name}: the CPU kernel module has no export '${cpu.scratch.export}'`);
    const ptr = (name: string): number => {
      const t = tensors[kernel.tensors.indexOf(name)];
      const c = asCpu(t, `run ${kernel.name} ${name}`);
      if (c instanceof CpuWeight) throw new TypeError(`run ${kernel.name} ${name}: the tensor holds packed ${c.dtype} weights`);
      return c.ptr;
    };
    const value = (name: string): number => {
      if (kernel.tensors.includes(name)) return ptr(name);
      if (name in scalars) return scalars[name];
      throw new Error(`run ${kernel.name}: CPU argument '${name}' is neither a tensor, a scalar nor 'scratch'`);
    };
    const scratchBytes = cpu.scratch ? Math.ceil((floats as (...a: number[]) => number)(...cpu.scratch.args.map(value)) / 4) * 16 : 0;
    const scratch = scratchBytes > 0 ? this.heap.alloc(scratchBytes) : 0;
    try {
      const args = cpu.args.map((a) => (typeof a === 'string' ? (a === 'scratch' ? scratch : value(a)) : ptr(a.tensor) + value(a.offset) * 4));
      this.kernelCalls++;
      (fn as (...a: number[]) => void)(...args);
    } finally { if (scratch) this.heap.release(scratch, scratchBytes); }
  }

  kvAppend(kCache: DeviceTensor, vCache: DeviceTensor, k: DeviceTensor, v: DeviceTensor,
    rows: number, numKvHeads: number, headDim: number, capacity: number, pastLen: number, dtype: KvDType = 'f32',
    numValueHeads = numKvHeads): void {
    if (pastLen + rows > capacity) throw new RangeError(`kvAppend: ${pastLen + rows} positions exceed the cache capacity ${capacity}`);
    count(numValueHeads, 'kvAppend numValueHeads');
    const row = capacity * kvRowWords(headDim, checkKvDType(dtype, 'kvAppend'));
    need(kCache, numKvHeads * row, 'kvAppend kCache'); need(vCache, numValueHeads * row, 'kvAppend vCache');
    need(k, rows * numKvHeads * headDim, 'kvAppend k'); need(v, rows * numValueHeads * headDim, 'kvAppend v');
    this.kernelCalls++;
    this.k.kvAppend(asCpu(kCache, 'kvAppend').ptr, asCpu(vCache, 'kvAppend').ptr, asCpu(k, 'kvAppend').ptr,
      asCpu(v, 'kvAppend').ptr, rows, numKvHeads, headDim, capacity, pastLen, KV_DTYPE_ID[dtype], numValueHeads);
  }

  attention(out: DeviceTensor, q: DeviceTensor, kCache: DeviceTensor, vCache: DeviceTensor,
    shape: AttentionShape, capacity: number, dtype: KvDType = 'f32'): void {
    const { rows, numHeads, numKvHeads, headDim, pastLen, scale, maps } = shape;
    if (maps) checkHeadMaps(maps, numHeads, numKvHeads, 'attention');
    else checkGroups(numHeads, numKvHeads);
    if (pastLen + rows > capacity) throw new RangeError(`attention: ${pastLen + rows} positions exceed the cache capacity ${capacity}`);
    need(q, rows * numHeads * headDim, 'attention q'); need(out, rows * numHeads * headDim, 'attention out');
    const row = capacity * kvRowWords(headDim, checkKvDType(dtype, 'attention'));
    need(kCache, numKvHeads * row, 'attention kCache'); need(vCache, (maps?.numValueHeads ?? numKvHeads) * row, 'attention vCache');
    const id = KV_DTYPE_ID[dtype];
    // Decoupled heads: every query head is its own unit (group 1), with its key and value head from the maps.
    const units = maps ? numHeads : numKvHeads;
    const group = numHeads / units;
    const floats = this.k.attentionScratchFloats(TILE_ROWS * group, headDim) + this.k.kvDecodeScratchFloats(headDim, id);
    const mapPtr = maps ? this.stageInts(Int32Array.from([...maps.queryToKey, ...maps.queryToValue])) : 0;
    try {
      this.withScratch(floats, (scratch, bytes) => {
        this.job(Op.Attention, [asCpu(out, 'attention').ptr, asCpu(q, 'attention').ptr, asCpu(kCache, 'attention').ptr,
          asCpu(vCache, 'attention').ptr, rows, numHeads, units, headDim, pastLen, scale, capacity, scratch, bytes, TILE_ROWS, id,
          mapPtr, mapPtr && mapPtr + 4 * numHeads],
        rows * (pastLen + rows) * numHeads * headDim);
      });
    } finally { if (mapPtr) this.heap.release(mapPtr, 8 * numHeads); }
  }

  streamingAttention(out: DeviceTensor, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor,
    kRing: DeviceTensor, vRing: DeviceTensor, shape: AttentionShape, window: StreamingWindow,
    compensation: Compensation | null = null, dtype: KvDType = 'f32', logSumExp = false): void {
    const { rows, numHeads, numKvHeads, headDim, pastLen, scale, maps } = shape;
    if (maps) {
      checkHeadMaps(maps, numHeads, numKvHeads, 'streamingAttention');
      if (compensation) throw new Error('streamingAttention: compensation with decoupled key/value heads (DHA) is not supported');
    } else checkGroups(numHeads, numKvHeads);
    checkWindow(window);
    const nV = maps?.numValueHeads ?? numKvHeads;
    const slots = window.sink + window.recent, W = kvRowWords(headDim, checkKvDType(dtype, 'streamingAttention'));
    need(q, rows * numHeads * headDim, 'streamingAttention q');
    need(out, rows * numHeads * (headDim + (logSumExp ? 1 : 0)), logSumExp ? 'streamingAttention out (rows, then the log-sum-exps)' : 'streamingAttention out');
    need(k, rows * numKvHeads * headDim, 'streamingAttention k'); need(v, rows * nV * headDim, 'streamingAttention v');
    need(kRing, numKvHeads * slots * W, 'streamingAttention kRing'); need(vRing, nV * slots * W, 'streamingAttention vRing');
    const [kSum, vSum] = compensationPtrs(compensation, numKvHeads * headDim, 'streamingAttention');
    const id = KV_DTYPE_ID[dtype];
    // Decoupled heads: every query head is its own unit (group 1), with its key and value ring heads from the maps.
    const units = maps ? numHeads : numKvHeads;
    const mapPtr = maps ? this.stageInts(Int32Array.from([...maps.queryToKey, ...maps.queryToValue])) : 0;
    const outPtr = asCpu(out, 'streamingAttention').ptr;
    const lsePtr = logSumExp ? outPtr + rows * numHeads * headDim * 4 : 0;
    const run = (kPtr: number, vPtr: number) => {
      this.withScratch(this.k.streamingScratchFloats(TILE_ROWS * (numHeads / units), headDim, slots, id), (scratch, bytes) => {
        this.job(Op.Streaming, [outPtr, asCpu(q, 'streamingAttention').ptr,
          kPtr, vPtr, asCpu(kRing, 'streamingAttention').ptr,
          asCpu(vRing, 'streamingAttention').ptr, rows, numHeads, units, headDim, pastLen, scale,
          window.sink, window.recent, scratch, bytes, TILE_ROWS, kSum, vSum, id,
          mapPtr, mapPtr && mapPtr + 4 * numHeads, numKvHeads, nV, lsePtr], rows * Math.min(pastLen + rows, slots + rows) * numHeads * headDim);
      });
    };
    try {
      if (dtype === 'f32') { run(asCpu(k, 'streamingAttention').ptr, asCpu(v, 'streamingAttention').ptr); return; }
      // A packed ring: the chunk's own keys and values are attended as the ring will store them.
      const nk = rows * numKvHeads, nv = rows * nV, kBytes = nk * headDim * 4, vBytes = nv * headDim * 4, tmpBytes = W * 4;
      const kr = this.heap.alloc(kBytes), vr = this.heap.alloc(vBytes), tmp = this.heap.alloc(tmpBytes);
      try {
        this.k.roundRows(kr, asCpu(k, 'streamingAttention').ptr, nk, headDim, id, tmp);
        this.k.roundRows(vr, asCpu(v, 'streamingAttention').ptr, nv, headDim, id, tmp);
        run(kr, vr);
      } finally { this.heap.release(tmp, tmpBytes); this.heap.release(vr, vBytes); this.heap.release(kr, kBytes); }
    } finally { if (mapPtr) this.heap.release(mapPtr, 8 * numHeads); }
  }

  ringAppend(kRing: DeviceTensor, vRing: DeviceTensor, k: DeviceTensor, v: DeviceTensor,
    rows: number, numKvHeads: number, headDim: number, pastLen: number, window: StreamingWindow,
    compensation: Compensation | null = null, dtype: KvDType = 'f32', numValueHeads = numKvHeads): void {
    checkWindow(window);
    count(numValueHeads, 'ringAppend numValueHeads');
    if (compensation && numValueHeads !== numKvHeads) throw new Error('ringAppend: compensation with decoupled key/value heads (DHA) is not supported');
    const slots = window.sink + window.recent, W = kvRowWords(headDim, checkKvDType(dtype, 'ringAppend'));
    need(kRing, numKvHeads * slots * W, 'ringAppend kRing'); need(vRing, numValueHeads * slots * W, 'ringAppend vRing');
    need(k, rows * numKvHeads * headDim, 'ringAppend k'); need(v, rows * numValueHeads * headDim, 'ringAppend v');
    const [kSum, vSum] = compensationPtrs(compensation, numKvHeads * headDim, 'ringAppend');
    const id = KV_DTYPE_ID[dtype];
    this.kernelCalls++;
    if (compensation) {
      const scratchBytes = Math.max(4, this.k.compensationScratchFloats(headDim, id) * 4);
      const scratch = this.heap.alloc(scratchBytes);
      try {
        this.k.compensationAppend(kSum, vSum, asCpu(kRing, 'ringAppend').ptr, asCpu(vRing, 'ringAppend').ptr, asCpu(k, 'ringAppend').ptr,
          asCpu(v, 'ringAppend').ptr, rows, numKvHeads, headDim, pastLen, window.sink, window.recent, id, scratch);
      } finally { this.heap.release(scratch, scratchBytes); }
    }
    this.k.ringAppend(asCpu(kRing, 'ringAppend').ptr, asCpu(vRing, 'ringAppend').ptr, asCpu(k, 'ringAppend').ptr,
      asCpu(v, 'ringAppend').ptr, rows, numKvHeads, headDim, pastLen, window.sink, window.recent, id, numValueHeads);
  }

  /** A packed weight's bytes as a PackedMatrix view of the kernel memory. */
  private packedView(w: CpuWeight): PackedMatrix {
    return { dtype: w.dtype, rows: w.rows, cols: w.cols, data: new Uint8Array(this.heap.memory.buffer, w.ptr, w.byteLength) };
  }

  private stageInts(values: Int32Array): number {
    const ptr = this.heap.alloc(values.length * 4);
    this.heap.i32.set(values, ptr >>> 2);
    return ptr;
  }

  /** One attention scratch block per thread (each thread's share uses its own). */
  private withScratch(floatsPerThread: number, run: (scratch: number, bytesPerThread: number) => void): void {
    const bytes = Math.ceil(floatsPerThread / 4) * 16;
    const total = bytes * this.threadCount;
    const scratch = this.heap.alloc(total);
    try { run(scratch, bytes); } finally { this.heap.release(scratch, total); }
  }
}

function checkGroups(numHeads: number, numKvHeads: number): void {
  if (!(numKvHeads > 0 && numHeads % numKvHeads === 0)) {
    throw new RangeError(`attention: ${numHeads} query heads are not a multiple of ${numKvHeads} KV heads`);
  }
}

/** The compensation sums' pointers (0, 0 without compensation), each checked for [numKvHeads][headDim]. */
function compensationPtrs(c: Compensation | null, floats: number, what: string): [number, number] {
  if (!c) return [0, 0];
  need(c.kSum, floats, `${what} compensation kSum`); need(c.vSum, floats, `${what} compensation vSum`);
  return [asCpu(c.kSum, what).ptr, asCpu(c.vSum, what).ptr];
}

function checkWindow(w: StreamingWindow): void {
  if (!(Number.isInteger(w.sink) && w.sink >= 0 && Number.isInteger(w.recent) && w.recent >= 1)) {
    throw new RangeError(`streaming window needs sink ≥ 0 and recent ≥ 1 (got sink ${w.sink}, recent ${w.recent})`);
  }
}

export interface CpuOptions {
  /** Threads for the kernels (default 1); more than one needs `startWorker` and shared memory. */
  threads?: number;
  startWorker?: StartWorker;
  /** Jobs smaller than this (multiply-adds) run on the calling thread; tests set 0 to split everything. */
  minParallelWork?: number;
}

/** A CPU backend with its own kernel instance and memory (shared with its workers when threaded). */
export async function createCpuBackend(options: CpuOptions = {}): Promise<CpuBackend> {
  const threads = options.threads ?? 1;
  if (!(Number.isInteger(threads) && threads >= 1)) throw new RangeError(`threads must be a positive integer (got ${threads})`);
  if (threads > 1 && !options.startWorker) throw new Error('CPU backend: threads > 1 need a way to start workers in this environment');
  const { kernels, memory } = await instantiateKernels(kernelMemory(threads > 1));
  const backend = new CpuBackend(kernels, memory);
  if (threads > 1) await backend.startThreads(threads, options.startWorker!, options.minParallelWork);
  return backend;
}
