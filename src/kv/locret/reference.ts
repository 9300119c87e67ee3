// Float64 reference of the locret method, from its definition: each KV head keeps a set of positions;
// a chunk's queries attend, causally, the kept positions and the chunk; then every chunk token is
// scored once by the retaining head (q and k un-rotated, all in float64) and the kept set becomes all
// candidates when they fit the budget, else the `stabilizers` latest positions plus the best-scored
// others (equal scores: the earlier position).
import { retainingForward, retainingHeadShape, initRetainingHeads, type RetainingHeadParams } from './retaining-heads.js';
import type { LocretHeads } from './settings.js';
import type { KvGroupShape } from '../method.js';
import { attendTokens, RefHistory, type KvReference } from '../reference.js';

/**
 * Seeded random retaining heads (hidden 8) for any group shape, and RoPE frequencies with θ = 10000:
 * what the conformance harness runs the method with.
 */
export function seededLocretHeads(seed: number): LocretHeads {
  const made = new Map<string, RetainingHeadParams>();
  return {
    head(layer, shape) {
      const key = `${layer} ${shape.numKvHeads} ${shape.group} ${shape.headDim}`;
      let p = made.get(key);
      if (!p) {
        const dims = { numHeads: shape.numKvHeads * shape.group, numKvHeads: shape.numKvHeads, headDim: shape.headDim, hiddenSize: 32 };
        p = initRetainingHeads(retainingHeadShape(dims, 8), 1, seed + 7919 * layer + shape.headDim).layers[0];
        made.set(key, p);
      }
      return p;
    },
    invFreq: (headDim) => Float32Array.from({ length: headDim / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / headDim)),
  };
}

/** Scores [rows][numKvHeads] of a chunk in float64. */
function scoreChunk(head: RetainingHeadParams, invFreq: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array,
  rows: number, pastLen: number, shape: KvGroupShape): Float64Array {
  const { numKvHeads: H, group, headDim: D } = shape, half = D / 2;
  const x = new Float64Array(rows * head.inDim);
  let at = 0;
  const rotatedBack = (src: Float32Array, row: number, h: number, pos: number) => {
    const o = row + h * D;
    for (let d = 0; d < D; d++) {
      const i = d % half, t = pos * invFreq[i];
      // Inverse of rotate-half RoPE: x = R(−θ)·y.
      x[at + d] = d < half ? src[o + d] * Math.cos(t) + src[o + d + half] * Math.sin(t)
        : src[o + d] * Math.cos(t) - src[o + d - half] * Math.sin(t);
    }
    at += D;
  };
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < H * group; h++) rotatedBack(q, r * H * group * D, h, pastLen + r);
    for (let h = 0; h < H; h++) rotatedBack(k, r * H * D, h, pastLen + r);
    for (let d = 0; d < H * D; d++) x[at++] = v[r * H * D + d];
  }
  const p64 = { ...head, fc1: Float64Array.from(head.fc1), fc2: Float64Array.from(head.fc2) };
  return retainingForward(p64, x, rows).scores;
}

export const reference: KvReference = {
  variants: [
    { label: 'budget 6, stabilizers 2', settings: { locret: { budget: 6, stabilizers: 2, heads: seededLocretHeads(11) } } },
    { label: 'budget 9, stabilizers 0', settings: { locret: { budget: 9, stabilizers: 0, heads: seededLocretHeads(12) } } },
    { label: 'budget 5 = stabilizers', settings: { locret: { budget: 5, stabilizers: 5, heads: seededLocretHeads(13) } } },
    { label: 'budget 1, stabilizers 0', settings: { locret: { budget: 1, stabilizers: 0, heads: seededLocretHeads(14) } } },
    { label: 'budget 64 ≥ context (full attention)', settings: { locret: { budget: 64, stabilizers: 4, heads: seededLocretHeads(15) } } },
  ],
  open(shape, settings) {
    const { budget, stabilizers, heads } = settings.locret!;
    const H = shape.numKvHeads;
    const past = new RefHistory(shape);
    const kept: Array<Array<{ pos: number; score: number }>> = Array.from({ length: H }, () => []);
    return {
      attend(q, k, v, rows, pastLen) {
        const chunk = new RefHistory(shape);
        chunk.put(k, v, rows, 0);
        return attendTokens(q, rows, pastLen, shape, (i, h) => [
          ...kept[h].map(({ pos }) => ({ k: past.k[pos][h], v: past.v[pos][h], bias: 0 })),
          ...Array.from({ length: i - pastLen + 1 }, (_, r) => ({ k: chunk.k[r][h], v: chunk.v[r][h], bias: 0 })),
        ]);
      },
      append(k, v, rows, pastLen, q) {
        past.put(k, v, rows, pastLen);
        const scores = scoreChunk(heads.head(shape.layer ?? 0, shape), heads.invFreq(shape.headDim), q, k, v, rows, pastLen, shape);
        for (let h = 0; h < H; h++) {
          const all = [...kept[h]];
          for (let r = 0; r < rows; r++) all.push({ pos: pastLen + r, score: scores[r * H + h] });
          if (all.length <= budget) { kept[h] = all; continue; }
          const latest = all.slice(all.length - stabilizers);
          const best = all.slice(0, all.length - stabilizers).sort((a, b) => b.score - a.score || a.pos - b.pos).slice(0, budget - stabilizers);
          kept[h] = [...best, ...latest].sort((a, b) => a.pos - b.pos);
        }
      },
    };
  },
  bytes(shape, capacity, settings) {
    return 2 * 4 * shape.numKvHeads * shape.headDim * Math.min(capacity, settings.locret!.budget);
  },
};
