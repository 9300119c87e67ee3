// Instantiates the SIMD kernel module (assembly/ compiled by scripts/build.mjs and embedded as
// base64, so Node and browsers load it the same way, without file I/O).
import { kernelsWasmBase64, sharedKernelsWasmBase64 } from '../generated/kernels-wasm.js';

/** The exports of assembly/index.ts; pointers are byte addresses in `memory`. */
export interface KernelExports {
  heapBase(): number;
  trainAttentionScratchFloats(T: number, hd: number): number;
  trainAttentionForward(o: number, probs: number, q: number, k: number, v: number, T: number, H: number, KV: number, hd: number, scale: number,
    sink: number, recent: number, scratch: number): void;
  trainAttentionBackward(dq: number, dk: number, dv: number, dO: number, probs: number, q: number, k: number, v: number,
    T: number, H: number, KV: number, hd: number, scale: number, scratch: number): void;
  /** out[r][o] += Σ_i x[r][i] · w[o][i]; strides (ldo, ldx, ldw) in elements. */
  gemmAdd(out: number, ldo: number, x: number, ldx: number, w: number, ldw: number, rows: number, inDim: number, outDim: number): void;
  matmul(out: number, ldo: number, x: number, w: number, bias: number, rows: number, inDim: number, outDim: number, accumulate: number): void;
  /** matmul against packed rows (f16/Q8_0/Q4_0/Q4_K by ggml type id) of rowBytes each; scratch: packedScratchFloats floats. */
  matmulPacked(out: number, ldo: number, x: number, w: number, bias: number, rows: number, inDim: number, outDim: number,
    accumulate: number, dtype: number, rowBytes: number, scratch: number): void;
  packedScratchFloats(dtype: number, cols: number): number;
  rmsnorm(out: number, x: number, weight: number, rows: number, dim: number, eps: number): void;
  rope(x: number, rows: number, numHeads: number, headDim: number, positions: number, invFreq: number): void;
  siluMul(out: number, gate: number, up: number, n: number): void;
  add(x: number, y: number, n: number): void;
  attentionScratchFloats(queryVectors: number, headDim: number): number;
  /** dtype: the full cache's storage (kv-dtype.ts KV_DTYPE_ID); scratch adds kvDecodeScratchFloats. */
  attention(out: number, q: number, kCache: number, vCache: number, rows: number, numHeads: number,
    numKvHeads: number, headDim: number, pastLen: number, scale: number, capacity: number, scratch: number, tileRows: number,
    kvStart: number, kvEnd: number, dtype: number, kMap: number, vMap: number): void;
  kvDecodeScratchFloats(headDim: number, dtype: number): number;
  kvAppend(kCache: number, vCache: number, k: number, v: number, rows: number, numKvHeads: number,
    headDim: number, capacity: number, pastLen: number, dtype: number, numVHeads: number): void;
  streamingAttention(out: number, q: number, k: number, v: number, kRing: number, vRing: number,
    rows: number, numHeads: number, numKvHeads: number, headDim: number, pastLen: number, scale: number,
    sink: number, recent: number, scratch: number, tileRows: number, kvStart: number, kvEnd: number, kSum: number, vSum: number,
    dtype: number, kMap: number, vMap: number, numKeyHeads: number, numValueHeads: number, lse: number): void;
  streamingScratchFloats(queryVectors: number, headDim: number, slots: number, dtype: number): number;
  compensationScratchFloats(headDim: number, dtype: number): number;
  /** n f32 rows → the values a KV row of `dtype` stores for them (encode, decode); tmp: one encoded row. */
  roundRows(dst: number, src: number, n: number, headDim: number, dtype: number, tmp: number): void;
  compensationAppend(kSum: number, vSum: number, kRing: number, vRing: number, k: number, v: number, rows: number,
    numKvHeads: number, headDim: number, pastLen: number, sink: number, recent: number, dtype: number, scratch: number): void;
  ringAppend(kRing: number, vRing: number, k: number, v: number, rows: number, numKvHeads: number,
    headDim: number, pastLen: number, sink: number, recent: number, dtype: number, numVHeads: number): void;
  /** Roofline probes (assembly/probe.ts; the bench's, not inference's). */
  probeRead(ptr: number, bytes: number, reps: number): number;
  probePeak(iters: number): number;
  PEAK_PROBE_FLOPS: WebAssembly.Global;
}

const compiled = new Map<boolean, Promise<WebAssembly.Module>>();

function decodeBase64(b64: string): Uint8Array {
  if (typeof Buffer !== 'undefined') return new Uint8Array(Buffer.from(b64, 'base64'));
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** The compiled kernel module; `shared` is the build that imports a shared memory (worker threads). */
export function kernelModule(shared = false): Promise<WebAssembly.Module> {
  if (typeof WebAssembly === 'undefined') return Promise.reject(new Error('CPU backend: this runtime has no WebAssembly'));
  let m = compiled.get(shared);
  if (!m) {
    m = WebAssembly.compile(decodeBase64(shared ? sharedKernelsWasmBase64 : kernelsWasmBase64) as BufferSource).catch((e: unknown) => {
      compiled.delete(shared);
      throw new Error(`CPU backend: the kernel module did not compile (this runtime needs WebAssembly SIMD${shared ? ' and threads' : ''}): ${String(e)}`);
    });
    compiled.set(shared, m);
  }
  return m;
}

/** A linear memory for the kernels: private, or shared between threads (needs SharedArrayBuffer). */
export function kernelMemory(shared = false): WebAssembly.Memory {
  if (shared && typeof SharedArrayBuffer === 'undefined') {
    throw new Error('CPU backend: threads need SharedArrayBuffer (in browsers, a cross-origin isolated page)');
  }
  return new WebAssembly.Memory({ initial: 16, maximum: 65536, shared });
}

/**
 * A kernel instance over `memory` (default: a fresh private memory). Instances of the shared build
 * over one shared memory see the same tensors; each keeps its own globals (tile state).
 */
export async function instantiateKernels(memory = kernelMemory(false), module?: WebAssembly.Module): Promise<{ kernels: KernelExports; memory: WebAssembly.Memory }> {
  const shared = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
  const instance = await WebAssembly.instantiate(module ?? await kernelModule(shared), {
    env: {
      memory,
      abort: (_msg: number, _file: number, line: number, col: number) => {
        throw new Error(`CPU kernel aborted at ${line}:${col}`);
      },
      seed: () => Date.now(),
    },
  });
  return { kernels: instance.exports as unknown as KernelExports, memory };
}
