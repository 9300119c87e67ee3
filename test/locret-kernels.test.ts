// Locret's retaining-head scores in WASM SIMD (src/kv/locret/locret.as.ts via src/kv/locret/cpu.ts) against
// the TypeScript reference forward run in float64, on odd shapes: head_dim 5 with GQA 6/3, one
// query head of head_dim 1, the bundled model's shape, token counts around the kernel's 64-row
// tile, strided q/k/v rows, and the bad inputs the host refuses.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { LocretScorerCpu } from '../src/kv/locret/cpu.ts';
import { initRetainingHeads, retainingForward, retainingHeadShape, type RetainingHeads } from '../src/kv/locret/retaining-heads.ts';
import { Random } from '../src/tasks/random.ts';

const wasm = suite('locret WASM scores');

interface Case { heads: number; kvHeads: number; headDim: number; hidden: number; layers: number; tokens: number[] }
const CASES: Case[] = [
  { heads: 6, kvHeads: 3, headDim: 5, hidden: 7, layers: 2, tokens: [1, 3, 63, 64, 65, 130] },
  { heads: 1, kvHeads: 1, headDim: 1, hidden: 1, layers: 1, tokens: [1, 5, 66] },
  { heads: 4, kvHeads: 4, headDim: 16, hidden: 16, layers: 3, tokens: [200] },
  { heads: 8, kvHeads: 2, headDim: 3, hidden: 33, layers: 1, tokens: [17] },
];

function uniform(r: Random, n: number, scale: number): Float32Array {
  return Float32Array.from({ length: n }, () => (2 * r.next() - 1) * scale);
}

/** The float64 reference: the concatenated [q; k; v] rows through retainingForward on Float64Array weights. */
function reference(heads: RetainingHeads, layer: number, q: Float32Array, k: Float32Array, v: Float32Array, n: number,
  qd: number, kvd: number, qs: number, ks: number, vs: number): Float64Array {
  const p = heads.layers[layer], x = new Float64Array(n * p.inDim);
  for (let t = 0; t < n; t++) {
    for (let i = 0; i < qd; i++) x[t * p.inDim + i] = q[t * qs + i];
    for (let i = 0; i < kvd; i++) { x[t * p.inDim + qd + i] = k[t * ks + i]; x[t * p.inDim + qd + kvd + i] = v[t * vs + i]; }
  }
  return retainingForward({ ...p, fc1: Float64Array.from(p.fc1), fc2: Float64Array.from(p.fc2) }, x, n).scores;
}

wasm('scores match the float64 reference forward on odd shapes, contiguous and strided rows', async () => {
  for (const [ci, c] of CASES.entries()) {
    const shape = retainingHeadShape({ numHeads: c.heads, numKvHeads: c.kvHeads, headDim: c.headDim, hiddenSize: 4 * c.hidden }, c.hidden);
    const heads = initRetainingHeads(shape, c.layers, 40 + ci);
    const scorer = await LocretScorerCpu.create(heads, { numHeads: c.heads, numKvHeads: c.kvHeads, headDim: c.headDim });
    const qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim, r = new Random(ci);
    for (const n of c.tokens) {
      for (const pad of [0, 3]) {
        const qs = qd + pad, ks = kvd + 2 * pad, vs = kvd + pad;
        // Inputs of scale 3 put pre-activations on both sides of SiLU's bend.
        const q = uniform(r, n * qs, 3), k = uniform(r, n * ks, 3), v = uniform(r, n * vs, 3);
        for (let l = 0; l < c.layers; l++) {
          const got = scorer.scores(l, { q, k, v, n, qStride: qs, kStride: ks, vStride: vs });
          const want = reference(heads, l, q, k, v, n, qd, kvd, qs, ks, vs);
          assert.is(got.length, n * c.kvHeads);
          // f32 sums of ≤ 192 products against float64: within 2e-5 · (1 + |ref|).
          let worst = 0;
          want.forEach((w, i) => { worst = Math.max(worst, Math.abs(got[i] - w) / (2e-5 * (1 + Math.abs(w)))); });
          assert.ok(worst <= 1, `case ${ci}, n ${n}, pad ${pad}, layer ${l}: off by ${worst.toFixed(2)}× the tolerance`);
        }
      }
    }
    scorer.free();
  }
});

wasm('a lent kernel instance holds the weights; bad inputs are refused with the limit named', async () => {
  const dims = { numHeads: 6, numKvHeads: 3, headDim: 5 };
  const shape = retainingHeadShape({ ...dims, hiddenSize: 28 }, 7);
  const heads = initRetainingHeads(shape, 2, 1);
  const scorer = await LocretScorerCpu.create(heads, dims);
  const q = new Float32Array(4 * 30), k = new Float32Array(4 * 15), v = new Float32Array(4 * 15);
  assert.equal(scorer.scores(0, { q, k, v, n: 0 }), new Float32Array(0));
  assert.throws(() => scorer.scores(2, { q, k, v, n: 4 }), /layer 2 is not in \[0, 2\)/);
  assert.throws(() => scorer.scores(0, { q: q.subarray(1), k, v, n: 4 }), /q has 119 values, 4 rows of stride 30 need 120/);
  assert.throws(() => scorer.scores(0, { q, k, v, n: 4, kStride: 14 }), /k row stride 14 must be an integer ≥ 15/);
  assert.throws(() => scorer.scores(0, { q, k, v, n: 4, vStride: 16 }), /v has 60 values, 4 rows of stride 16 need 63/);
  assert.throws(() => scorer.scores(0, { q, k, v, n: 1.5 }), /token count must be a non-negative integer/);
  const other = await LocretScorerCpu.create(heads, { numHeads: 6, numKvHeads: 3, headDim: 4 }).then(() => null, (e: Error) => e);
  assert.match(other?.message ?? '', /layer 0 is 60 → 7 → 3, the model needs 48 → 7 → 3/);
  // Zero inputs give zero scores (no biases), right after a call that left non-zero scores in the
  // same (released and reused) blocks: every output row is written.
  const r = new Random(9);
  assert.ok(scorer.scores(1, { q: uniform(r, 120, 2), k: uniform(r, 60, 2), v: uniform(r, 60, 2), n: 4 }).some((s) => s !== 0));
  assert.ok(scorer.scores(1, { q, k, v, n: 4 }).every((s) => s === 0));
  scorer.free();
  assert.throws(() => scorer.scores(0, { q, k, v, n: 4 }), /used after free/);
});

wasm.run();
