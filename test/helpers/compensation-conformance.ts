// RazorAttention's compensation token on a Backend: streamingAttention + ringAppend with the
// compensation state, against the float64 reference (test/reference/kernels.ts), on odd shapes:
// GQA, wrapped rings, chunks crossing the eviction boundary, chunked prefill vs decode.
// Tolerance as the kernel suite: |Δ| ≤ 2e-4·(1 + |ref|) for outputs; the sums (f32, added in order)
// to 1e-5 relative of the float64 sums.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Backend, Compensation, StreamingWindow } from '../../src/backend/contract.ts';
import { assertClose } from './conformance.ts';
import * as ref from '../reference/kernels.ts';

const { randomArray } = ref;

interface Case { label: string; numHeads: number; numKvHeads: number; headDim: number; window: StreamingWindow; chunks: number[] }

const cases: Case[] = [
  { label: 'context shorter than the window (no token)', numHeads: 4, numKvHeads: 2, headDim: 24, window: { sink: 4, recent: 16 }, chunks: [7, 1, 12] },
  { label: 'decode past the window', numHeads: 6, numKvHeads: 2, headDim: 24, window: { sink: 4, recent: 16 }, chunks: [19, ...Array(12).fill(1)] },
  { label: 'chunks of 7 crossing the eviction boundary', numHeads: 6, numKvHeads: 3, headDim: 8, window: { sink: 3, recent: 10 }, chunks: [7, 7, 7, 7, 7, 1, 1] },
  { label: 'chunk larger than the window (same-chunk evictions)', numHeads: 4, numKvHeads: 1, headDim: 64, window: { sink: 2, recent: 8 }, chunks: [40, 64, 1] },
  { label: 'recent 1, sink 0', numHeads: 2, numKvHeads: 2, headDim: 16, window: { sink: 0, recent: 1 }, chunks: [5, 1, 3] },
  { label: 'headDim 6, wrapped ring', numHeads: 3, numKvHeads: 1, headDim: 6, window: { sink: 2, recent: 5 }, chunks: [9, 1, 1, 30, 1] },
  { label: 'GQA group 8 headDim 12, pastLen ≫ window', numHeads: 16, numKvHeads: 2, headDim: 12, window: { sink: 3, recent: 70 }, chunks: [300, 1, 37, 1] },
];

