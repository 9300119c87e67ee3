// The WASM kernels' linear memory and a host-side allocator over it. Kernels never allocate: the
// host hands them byte addresses. Blocks are 16-byte aligned (f32x4 loads) and managed first-fit
// with coalescing; memory grows on demand up to wasm32's 4 GiB.

const PAGE = 65536;
const ALIGN = 16;
const MAX_PAGES = 65536;

interface Block { start: number; size: number }

export class WasmHeap {
  /** Free blocks sorted by start. */
  private readonly free: Block[] = [];
  private top: number;
  private f32View: Float32Array;
  private i32View: Int32Array;

  constructor(readonly memory: WebAssembly.Memory, heapBase: number) {
    this.top = align(heapBase);
    this.f32View = new Float32Array(memory.buffer);
    this.i32View = new Int32Array(memory.buffer);
  }

  /** Bytes in use or held free below the top (the memory's high-water mark). */
  get highWater(): number { return this.top; }

  /** Current f32 view of the whole memory (replaced when memory grows). */
  get f32(): Float32Array { this.refresh(); return this.f32View; }
  get i32(): Int32Array { this.refresh(); return this.i32View; }

  /** A 16-byte-aligned block of at least `bytes` bytes; contents undefined. */
  alloc(bytes: number): number {
    const size = Math.max(ALIGN, align(bytes));
    for (let i = 0; i < this.free.length; i++) {
      const b = this.free[i];
      if (b.size < size) continue;
      const start = b.start;
      if (b.size === size) this.free.splice(i, 1);
      else { b.start += size; b.size -= size; }
      return start;
    }
    const start = this.top;
    const end = start + size;
    const have = this.memory.buffer.byteLength;
    if (end > have) {
      const pages = Math.ceil((end - have) / PAGE);
      if (have / PAGE + pages > MAX_PAGES) {
        throw new RangeError(`CPU backend: out of WebAssembly memory (asked for ${bytes} bytes with ${start} in use; wasm32 allows 4 GiB)`);
      }
      this.memory.grow(pages);
    }
    this.top = end;
    return start;
  }

  release(start: number, bytes: number): void {
    const size = Math.max(ALIGN, align(bytes));
    let i = 0;
    while (i < this.free.length && this.free[i].start < start) i++;
    this.free.splice(i, 0, { start, size });
    // Merge with the neighbours, then give a free tail back to the bump pointer.
    if (i + 1 < this.free.length && this.free[i].start + this.free[i].size === this.free[i + 1].start) {
      this.free[i].size += this.free[i + 1].size;
      this.free.splice(i + 1, 1);
    }
    if (i > 0 && this.free[i - 1].start + this.free[i - 1].size === this.free[i].start) {
      this.free[i - 1].size += this.free[i].size;
      this.free.splice(i, 1);
      i--;
    }
    const last = this.free[this.free.length - 1];
    if (last && last.start + last.size === this.top) {
      this.top = last.start;
      this.free.pop();
    }
  }

  private refresh(): void {
    if (this.f32View.buffer !== this.memory.buffer) {
      this.f32View = new Float32Array(this.memory.buffer);
      this.i32View = new Int32Array(this.memory.buffer);
    }
  }
}

function align(n: number): number {
  return Math.ceil(n / ALIGN) * ALIGN;
}
