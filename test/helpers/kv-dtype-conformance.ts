// Full KV caches stored as f16 / int8 (src/backend/kv-dtype.ts) on any Backend: the words kvAppend
// stores equal the reference encoder's exactly (chunked appends, pastLen > 0, padded rows), and
// attention over the cache equals f32 attention (float64 reference) over the cache as decoded by the
// reference decoder: the only error left is the kernels' f32 arithmetic, |Δ| ≤ 2e-4·(1 + |ref|).
// Also: the quantization error of each type against the f32 values (a bound that catches a wrong
// scale or rounding, not only a mismatch with the reference).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Backend } from '../../src/backend/contract.ts';
import { decodeKvRow, encodeKvCache, kvRowWords, type KvDType } from '../../src/backend/kv-dtype.ts';
import * as ref from '../reference/kernels.ts';
import { assertClose } from './conformance.ts';

const words = (f: Float32Array) => new Uint32Array(f.buffer, f.byteOffset, f.length);

export function kvDtypeConformance(name: string, makeBackend: () => Promise<Backend>): void {
  const test = suite(`${name}: f16 / int8 full KV caches vs the reference encoder`);
  let be: Backend;
  test.before(async () => { be = await makeBackend(); });
  test.after(() => be.destroy());

  // [label, numHeads, numKvHeads, headDim, chunks]
  const cases: Array<[string, number, number, number, number[]]> = [
    ['GQA group 3 headDim 24', 6, 2, 24, [7, 1, 2]],
    ['GQA group 4 headDim 64, decode past 2 blocks of 64', 4, 1, 64, [70, 60, 1, 1]],
    ['MHA headDim 22 (int8 row padded to 24 codes)', 3, 3, 22, [5, 1]],
    ['GQA group 2 headDim 6, odd chunks', 4, 2, 6, [3, 9, 1]],
    ['GQA group 5 headDim 40, prefill 17 over pastLen 130', 5, 1, 40, [130, 17, 1]],
  ];
  for (const dtype of ['f16', 'int8'] as const) {
    for (const [label, numHeads, numKvHeads, headDim, chunks] of cases) {
      test(`${dtype}: kvAppend + attention, ${label}, chunks ${chunks.join('+')}`, async () => {
        const total = chunks.reduce((a, b) => a + b, 0);
        const capacity = total + 3;
        const W = kvRowWords(headDim, dtype);
        // Keys with one outlier channel (as after RoPE in real models); values O(1).
        const kAll = ref.randomArray(total * numKvHeads * headDim, 21, 1.5);
        for (let i = 3; i < kAll.length; i += headDim) kAll[i] *= 6;
        const vAll = ref.randomArray(total * numKvHeads * headDim, 22);
        const qAll = ref.randomArray(total * numHeads * headDim, 23, 1.5);
        const kCache = be.alloc(numKvHeads * capacity * W), vCache = be.alloc(numKvHeads * capacity * W);
        const rowK = numKvHeads * headDim, rowQ = numHeads * headDim;
        let pastLen = 0;
        for (const rows of chunks) {
          const k = be.upload(kAll.subarray(pastLen * rowK, (pastLen + rows) * rowK));
          const v = be.upload(vAll.subarray(pastLen * rowK, (pastLen + rows) * rowK));
          be.kvAppend(kCache, vCache, k, v, rows, numKvHeads, headDim, capacity, pastLen, dtype);
          // Stored exactly as the reference encodes every position so far (the rest stays zero).
          const kRef = encodeKvCache(kAll, pastLen + rows, numKvHeads, headDim, capacity, dtype);
          const vRef = encodeKvCache(vAll, pastLen + rows, numKvHeads, headDim, capacity, dtype);
          assertSameWords(words(await be.read(kCache)), kRef, `${dtype} kCache after the chunk at ${pastLen}`);
          assertSameWords(words(await be.read(vCache)), vRef, `${dtype} vCache after the chunk at ${pastLen}`);
          // Attention against f32 attention over the decoded reference cache.
          const decode = (cache: Uint32Array) => (h: number, j: number) => {
            const out = new Float32Array(headDim);
            decodeKvRow(cache, (h * capacity + j) * W, headDim, dtype, out);
            return out;
          };
          const qData = qAll.subarray(pastLen * rowQ, (pastLen + rows) * rowQ);
          const out = be.alloc(rows * rowQ);
          const shape = { rows, numHeads, numKvHeads, headDim, pastLen, scale: 1 / Math.sqrt(headDim) };
          be.attention(out, be.upload(qData), kCache, vCache, shape, capacity, dtype);
          const expected = ref.maskedAttention(qData, rows, numHeads, numKvHeads, headDim, pastLen, shape.scale, decode(kRef), decode(vRef), ref.causalVisible);
          assertClose(await be.read(out), expected, `${dtype} attention chunk at ${pastLen}`);
          for (const t of [k, v, out]) be.free(t);
          pastLen += rows;
        }
        // The decoded cache is the f32 data up to the type's rounding: f16 half an ulp (2^-11
        // relative), int8 half a step of max|x|/127 per row.
        const cached = words(await be.read(kCache));
        const row = new Float32Array(headDim);
        for (let h = 0; h < numKvHeads; h++) {
          for (let j = 0; j < total; j++) {
            decodeKvRow(cached, (h * capacity + j) * W, headDim, dtype, row);
            const x = kAll.subarray(j * rowK + h * headDim, j * rowK + (h + 1) * headDim);
            const amax = Math.max(...Array.from(x, Math.abs));
            for (let i = 0; i < headDim; i++) {
              const bound = dtype === 'f16' ? Math.abs(x[i]) * 2 ** -11 + 2 ** -25 : (amax / 127) * 0.5 + amax * 1e-6;
              if (!(Math.abs(row[i] - x[i]) <= bound)) assert.unreachable(`${dtype} key head ${h} pos ${j} [${i}]: ${row[i]} vs ${x[i]}`);
            }
          }
        }
        be.free(kCache); be.free(vCache);
      });
    }
  }

  test('f16 / int8 rows: special values (zero row, ±max, subnormal and overflowing halves, ties, tiny scales)', async () => {
    const D = 8;
    const rows = [
      [0, 0, 0, 0, 0, 0, 0, 0],
      [1, -1, 0.5, -0.25, 127, -127, 63.5, 0.49803921],
      [1e-40, -3e-8, 65504, 70000, -1e9, 2 ** -14, 2 ** -24, 1 + 2 ** -11],
      // Small rows: the int8 scale is far below 1 (and its divisions are exact on every device).
      [3e-30, -7e-31, 1e-31, 0, 2.9e-30, -3e-30, 1.5e-30, 1e-35],
      [0.3, 0.7, -0.11, 0.123456, 0.999, -0.5, 0.25, 0.0625],
    ];
    const data = Float32Array.from(rows.flat());
    for (const dtype of ['f16', 'int8'] as KvDType[]) {
      const W = kvRowWords(D, dtype), capacity = rows.length;
      const kc = be.alloc(capacity * W), vc = be.alloc(capacity * W);
      for (let p = 0; p < rows.length; p++) {
        const one = be.upload(data.subarray(p * D, (p + 1) * D));
        be.kvAppend(kc, vc, one, one, 1, 1, D, capacity, p, dtype);
        be.free(one);
      }
      assertSameWords(words(await be.read(kc)), encodeKvCache(data, rows.length, 1, D, capacity, dtype), `${dtype} special rows`);
      be.free(kc); be.free(vc);
    }
  });

  test('a bad KV dtype is an error naming it', () => {
    const t = be.alloc(64);
    assert.throws(() => be.kvAppend(t, t, t, t, 1, 1, 8, 4, 0, 'q4' as KvDType), /KV cache dtype must be one of f32, f16, int8 \(got "q4"\)/);
    be.free(t);
  });

  test.run();
}

function assertSameWords(actual: Uint32Array, expected: Uint32Array, what: string): void {
  assert.is(actual.length >= expected.length, true, `${what}: ${actual.length} words, expected ${expected.length}`);
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] !== expected[i]) {
      assert.unreachable(`${what}: word ${i} is 0x${actual[i].toString(16)}, the reference encodes 0x${expected[i].toString(16)}`);
    }
  }
}
