// Streaming attention's log-sum-exp (Backend.streamingAttention's logSumExp flag): out then holds the
// output rows followed by ln Σ_j e^(logit_j) per query row and head, over every key it attends (the
// compensation token included), so that a caller can merge the partial softmax with others.
// On every backend (CPU one thread and three, the browser's CPU worker, the GPU: skipped without an
// adapter, failing in CI), chunked prefill and decode through a ring that wraps: the output rows
// equal the call without the flag bit for bit; the lse is within 1e-4·(1+|ref|) and the rows within
// 2e-4·(1+|ref|) of a float64 reference that attends the keys and values as the ring stores them
// (decodeKvRow(encodeKvRow(x)) for f16 / int8). GQA, head_dim 37, sink 0, compensation, decoupled
// head maps, f16 and int8 rings. A too-small out is refused, naming the length needed.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Backend, HeadMaps, StreamingWindow } from '../src/backend/contract.ts';
import { decodeKvRow, encodeKvRow, kvRowWords, type KvDType } from '../src/backend/kv-dtype.ts';
import { WorkerCpuBackend } from '../src/browser/worker-cpu.ts';
import { assertClose } from './helpers/conformance.ts';
import { channelWorker } from './helpers/channel-worker.ts';
import { sharedGpu } from './helpers/engine.ts';
import { gpuTests } from './helpers/gpu-skip.ts';
import { differences, kernelBackends } from './helpers/kernel-backends.ts';
import { randomArray } from './reference/kernels.ts';

interface Case {
  label: string; numHeads: number; numKvHeads: number; headDim: number; window: StreamingWindow;
  chunks: number[]; comp: boolean; dtype: KvDType; maps?: HeadMaps;
}

// Decoupled heads: 5 query heads over 3 key heads and 2 value heads (test/dha-kernels.test.ts's first layout).
const MAPS: HeadMaps = { numValueHeads: 2, queryToKey: Int32Array.from([2, 0, 2, 1, 0]), queryToValue: Int32Array.from([1, 1, 0, 1, 0]) };
// 42 positions through a window of 12: decode and chunks of several rows (20: more than the CPU's tile of 16) after the wrap.
const CHUNKS = [5, 1, 9, 1, 1, 20, 1, 3, 1];
const gqa = (label: string, comp: boolean, dtype: KvDType): Case =>
  ({ label, numHeads: 6, numKvHeads: 2, headDim: 37, window: { sink: 4, recent: 8 }, chunks: CHUNKS, comp, dtype });
const mapped = (dtype: KvDType): Case =>
  ({ label: `decoupled heads (5 query, 3 key, 2 value), ${dtype}`, numHeads: 5, numKvHeads: 3, headDim: 37, window: { sink: 3, recent: 8 },
    chunks: [9, 7, 13, 1, 1], comp: false, dtype, maps: MAPS });
const CASES: Case[] = [
  gqa('GQA 6/2, head_dim 37, f32', false, 'f32'),
  gqa('GQA 6/2, head_dim 37, f32, compensation', true, 'f32'),
  { label: 'sink 0, recent 7, 3 query heads over 1, compensation', numHeads: 3, numKvHeads: 1, headDim: 37, window: { sink: 0, recent: 7 },
    chunks: [4, 1, 11, 1, 1], comp: true, dtype: 'f32' },
  mapped('f32'),
  gqa('GQA 6/2, head_dim 37, f16 ring, compensation', true, 'f16'),
  gqa('GQA 6/2, head_dim 37, int8 ring, compensation', true, 'int8'),
  mapped('f16'),
  mapped('int8'),
];

/** x ([n][headDim] rows) as a ring of `dtype` stores them, in float64. */
function stored(x: Float32Array, headDim: number, dtype: KvDType): Float64Array {
  const out = new Float32Array(x.length), words = new Uint32Array(kvRowWords(headDim, dtype));
  for (let r = 0; r < x.length / headDim; r++) {
    encodeKvRow(x.subarray(r * headDim, (r + 1) * headDim), dtype, words);
    decodeKvRow(words, 0, headDim, dtype, out, r * headDim);
  }
  return Float64Array.from(out);
}

