// Training tensors live in the kernel module's linear memory so the SIMD GEMM can work on them in
// place. The memory is grown once to a fixed size and then handed out by a bump allocator, so the
// Float32Array views stay valid for the whole run (growing would detach them).
import { instantiateKernels, type KernelExports } from '../cpu/wasm.js';

const PAGE = 65536;

export class Arena {
  private top: number;
  private constructor(readonly kernels: KernelExports, readonly memory: WebAssembly.Memory, readonly capacity: number) {
    this.top = Math.ceil(kernels.heapBase() / 16) * 16;
  }

  /** An arena of `bytes` bytes (or of what `size` asks for, given the kernels' own scratch needs). */
  static async create(size: number | ((kernels: KernelExports) => number)): Promise<Arena> {
    const { kernels, memory } = await instantiateKernels();
    const bytes = typeof size === 'number' ? size : size(kernels);
    const need = Math.ceil(bytes / PAGE) - memory.buffer.byteLength / PAGE + 1;
    if (need > 0) memory.grow(need);
    return new Arena(kernels, memory, memory.buffer.byteLength);
  }

  /** A zeroed f32 view of n elements, 16-byte aligned. */
  f32(n: number): Float32Array {
    const bytes = Math.ceil((n * 4) / 16) * 16;
    if (this.top + bytes > this.capacity) {
      throw new RangeError(`training arena full: ${n} floats asked with ${this.top} of ${this.capacity} bytes used (make the arena larger)`);
    }
    const view = new Float32Array(this.memory.buffer, this.top, n);
    this.top += bytes;
    return view;
  }

  get used(): number { return this.top; }

  /**
   * out[r·ldo + o] += Σ_i x[r·ldx + i] · w[o·ldw + i], r < rows, i < inner, o < cols.
   * All three must be views into this arena (subarrays give offsets).
   */
  gemmAdd(out: Float32Array, ldo: number, x: Float32Array, ldx: number, w: Float32Array, ldw: number,
    rows: number, inner: number, cols: number): void {
    this.kernels.gemmAdd(out.byteOffset, ldo, x.byteOffset, ldx, w.byteOffset, ldw, rows, inner, cols);
  }
}

/** dst[c][r] = src[r][c] for an rows × cols block with row stride lds (dst is dense cols × rows). */
export function transpose(dst: Float32Array, src: Float32Array, rows: number, cols: number, lds = cols): void {
  for (let r = 0; r < rows; r++) {
    const base = r * lds;
    for (let c = 0; c < cols; c++) dst[c * rows + r] = src[base + c];
  }
}
