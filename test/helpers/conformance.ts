// One kernel conformance suite for every Backend: each op against the float64 reference in
// test/reference/kernels.ts, on odd shapes, GQA group sizes 1/2/3/4, and long contexts.
// Tolerance: f32 kernels vs a float64 reference, |Δ| ≤ 2e-4·(1 + |ref|) on O(1) data.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Backend, StreamingWindow } from '../../src/backend/contract.ts';
import { ringSlot } from '../../src/backend/contract.ts';
import * as ref from '../reference/kernels.ts';

const { randomArray } = ref;

export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, tol = 2e-4): void {
  assert.is(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= tol * (1 + Math.abs(expected[i])))) {
      assert.unreachable(`${what}: element ${i} is ${actual[i]}, expected ${expected[i]} (|Δ| ${d} > ${tol}·(1+|ref|))`);
    }
  }
}

function invFreqFor(headDim: number, theta = 10000): Float32Array {
  const f = new Float32Array(headDim / 2);
  for (let i = 0; i < headDim / 2; i++) f[i] = 1 / theta ** ((2 * i) / headDim);
  return f;
}

export function kernelConformance(name: string, makeBackend: () => Promise<Backend>): void {
  const test = suite(`${name} kernels vs float64 reference`);
  let be: Backend;
  test.before(async () => { be = await makeBackend(); });
  test.after(() => be.destroy());

  test('upload / read / write / copy round-trip', async () => {
    const a = randomArray(37, 1);
    const t = be.upload(a);
    assertClose(await be.read(t), a, 'upload', 0);
    be.write(t, new Float32Array([5, 6, 7]), 10);
    const b = Float32Array.from(a); b.set([5, 6, 7], 10);
    assertClose(await be.read(t), b, 'write', 0);
    assertClose(await be.read(t, 9, 5), b.subarray(9, 14), 'partial read', 0);
    const u = be.alloc(20);
    be.copy(u, 3, t, 10, 4);
    const expected = new Float32Array(20); expected.set(b.subarray(10, 14), 3);
    assertClose(await be.read(u), expected, 'copy', 0);
    be.free(t); be.free(u);
  });

  test('embed', async () => {
    const vocab = 301, dim = 72;
    const table = randomArray(vocab * dim, 2);
    const ids = new Int32Array([0, 300, 17, 17, 5]);
    const out = be.alloc(ids.length * dim);
    be.embed(out, be.upload(table), ids, dim);
    const expected = new Float32Array(ids.length * dim);
    ids.forEach((id, r) => expected.set(table.subarray(id * dim, (id + 1) * dim), r * dim));
    assertClose(await be.read(out), expected, 'embed', 0);
  });

  for (const [rows, dim] of [[1, 72], [5, 37], [3, 1024]] as const) {
    test(`rmsnorm rows=${rows} dim=${dim} (also in place)`, async () => {
      const x = randomArray(rows * dim, 3, 2), w = randomArray(dim, 4);
      const xt = be.upload(x), out = be.alloc(rows * dim), wt = be.upload(w);
      be.rmsnorm(out, xt, wt, rows, dim, 1e-5);
      const expected = ref.rmsnorm(x, w, rows, dim, 1e-5);
      assertClose(await be.read(out), expected, 'rmsnorm');
      be.rmsnorm(xt, xt, wt, rows, dim, 1e-5);
      assertClose(await be.read(xt), expected, 'rmsnorm in place');
    });
  }

  // One row: rows of ≤ 4096 floats are read one after the other (37: a scalar tail), longer ones four side by side.
  for (const [rows, inDim, outDim] of [[1, 72, 301], [7, 72, 216], [3, 37, 5], [1, 37, 9], [1, 256, 64], [33, 96, 130], [1, 2048, 40], [1, 4100, 6]] as const) {
    test(`matmul rows=${rows} in=${inDim} out=${outDim}, bias, accumulate, xOffset`, async () => {
      const x = randomArray(rows * inDim, 5), w = randomArray(outDim * inDim, 6, 0.2), b = randomArray(outDim, 7);
      const xt = be.upload(x), wt = be.upload(w), bt = be.upload(b);
      const out = be.alloc(rows * outDim);
      be.matmul(out, xt, wt, null, rows, inDim, outDim);
      const plain = ref.matmul(x, w, null, rows, inDim, outDim);
      assertClose(await be.read(out), plain, 'matmul', 5e-4);
      be.matmul(out, xt, wt, bt, rows, inDim, outDim);
      assertClose(await be.read(out), ref.matmul(x, w, b, rows, inDim, outDim), 'matmul + bias', 5e-4);
      be.matmul(out, xt, wt, null, rows, inDim, outDim, true);
      const twice = ref.matmul(x, w, b, rows, inDim, outDim).map((v, i) => v + plain[i]);
      assertClose(await be.read(out), twice, 'matmul accumulate', 5e-4);
      if (rows > 1) {
        const last = be.alloc(outDim);
        be.matmul(last, xt, wt, null, 1, inDim, outDim, false, (rows - 1) * inDim);
        assertClose(await be.read(last), plain.subarray((rows - 1) * outDim), 'matmul xOffset', 5e-4);
      }
    });
  }

  for (const [rows, heads, headDim] of [[1, 3, 24], [5, 2, 64], [4, 5, 8]] as const) {
    test(`rope rows=${rows} heads=${heads} headDim=${headDim}`, async () => {
      const x = randomArray(rows * heads * headDim, 8);
      const positions = Int32Array.from({ length: rows }, (_, r) => r * 37 + 3);
      const invFreq = invFreqFor(headDim, 500000);
      const xt = be.upload(x);
      be.rope(xt, rows, heads, headDim, positions, be.upload(invFreq));
      assertClose(await be.read(xt), ref.rope(x, rows, heads, headDim, positions, invFreq), 'rope', 2e-4);
    });
  }

  test('siluMul and add', async () => {
    const n = 333;
    const g = randomArray(n, 9, 6), u = randomArray(n, 10);
    const out = be.alloc(n);
    be.siluMul(out, be.upload(g), be.upload(u), n);
    assertClose(await be.read(out), ref.siluMul(g, u, n), 'siluMul');
    const y = randomArray(n, 11);
    be.add(out, be.upload(y), n);
    assertClose(await be.read(out), ref.siluMul(g, u, n).map((v, i) => v + y[i]), 'add');
  });

  // Full-cache attention: append chunks, then attend; compared with the causal reference.
  const attentionCases: Array<[string, number, number, number, number[]]> = [
    // [label, numHeads, numKvHeads, headDim, chunk sizes]
    ['MHA headDim 24', 3, 3, 24, [5, 1, 1]],
    ['GQA group 3 headDim 24', 6, 2, 24, [7, 1, 2]],
    ['GQA group 2 headDim 64', 4, 2, 64, [64, 1]],
    ['GQA group 4 headDim 8, long context', 4, 1, 8, [300, 9, 1]],
    ['GQA group 2 headDim 128, 1 token', 2, 1, 128, [1, 1]],
    ['GQA group 3 headDim 6 (not a multiple of 4)', 6, 2, 6, [9, 1, 2]],
    // Decode over blocks of 64 keys and an odd tail: 4 query heads together plus 1 alone, headDim 10.
    ['GQA group 5 headDim 10, decode past 2 blocks', 5, 1, 10, [130, 1, 1]],
  ];
  for (const [label, numHeads, numKvHeads, headDim, chunks] of attentionCases) {
    test(`kvAppend + attention, ${label}, chunks ${chunks.join('+')}`, async () => {
      const total = chunks.reduce((a, b) => a + b, 0);
      const capacity = total + 3;
      const kAll = randomArray(total * numKvHeads * headDim, 12, 1.5);
      const vAll = randomArray(total * numKvHeads * headDim, 13);
      const qAll = randomArray(total * numHeads * headDim, 14, 1.5);
      const kCache = be.alloc(numKvHeads * capacity * headDim), vCache = be.alloc(numKvHeads * capacity * headDim);
      const rowK = numKvHeads * headDim, rowQ = numHeads * headDim;
      const keyAt = (h: number, j: number) => kAll.subarray(j * rowK + h * headDim, j * rowK + (h + 1) * headDim);
      const valueAt = (h: number, j: number) => vAll.subarray(j * rowK + h * headDim, j * rowK + (h + 1) * headDim);
      let pastLen = 0;
      for (const rows of chunks) {
        const k = be.upload(kAll.subarray(pastLen * rowK, (pastLen + rows) * rowK));
        const v = be.upload(vAll.subarray(pastLen * rowK, (pastLen + rows) * rowK));
        const qData = qAll.subarray(pastLen * rowQ, (pastLen + rows) * rowQ);
        be.kvAppend(kCache, vCache, k, v, rows, numKvHeads, headDim, capacity, pastLen);
        const out = be.alloc(rows * rowQ);
        const shape = { rows, numHeads, numKvHeads, headDim, pastLen, scale: 1 / Math.sqrt(headDim) };
        be.attention(out, be.upload(qData), kCache, vCache, shape, capacity);
        const expected = ref.maskedAttention(qData, rows, numHeads, numKvHeads, headDim, pastLen, shape.scale, keyAt, valueAt, ref.causalVisible);
        assertClose(await be.read(out), expected, `attention chunk at ${pastLen}`);
        pastLen += rows;
      }
      // The cache holds the keys head-major at their positions.
      const cached = await be.read(kCache);
      for (let h = 0; h < numKvHeads; h++) {
        for (const j of [0, total - 1]) {
          assertClose(cached.subarray((h * capacity + j) * headDim, (h * capacity + j + 1) * headDim), keyAt(h, j), `kCache head ${h} pos ${j}`, 0);
        }
      }
    });
  }

  // Streaming attention over ring + chunk, against the mask j ≤ i ∧ (j < sink ∨ j > i − recent).
  const streamingCases: Array<[string, number, number, number, StreamingWindow, number[]]> = [
    ['context shorter than sink+recent', 4, 2, 24, { sink: 4, recent: 16 }, [7, 1, 1]],
    ['chunk 1 decode past the window', 6, 2, 24, { sink: 4, recent: 16 }, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]],
    ['chunks of 7 past the window', 6, 3, 8, { sink: 3, recent: 10 }, [7, 7, 7, 7, 7, 1, 1]],
    ['chunk larger than the window', 4, 1, 64, { sink: 2, recent: 8 }, [40, 64, 1]],
    ['recent 1, sink 0', 2, 2, 16, { sink: 0, recent: 1 }, [5, 1, 3]],
    ['headDim 6 (not a multiple of 4), decode past the window', 3, 1, 6, { sink: 2, recent: 5 }, [9, 1, 1, 1]],
    // Two groups of 4 query heads; the ring wraps inside a 64-key block (read in slot order).
    ['GQA group 8 headDim 12, decode over a wrapped ring', 16, 2, 12, { sink: 3, recent: 70 }, [100, 1, 1, 1]],
  ];
  for (const [label, numHeads, numKvHeads, headDim, window, chunks] of streamingCases) {
    test(`streamingAttention + ringAppend, ${label}, sink ${window.sink} recent ${window.recent}, heads ${numHeads}/${numKvHeads}`, async () => {
      const total = chunks.reduce((a, b) => a + b, 0);
      const kAll = randomArray(total * numKvHeads * headDim, 15, 1.5);
      const vAll = randomArray(total * numKvHeads * headDim, 16);
      const qAll = randomArray(total * numHeads * headDim, 17, 1.5);
      const slots = window.sink + window.recent;
      const kRing = be.alloc(numKvHeads * slots * headDim), vRing = be.alloc(numKvHeads * slots * headDim);
      const rowK = numKvHeads * headDim, rowQ = numHeads * headDim;
      const keyAt = (h: number, j: number) => kAll.subarray(j * rowK + h * headDim, j * rowK + (h + 1) * headDim);
      const valueAt = (h: number, j: number) => vAll.subarray(j * rowK + h * headDim, j * rowK + (h + 1) * headDim);
      let pastLen = 0;
      for (const rows of chunks) {
        const k = be.upload(kAll.subarray(pastLen * rowK, (pastLen + rows) * rowK));
        const v = be.upload(vAll.subarray(pastLen * rowK, (pastLen + rows) * rowK));
        const qData = qAll.subarray(pastLen * rowQ, (pastLen + rows) * rowQ);
        const out = be.alloc(rows * rowQ);
        const shape = { rows, numHeads, numKvHeads, headDim, pastLen, scale: 1 / Math.sqrt(headDim) };
        be.streamingAttention(out, be.upload(qData), k, v, kRing, vRing, shape, window);
        be.ringAppend(kRing, vRing, k, v, rows, numKvHeads, headDim, pastLen, window);
        const expected = ref.maskedAttention(qData, rows, numHeads, numKvHeads, headDim, pastLen, shape.scale, keyAt, valueAt,
          ref.streamingVisible(window.sink, window.recent));
        assertClose(await be.read(out), expected, `streaming attention chunk at ${pastLen}`);
        pastLen += rows;
      }
      // The ring holds exactly the positions the layout promises.
      const ring = await be.read(kRing);
      for (let h = 0; h < numKvHeads; h++) {
        for (let p = 0; p < total; p++) {
          if (p >= window.sink && p < total - window.recent) continue;
          const s = ringSlot(p, window);
          assertClose(ring.subarray((h * slots + s) * headDim, (h * slots + s + 1) * headDim), keyAt(h, p), `ring head ${h} pos ${p}`, 0);
        }
      }
    });
  }

  test.run();
}