/**
 * Float64 streaming attention of rows pastLen … pastLen + rows − 1: the outputs and each query's
 * log-sum-exp over the keys it attends (j ≤ i with j < sink or j > i − recent, plus with `comp` the
 * compensation token: mean key and value of [sink, i − recent], logit + ln n for its n positions).
 * k, v: every position's stored rows, [T][numKeyHeads][D] and [T][numValueHeads][D].
 */
function reference(c: Case, q: Float32Array, k: Float64Array, v: Float64Array, rows: number, pastLen: number) {
  const { numHeads: H, headDim: D, window: { sink, recent } } = c;
  const nK = c.numKvHeads, nV = c.maps?.numValueHeads ?? nK, group = H / nK, scale = 1 / Math.sqrt(D);
  const o = new Float64Array(rows * H * D), lse = new Float64Array(rows * H);
  for (let r = 0; r < rows; r++) {
    const i = pastLen + r;
    for (let h = 0; h < H; h++) {
      const kh = c.maps ? c.maps.queryToKey[h] : Math.floor(h / group), vh = c.maps ? c.maps.queryToValue[h] : kh;
      const qv = q.subarray((r * H + h) * D, (r * H + h + 1) * D);
      const dot = (key: ArrayLike<number>) => { let s = 0; for (let d = 0; d < D; d++) s += qv[d] * key[d]; return s * scale; };
      const logits: number[] = [], values: ArrayLike<number>[] = [];
      for (let j = 0; j <= i; j++) {
        if (j >= sink && j <= i - recent) continue;
        logits.push(dot(k.subarray((j * nK + kh) * D, (j * nK + kh + 1) * D)));
        values.push(v.subarray((j * nV + vh) * D, (j * nV + vh + 1) * D));
      }
      const n = i - recent + 1 - sink;
      if (c.comp && n > 0) {
        const km = new Float64Array(D), vm = new Float64Array(D);
        for (let j = sink; j <= i - recent; j++) {
          for (let d = 0; d < D; d++) { km[d] += k[(j * nK + kh) * D + d] / n; vm[d] += v[(j * nV + vh) * D + d] / n; }
        }
        logits.push(dot(km) + Math.log(n));
        values.push(vm);
      }
      const m = Math.max(...logits), e = logits.map((s) => Math.exp(s - m)), z = e.reduce((a, b) => a + b, 0);
      lse[r * H + h] = m + Math.log(z);
      for (let t = 0; t < e.length; t++) for (let d = 0; d < D; d++) o[(r * H + h) * D + d] += (e[t] / z) * values[t][d];
    }
  }
  return { o, lse };
}