export function compensationConformance(name: string, makeBackend: () => Promise<Backend>): void {
  const test = suite(`${name}: streaming attention with the compensation token vs float64 reference`);
  let be: Backend;
  test.before(async () => { be = await makeBackend(); });
  test.after(() => be.destroy());

  /** Runs `chunks` through attention + append; returns every output row and the final state. */
  async function run(c: Case, chunks: number[], data: { k: Float32Array; v: Float32Array; q: Float32Array }, check: boolean) {
    const { numHeads, numKvHeads, headDim, window } = c;
    const slots = window.sink + window.recent, rowK = numKvHeads * headDim, rowQ = numHeads * headDim;
    const kRing = be.alloc(numKvHeads * slots * headDim), vRing = be.alloc(numKvHeads * slots * headDim);
    const comp: Compensation = { kSum: be.alloc(rowK), vSum: be.alloc(rowK) };
    const keyAt = (h: number, j: number) => data.k.subarray(j * rowK + h * headDim, j * rowK + (h + 1) * headDim);
    const valueAt = (h: number, j: number) => data.v.subarray(j * rowK + h * headDim, j * rowK + (h + 1) * headDim);
    const total = chunks.reduce((a, b) => a + b, 0);
    const outAll = new Float32Array(total * rowQ);
    let pastLen = 0;
    for (const rows of chunks) {
      const k = be.upload(data.k.subarray(pastLen * rowK, (pastLen + rows) * rowK));
      const v = be.upload(data.v.subarray(pastLen * rowK, (pastLen + rows) * rowK));
      const qData = data.q.subarray(pastLen * rowQ, (pastLen + rows) * rowQ);
      const q = be.upload(qData), out = be.alloc(rows * rowQ);
      const shape = { rows, numHeads, numKvHeads, headDim, pastLen, scale: 1 / Math.sqrt(headDim) };
      be.streamingAttention(out, q, k, v, kRing, vRing, shape, window, comp);
      be.ringAppend(kRing, vRing, k, v, rows, numKvHeads, headDim, pastLen, window, comp);
      const got = await be.read(out);
      outAll.set(got, pastLen * rowQ);
      if (check) {
        const expected = ref.compensatedStreamingAttention(qData, rows, numHeads, numKvHeads, headDim, pastLen, shape.scale,
          keyAt, valueAt, window.sink, window.recent);
        assertClose(got, expected, `chunk at ${pastLen}`);
      }
      for (const t of [k, v, q, out]) be.free(t);
      pastLen += rows;
    }
    const state = { kSum: await be.read(comp.kSum), vSum: await be.read(comp.vSum) };
    for (const t of [kRing, vRing, comp.kSum, comp.vSum]) be.free(t);
    return { out: outAll, state, keyAt, valueAt, total };
  }

  for (const c of cases) {
    test(`${c.label}: sink ${c.window.sink} recent ${c.window.recent}, heads ${c.numHeads}/${c.numKvHeads}, chunks ${c.chunks.length}`, async () => {
      const total = c.chunks.reduce((a, b) => a + b, 0), rowK = c.numKvHeads * c.headDim;
      const data = { k: randomArray(total * rowK, 25, 1.5), v: randomArray(total * rowK, 26), q: randomArray(total * c.numHeads * c.headDim, 27, 1.5) };
      const chunked = await run(c, c.chunks, data, true);
      // The state: sums of exactly the evicted positions [sink, total − recent).
      for (const [got, at, what] of [[chunked.state.kSum, chunked.keyAt, 'kSum'], [chunked.state.vSum, chunked.valueAt, 'vSum']] as const) {
        const expected = new Float64Array(rowK);
        for (let h = 0; h < c.numKvHeads; h++) {
          for (let j = c.window.sink; j < total - c.window.recent; j++) {
            const x = at(h, j);
            for (let d = 0; d < c.headDim; d++) expected[h * c.headDim + d] += x[d];
          }
        }
        assertClose(got, expected, what, 1e-5 * Math.max(1, total));
      }
      // Token by token gives the same outputs, and bit-identical sums (same additions in the same order).
      const decoded = await run(c, Array(total).fill(1), data, false);
      assertClose(decoded.out, chunked.out, 'token-by-token vs chunked', 2e-5);
      assert.equal(Array.from(decoded.state.kSum), Array.from(chunked.state.kSum), 'kSum token-by-token = chunked');
      assert.equal(Array.from(decoded.state.vSum), Array.from(chunked.state.vSum), 'vSum token-by-token = chunked');
    });
  }

  test('without evictions the compensated kernel equals the plain one exactly', async () => {
    const numHeads = 4, numKvHeads = 2, headDim = 20, window = { sink: 4, recent: 16 }, rows = 19;
    const rowK = numKvHeads * headDim;
    const k = be.upload(randomArray(rows * rowK, 31)), v = be.upload(randomArray(rows * rowK, 32));
    const q = be.upload(randomArray(rows * numHeads * headDim, 33));
    const slots = window.sink + window.recent;
    const kRing = be.alloc(numKvHeads * slots * headDim), vRing = be.alloc(numKvHeads * slots * headDim);
    const shape = { rows, numHeads, numKvHeads, headDim, pastLen: 0, scale: 1 / Math.sqrt(headDim) };
    const a = be.alloc(rows * numHeads * headDim), b = be.alloc(rows * numHeads * headDim);
    be.streamingAttention(a, q, k, v, kRing, vRing, shape, window);
    be.streamingAttention(b, q, k, v, kRing, vRing, shape, window, { kSum: be.alloc(rowK), vSum: be.alloc(rowK) });
    assert.equal(Array.from(await be.read(b)), Array.from(await be.read(a)));
  });

  test('a compensation state of the wrong size is a clear error', async () => {
    const numKvHeads = 2, headDim = 8, window = { sink: 1, recent: 4 }, slots = 5;
    const kRing = be.alloc(numKvHeads * slots * headDim), vRing = be.alloc(numKvHeads * slots * headDim);
    const k = be.alloc(numKvHeads * headDim), v = be.alloc(numKvHeads * headDim);
    const bad = { kSum: be.alloc(headDim), vSum: be.alloc(numKvHeads * headDim) };
    assert.throws(() => be.ringAppend(kRing, vRing, k, v, 1, numKvHeads, headDim, 0, window, bad), /kSum/);
    assert.throws(() => be.streamingAttention(be.alloc(2 * headDim), be.alloc(2 * headDim), k, v, kRing, vRing,
      { rows: 1, numHeads: 2, numKvHeads, headDim, pastLen: 0, scale: 1 }, window, bad), /kSum/);
  });

  test.run();
}
