// Locret's scoring kernel reached by name (Backend.run, src/backend/kernels.ts): the retaining head
//   scores[t] = fc2 · silu(fc1 · [q_t; k_t; v_t])      fc1 [hidden][qd + 2·kvd], fc2 [outDim][hidden]
// of n tokens whose pre-RoPE q, k, v rows sit in tensors at float offsets and row strides of their
// own (they may be one tensor). The same declaration runs src/kv/locret/locret.as.ts's export on the CPU
// (in a Web Worker too) and src/kv/locret/locret_score.wgsl on the GPU.
import type { Backend, DeviceTensor } from '../../backend/contract.js';
import type { KernelDef } from '../../backend/kernels.js';

/** The WGSL kernel keeps the hidden activations in workgroup memory of this many floats. */
export const LOCRET_GPU_MAX_HIDDEN = 1024;

export const LOCRET_SCORE_KERNEL: KernelDef = {
  name: 'locret_score',
  tensors: ['q', 'k', 'v', 'fc1', 'fc2', 'scores'],
  scalars: ['n', 'qd', 'kvd', 'hidden', 'outDim', 'qStride', 'kStride', 'vStride', 'qOffset', 'kOffset', 'vOffset'],
  writes: ['scores'],
  sizes: {
    q: 'qOffset + (n - 1) * qStride + qd',
    k: 'kOffset + (n - 1) * kStride + kvd',
    v: 'vOffset + (n - 1) * vStride + kvd',
    fc1: 'hidden * (qd + 2 * kvd)',
    fc2: 'outDim * hidden',
    scores: 'n * outDim',
  },
  cpu: {
    export: 'locretScores',
    args: ['scores', { tensor: 'q', offset: 'qOffset' }, 'qStride', { tensor: 'k', offset: 'kOffset' }, 'kStride',
      { tensor: 'v', offset: 'vOffset' }, 'vStride', 'n', 'qd', 'kvd', 'fc1', 'hidden', 'fc2', 'outDim', 'scratch'],
    scratch: { export: 'locretScratchFloats', args: ['hidden'] },
  },
  gpu: {
    shader: 'locret_score',
    uniforms: ['n', 'qd', 'kvd', 'hidden', 'outDim', 'qStride', 'kStride', 'vStride', 'qOffset', 'kOffset', 'vOffset'],
    workgroups: { count: 'n' },
  },
};

/** Rows of q, k or v: row r starts at element offset + r·stride. */
export interface ScoreRows { tensor: DeviceTensor; stride: number; offset?: number }

export interface ScoreCall {
  n: number;
  /** Query and key/value row widths (inDim = qd + 2·kvd). */
  qd: number;
  kvd: number;
  q: ScoreRows;
  k: ScoreRows;
  v: ScoreRows;
  fc1: DeviceTensor;
  fc2: DeviceTensor;
  hidden: number;
  outDim: number;
  /** Output [n][outDim]. */
  scores: DeviceTensor;
}

/**
 * Records the scoring of `n` tokens on `be` (the kernel's own checks, then Backend.run's). Strides
 * below the row width would overlap rows and a hidden size past the WGSL limit would overflow its
 * workgroup memory, so both are refused here, on every backend alike.
 */
export function runLocretScores(be: Backend, a: ScoreCall): void {
  const fail = (why: string): never => { throw new RangeError(`locret scores: ${why}`); };
  if (!(Number.isInteger(a.hidden) && a.hidden >= 1 && a.hidden <= LOCRET_GPU_MAX_HIDDEN)) fail(`hidden ${a.hidden} must be an integer in [1, ${LOCRET_GPU_MAX_HIDDEN}]`);
  for (const [name, rows, width] of [['q', a.q, a.qd], ['k', a.k, a.kvd], ['v', a.v, a.kvd]] as const) {
    if (!(Number.isInteger(rows.stride) && rows.stride >= width)) fail(`${name} row stride ${rows.stride} must be an integer ≥ ${width}`);
  }
  be.run(LOCRET_SCORE_KERNEL, [a.q.tensor, a.k.tensor, a.v.tensor, a.fc1, a.fc2, a.scores], {
    n: a.n, qd: a.qd, kvd: a.kvd, hidden: a.hidden, outDim: a.outDim,
    qStride: a.q.stride, kStride: a.k.stride, vStride: a.v.stride,
    qOffset: a.q.offset ?? 0, kOffset: a.k.offset ?? 0, vOffset: a.v.offset ?? 0,
  });
}
