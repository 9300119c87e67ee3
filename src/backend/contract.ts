// The contract between the engine and a compute device (src/backend/ sits below both: the backends
// import only this folder and src/model/, never the engine). The CPU backend (SIMD WebAssembly) and the
// GPU backend (WebGPU) both implement it, so the forward pass is written once.
//
// Conventions (all f32, row-major):
//  - A "row" is one token. Activations are [rows][dim].
//  - Weights are [outDim][inDim] as stored by Hugging Face (y = x · Wᵀ + b).
//  - Per-head tensors are [rows][numHeads][headDim] (the usual projection output layout).
//  - Full KV caches are head-major: [numKvHeads][capacity] rows; position p of KV head h is row
//    h * capacity + p. A row is kvRowWords(headDim, dtype) 32-bit words (./kv-dtype.ts): headDim f32
//    (f32, the default), headDim IEEE halves (f16), or headDim int8 codes + one f32 scale (int8),
//    so a cache of any dtype is a tensor of numKvHeads · capacity · kvRowWords words.
//  - Streaming (sink + recent) caches are head-major rings of the same rows: [numKvHeads][sink + recent]
//    rows of kvRowWords(headDim, dtype) words (f32: [numKvHeads][sink + recent][headDim]).
//    Position p lives in slot p when p < sink, else in slot sink + ((p - sink) mod recent).
//    Which positions are present follows from pastLen alone: [0, min(pastLen, sink)) and
//    [max(sink, pastLen - recent), pastLen).
//  - Compensation (RazorAttention, optional per streaming cache): kSum / vSum, [numKvHeads][headDim],
//    the sums of the keys (post-RoPE) and values the ring has evicted, positions [sink, pastLen −
//    recent) (none while pastLen − recent ≤ sink). The count follows from pastLen alone. The sums are
//    f32 whatever the ring's dtype, and add the values as stored (decoded), so they match the keys
//    and values attention reads.
//  - GQA: query head qh uses KV head floor(qh / (numHeads / numKvHeads)).
//  - Decoupled heads (DHA, AttentionShape.maps): query head qh uses key head queryToKey[qh] of a K
//    cache (or K ring) of numKvHeads heads and value head queryToValue[qh] of a V cache (or V ring)
//    of numValueHeads heads (kvAppend and ringAppend then take the value head count; no
//    compensation with maps).
//  - Keys are cached after RoPE at their true positions.
//
// GPU ops are recorded and run in order; CPU ops run at once. `read` waits for everything before it.

import type { PackedMatrix } from '../model/quant.js';
import type { KvDType } from './kv-dtype.js';
import type { KernelDef, KernelScalars } from './kernels.js';

export interface DeviceTensor {
  /** Number of f32 elements. */
  readonly length: number;
}

export interface AttentionShape {
  /** Query rows in this call (the chunk); row r is at absolute position pastLen + r. */
  rows: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** Tokens already cached before this chunk. */
  pastLen: number;
  /** Softmax scale, normally 1/sqrt(headDim). */
  scale: number;
  /** Decoupled key and value heads (full and streaming attention); numKvHeads is then the key head count. */
  maps?: HeadMaps;
}

/**
 * DHA's per-query-head maps: query head h reads key head queryToKey[h] (< numKvHeads) and value
 * head queryToValue[h] (< numValueHeads). Both have numHeads entries; backends validate them and may
 * keep a device copy per array object, so the arrays must not change after their first use.
 */
export interface HeadMaps {
  numValueHeads: number;
  queryToKey: Int32Array;
  queryToValue: Int32Array;
}

/** Throws unless `maps` fit `shape` (entries in range, one per query head); `what` names the op. */
export function checkHeadMaps(maps: HeadMaps, numHeads: number, numKvHeads: number, what: string): void {
  const { queryToKey, queryToValue, numValueHeads } = maps;
  if (queryToKey.length !== numHeads || queryToValue.length !== numHeads) {
    throw new RangeError(`${what}: head maps of ${queryToKey.length} and ${queryToValue.length} entries, the call has ${numHeads} query heads`);
  }
  if (!(Number.isInteger(numValueHeads) && numValueHeads >= 1)) throw new RangeError(`${what}: numValueHeads must be a positive integer (got ${numValueHeads})`);
  for (let h = 0; h < numHeads; h++) {
    if (!(queryToKey[h] >= 0 && queryToKey[h] < numKvHeads)) throw new RangeError(`${what}: query head ${h} maps to key head ${queryToKey[h]}, outside 0..${numKvHeads - 1}`);
    if (!(queryToValue[h] >= 0 && queryToValue[h] < numValueHeads)) throw new RangeError(`${what}: query head ${h} maps to value head ${queryToValue[h]}, outside 0..${numValueHeads - 1}`);
  }
}