/** Streams the case's chunks (attend without and with the flag, then append) and checks every chunk. */
async function check(be: Backend, c: Case, name: string): Promise<void> {
  const { numHeads: H, numKvHeads: nK, headDim: D, window, dtype } = c;
  const nV = c.maps?.numValueHeads ?? nK, slots = window.sink + window.recent, W = kvRowWords(D, dtype);
  const T = c.chunks.reduce((a, b) => a + b, 0);
  const kAll = randomArray(T * nK * D, 71, 1.5), vAll = randomArray(T * nV * D, 72), qAll = randomArray(T * H * D, 73, 1.5);
  const kStored = stored(kAll, D, dtype), vStored = stored(vAll, D, dtype);
  const kRing = be.alloc(nK * slots * W), vRing = be.alloc(nV * slots * W);
  const comp = c.comp ? { kSum: be.alloc(nK * D), vSum: be.alloc(nK * D) } : null;
  let at = 0;
  for (const n of c.chunks) {
    const shape = { rows: n, numHeads: H, numKvHeads: nK, headDim: D, pastLen: at, scale: 1 / Math.sqrt(D), ...(c.maps ? { maps: c.maps } : {}) };
    const q = qAll.subarray(at * H * D, (at + n) * H * D);
    const kt = be.upload(kAll.subarray(at * nK * D, (at + n) * nK * D)), vt = be.upload(vAll.subarray(at * nV * D, (at + n) * nV * D));
    const qt = be.upload(q);
    const plain = be.alloc(n * H * D);
    // NaN everywhere first, so a log-sum-exp the kernel does not write fails the comparison.
    const withLse = be.upload(new Float32Array(n * H * (D + 1)).fill(NaN));
    be.streamingAttention(plain, qt, kt, vt, kRing, vRing, shape, window, comp, dtype);
    be.streamingAttention(withLse, qt, kt, vt, kRing, vRing, shape, window, comp, dtype, true);
    be.ringAppend(kRing, vRing, kt, vt, n, nK, D, at, window, comp, dtype, nV);
    const a = await be.read(plain), b = await be.read(withLse);
    const what = `${name}, ${c.label}, chunk of ${n} at ${at}`;
    assert.equal(differences(a, b.subarray(0, n * H * D)), [], `${what}: the rows equal the call without the flag`);
    const expected = reference(c, q, kStored, vStored, n, at);
    assertClose(b.subarray(0, n * H * D), expected.o, `${what}: rows`, 2e-4);
    assertClose(b.subarray(n * H * D), expected.lse, `${what}: log-sum-exp`, 1e-4);
    for (const t of [kt, vt, qt, plain, withLse]) be.free(t);
    at += n;
  }
  for (const t of [kRing, vRing, ...(comp ? [comp.kSum, comp.vSum] : [])]) be.free(t);
}

const { gpu, reason } = await sharedGpu();

for (const b of kernelBackends(gpu)) {
  const t = suite(`streaming attention log-sum-exp: ${b.name}`);
  const it = b.gpu ? gpuTests(t, gpu !== null, reason) : t;
  let be: Backend;
  t.before(async () => { if (!b.gpu || gpu) be = await b.make(); });

  for (const c of CASES) {
    it(`${c.label}: rows bit for bit as without the flag, lse and rows match the float64 reference`, async () => {
      await check(be, c, b.name);
    });
  }

  it('refuses an out without room for the log-sum-exps, naming the length needed', async () => {
    const H = 6, nK = 2, D = 37, rows = 3, window = { sink: 1, recent: 4 }, slots = 5;
    // The worker checks in the worker (the failure then ends that backend): a fresh one here.
    const target = b.name === 'cpu worker' ? await WorkerCpuBackend.start(channelWorker().worker) : be;
    const q = target.alloc(rows * H * D), k = target.alloc(rows * nK * D), v = target.alloc(rows * nK * D);
    const kRing = target.alloc(nK * slots * D), vRing = target.alloc(nK * slots * D);
    const shape = { rows, numHeads: H, numKvHeads: nK, headDim: D, pastLen: 0, scale: 1 };
    const out = target.alloc(rows * H * (D + 1) - 1);
    const message = new RegExp(`streamingAttention out \\(rows, then the log-sum-exps\\).*${rows * H * (D + 1)}`);
    // Room for the rows is enough without the flag.
    target.streamingAttention(out, q, k, v, kRing, vRing, shape, window);
    if (target === be) {
      assert.throws(() => be.streamingAttention(out, q, k, v, kRing, vRing, shape, window, null, 'f32', true), message);
    } else {
      target.streamingAttention(out, q, k, v, kRing, vRing, shape, window, null, 'f32', true);
      const failure = await target.read(out).then(() => null, (e: Error) => e);
      target.destroy();
      assert.ok(failure, 'the worker accepted an out too small for the log-sum-exps');
      assert.match(failure!.message, message);
    }
  });

  t.after(() => { be?.destroy(); });
  t.run();
}
