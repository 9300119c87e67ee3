// Retaining-head scores on a WebGPU device (src/kv/locret/locret_score.wgsl): one layer's head over n tokens
// whose pre-RoPE q, k, v rows sit in device buffers at any offset and row stride (the model's own
// projection tensors), scores [n][outDim] written to a device buffer.
import type { GpuContext } from '../../gpu/context.js';
import type { RetainingHeadParams } from './retaining-heads.js';

import { LOCRET_GPU_MAX_HIDDEN } from './kernels.js';

export { LOCRET_GPU_MAX_HIDDEN };

/** Rows of one of q, k, v: row r starts at float offset + r·stride of buffer. */
export interface GpuRows { buffer: GPUBuffer; stride: number; offset?: number }

export interface GpuScoreInputs {
  n: number;
  /** Query and key/value row widths used (inDim = qd + 2·kvd). */
  qd: number;
  kvd: number;
  q: GpuRows;
  k: GpuRows;
  v: GpuRows;
  /** [hidden][inDim] and [outDim][hidden] f32. */
  fc1: GPUBuffer;
  fc2: GPUBuffer;
  hidden: number;
  outDim: number;
  /** Output: at least n·outDim floats. */
  scores: GPUBuffer;
}

function check(cond: boolean, message: string): void {
  if (!cond) throw new RangeError(`Locret GPU scores: ${message}`);
}

const isCount = (x: number, min: number) => Number.isInteger(x) && x >= min;

/** Records the scoring dispatch on `gpu` (runs at the next flush/read). */
export function recordLocretScores(gpu: GpuContext, a: GpuScoreInputs): void {
  check(isCount(a.n, 0), `token count n must be a non-negative integer (got ${a.n})`);
  check(isCount(a.qd, 1) && isCount(a.kvd, 1), `row widths qd ${a.qd} and kvd ${a.kvd} must be positive integers`);
  check(isCount(a.hidden, 1) && a.hidden <= LOCRET_GPU_MAX_HIDDEN, `hidden ${a.hidden} must be an integer in [1, ${LOCRET_GPU_MAX_HIDDEN}]`);
  check(isCount(a.outDim, 1), `outDim ${a.outDim} must be a positive integer`);
  if (a.n === 0) return;
  const inDim = a.qd + 2 * a.kvd;
  for (const [name, rows, width] of [['q', a.q, a.qd], ['k', a.k, a.kvd], ['v', a.v, a.kvd]] as const) {
    const offset = rows.offset ?? 0;
    check(isCount(rows.stride, width) && isCount(offset, 0), `${name} row stride ${rows.stride} must be an integer ≥ ${width} and offset ${offset} ≥ 0`);
    const need = (offset + (a.n - 1) * rows.stride + width) * 4;
    check(rows.buffer.size >= need, `${name} buffer of ${rows.buffer.size} bytes is too small for ${a.n} rows (${need} bytes)`);
  }
  check(a.fc1.size >= a.hidden * inDim * 4, `fc1 buffer of ${a.fc1.size} bytes is smaller than hidden × inDim floats (${a.hidden * inDim * 4} bytes)`);
  check(a.fc2.size >= a.outDim * a.hidden * 4, `fc2 buffer of ${a.fc2.size} bytes is smaller than outDim × hidden floats (${a.outDim * a.hidden * 4} bytes)`);
  check(a.scores.size >= a.n * a.outDim * 4, `scores buffer of ${a.scores.size} bytes is smaller than n × outDim floats (${a.n * a.outDim * 4} bytes)`);
  const params = new Uint32Array([a.n, a.qd, a.kvd, a.hidden, a.outDim, a.q.stride, a.k.stride, a.v.stride, a.q.offset ?? 0, a.k.offset ?? 0, a.v.offset ?? 0, 0]);
  gpu.dispatch(gpu.pipeline('locret_score'), [a.q.buffer, a.k.buffer, a.v.buffer, a.fc1, a.fc2, a.scores], params.buffer, gpu.fold(a.n));
}

/**
 * Uploads one layer's head and the concatenated rows x ([n][inDim]: q, k, v of each token, the
 * reference's layout), scores them and reads the scores back ([n][outDim]).
 */
export async function locretScoresOnGpu(gpu: GpuContext, head: RetainingHeadParams, x: Float32Array, n: number, qd: number, kvd: number): Promise<Float32Array> {
  check(qd + 2 * kvd === head.inDim, `qd ${qd} + 2·kvd ${kvd} is not the head's inDim ${head.inDim}`);
  check(x.length === n * head.inDim, `x has ${x.length} values, expected n × inDim = ${n} × ${head.inDim}`);
  if (n === 0) return new Float32Array(0);
  const xb = gpu.bufferWith(x, GPUBufferUsage.STORAGE, 'locret x');
  const w1 = gpu.bufferWith(head.fc1, GPUBufferUsage.STORAGE, 'locret fc1');
  const w2 = gpu.bufferWith(head.fc2, GPUBufferUsage.STORAGE, 'locret fc2');
  const out = gpu.createBuffer(n * head.outDim * 4, 'locret scores');
  try {
    const rows = (offset: number): GpuRows => ({ buffer: xb, stride: head.inDim, offset });
    recordLocretScores(gpu, { n, qd, kvd, q: rows(0), k: rows(qd), v: rows(qd + kvd), fc1: w1, fc2: w2, hidden: head.hidden, outDim: head.outDim, scores: out });
    return new Float32Array(await gpu.readBuffer(out, 0, n * head.outDim * 4));
  } finally {
    gpu.release(xb); gpu.release(w1); gpu.release(w2); gpu.release(out);
  }
}