/** An RMSNorm folded into a matmul's input (Backend.matmul): weight has inDim elements. */
export interface InputNorm {
  weight: DeviceTensor;
  eps: number;
}

/** Throws unless `norm` fits a matmul of inDim inputs (its weight has inDim elements, eps is finite and ≥ 0). */
export function checkInputNorm(norm: InputNorm, inDim: number, what: string): void {
  if (!(norm.weight.length >= inDim)) throw new RangeError(`${what}: the norm weight has ${norm.weight.length} elements, the input rows ${inDim}`);
  if (!(Number.isFinite(norm.eps) && norm.eps >= 0)) throw new RangeError(`${what}: norm eps must be a finite number ≥ 0 (got ${norm.eps})`);
}

export interface StreamingWindow {
  sink: number;
  recent: number;
}

/**
 * A streaming cache's compensation state (see the layout notes): both [numKvHeads][headDim],
 * zero-filled when the sequence starts.
 */
export interface Compensation {
  kSum: DeviceTensor;
  vSum: DeviceTensor;
}

export interface Backend {
  readonly kind: 'cpu' | 'gpu';
  /** Human-readable description of the device (adapter name, "wasm simd", ...). */
  readonly description: string;

  /** A zero-filled tensor of `length` f32. */
  alloc(length: number): DeviceTensor;
  /** A new tensor holding a copy of `data`. */
  upload(data: Float32Array): DeviceTensor;
  /**
   * A weight matrix [rows][cols] kept in its packed storage (src/model/quant.ts); `matmul` (as w) and
   * `embed` (as the table) read it directly. A backend that lacks a format throws, naming it.
   */
  uploadWeight(m: PackedMatrix): DeviceTensor;
  /** Copies `data` into `t` starting at element `offset`. */
  write(t: DeviceTensor, data: Float32Array, offset?: number): void;
  /** Copies `length` elements of `src` from `srcOffset` into `dst` at `dstOffset`. */
  copy(dst: DeviceTensor, dstOffset: number, src: DeviceTensor, srcOffset: number, length: number): void;
  /** Reads `length` elements from `offset` (default: all). Waits for pending work. */
  read(t: DeviceTensor, offset?: number, length?: number): Promise<Float32Array>;
  /** Releases the tensor's memory. The tensor must not be used afterwards. */
  free(t: DeviceTensor): void;
  /** Submits recorded work (GPU); no-op on the CPU. */
  flush(): void;
  /** Releases the device. */
  destroy(): void;

  /** out[r][:] = table[ids[r]][:] for r < ids.length; table is [vocab][dim]. */
  embed(out: DeviceTensor, table: DeviceTensor, ids: Int32Array, dim: number): void;
  /** out[r] = x[r] / sqrt(mean(x[r]²) + eps) * weight, for rows × dim. out may equal x. */
  rmsnorm(out: DeviceTensor, x: DeviceTensor, weight: DeviceTensor, rows: number, dim: number, eps: number): void;
  /**
   * out[r][o] (+)= Σ_i x[r][i] · w[o][i] + bias[o], for r < rows, o < outDim.
   * With accumulate the result is added to out (the residual stream takes the O and down projections
   * this way). xOffset (elements) lets the caller use rows of x starting at row xOffset / inDim.
   * With norm, x[r] is first RMS-normalised as rmsnorm does (x[r] / sqrt(mean(x[r]²) + eps) · weight;
   * x itself is not changed): the layer's input norm folded into the projections that read it.
   */
  matmul(out: DeviceTensor, x: DeviceTensor, w: DeviceTensor, bias: DeviceTensor | null,
    rows: number, inDim: number, outDim: number, accumulate?: boolean, xOffset?: number, norm?: InputNorm | null): void;
  /**
   * In-place rotary embedding, Hugging Face "rotate half" convention: for each row r, head h and
   * i < headDim/2, with a = x[i], b = x[i + headDim/2], θ = positions[r] · invFreq[i]:
   *   x[i] = a cos θ − b sin θ;  x[i + headDim/2] = b cos θ + a sin θ.
   * invFreq has headDim/2 entries (rope scaling is already folded into it).
   */
  rope(x: DeviceTensor, rows: number, numHeads: number, headDim: number, positions: Int32Array, invFreq: DeviceTensor): void;
  /** out[i] = silu(gate[i]) * up[i] for i < n, silu(z) = z / (1 + e^−z). */
  siluMul(out: DeviceTensor, gate: DeviceTensor, up: DeviceTensor, n: number): void;
  /** x[i] += y[i] for i < n (the named kernel ADD_KERNEL, ./kernels.ts). */
  add(x: DeviceTensor, y: DeviceTensor, n: number): void;
  /**
   * Runs a kernel by its declaration (./kernels.ts): the CPU calls the WASM export it names, the GPU
   * records the dispatch of the wgsl/ entry it names. Checks the call first (tensor count, scalars,
   * sizes; checkKernelCall) and fails naming the kernel when this backend has no such export or
   * shader. Recorded in order with the other ops, like them.
   */
  run(kernel: KernelDef, tensors: readonly DeviceTensor[], scalars: KernelScalars): void;

  /**
   * Writes the chunk's k, v ([rows][numKvHeads][headDim] f32) at positions pastLen.. of a full cache
   * stored as `dtype` (default f32), encoded exactly as kv-dtype.ts's encodeKvRow does. With
   * decoupled heads v and the V cache have numValueHeads heads (default numKvHeads).
   */
  kvAppend(kCache: DeviceTensor, vCache: DeviceTensor, k: DeviceTensor, v: DeviceTensor,
    rows: number, numKvHeads: number, headDim: number, capacity: number, pastLen: number, dtype?: KvDType,
    numValueHeads?: number): void;
  /**
   * Causal attention over a full cache (stored as `dtype`, default f32) that already holds positions
   * [0, pastLen + rows): query row r attends keys j ≤ pastLen + r. q and out are [rows][numHeads][headDim].
   * With shape.maps the K cache has numKvHeads heads and the V cache numValueHeads (see HeadMaps).
   */
  attention(out: DeviceTensor, q: DeviceTensor, kCache: DeviceTensor, vCache: DeviceTensor,
    shape: AttentionShape, capacity: number, dtype?: KvDType): void;
  /**
   * Streaming-head attention: query row r (position i = pastLen + r) attends the keys j ≤ i with
   * j < sink or j > i − recent, taken from the ring (positions < pastLen, see above) and from the
   * chunk's own k, v ([rows][numKvHeads][headDim]). The ring is NOT modified.
   *
   * With compensation, query i also attends one compensation token standing for the n = i − recent
   * + 1 − sink positions it no longer sees, [sink, i − recent] (none when n ≤ 0): key S_k(i) / n,
   * value S_v(i) / n, logit (scale · q · S_k(i)) / n + ln n (as if it were n copies), where S(i) is
   * the state's sum plus the positions [max(sink, pastLen − recent), i − recent], taken from the ring
   * or the chunk. Those are summed in ascending order, as ringAppend adds them, so chunked prefill
   * and token-by-token decode build the same sums. The state is NOT modified.
   *
   * The ring is stored as `dtype` (default f32). With f16 / int8 every key and value, the chunk's own
   * included, is attended (and summed) as the ring stores it: decodeKvRow(encodeKvRow(x)), so the
   * result does not depend on how the sequence was chunked.
   *
   * Decoupled heads (shape.maps): query head h reads key ring head queryToKey[h] (kRing and k have
   * numKvHeads heads) and value ring head queryToValue[h] (vRing and v have maps.numValueHeads
   * heads). Compensation with maps is refused.
   *
   * logSumExp (default false): out then holds rows · numHeads · headDim + rows · numHeads floats,
   * the output rows (as without the flag) followed at rows · numHeads · headDim + r · numHeads + h
   * by ln Σ_j e^(logit_j) over every key row r, head h attends (logit = scale · q · k; the
   * compensation token included). (o, lse) is then a complete partial softmax that a caller can
   * merge with others by log-sum-exp (MagicPIG's static tokens with its sampled ones).
   */
  streamingAttention(out: DeviceTensor, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor,
    kRing: DeviceTensor, vRing: DeviceTensor, shape: AttentionShape, window: StreamingWindow,
    compensation?: Compensation | null, dtype?: KvDType, logSumExp?: boolean): void;
  /**
   * Stores the chunk's positions that the ring keeps (p < sink, or among the last `recent`). With
   * compensation, first adds the positions the chunk evicts, [max(sink, pastLen − recent), pastLen +
   * rows − recent), to the sums in ascending order (read from the ring before it is overwritten).
   * Rows are encoded as `dtype` (default f32) exactly as encodeKvRow does; the sums add the stored
   * (decoded) values. With decoupled heads v and the V ring have numValueHeads heads (default
   * numKvHeads; compensation is then refused).
   */
  ringAppend(kRing: DeviceTensor, vRing: DeviceTensor, k: DeviceTensor, v: DeviceTensor,
    rows: number, numKvHeads: number, headDim: number, pastLen: number, window: StreamingWindow,
    compensation?: Compensation | null, dtype?: KvDType, numValueHeads?: number): void;
}

/** A CPU backend with its work counter (kernel invocations), used to prove the WASM path ran. */
export type CpuLike = Backend & { readonly kernelCalls: number };

/** Ring slot of absolute position p (see the layout notes above). */
export function ringSlot(p: number, window: StreamingWindow): number {
  return p < window.sink ? p : window.sink + ((p - window.sink) % window.recent);
}
