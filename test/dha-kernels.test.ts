// Decoupled key/value heads (DHA) in the attention kernels: a full cache with its own key and value
// head counts (kvAppend's numValueHeads) and attention through per-query-head maps (AttentionShape.maps),
// on the CPU (one and two threads) and the GPU (skipped without an adapter, failing in CI).
// f32: against a float64 reference, |Δ| ≤ 2e-4 (assertClose). f16 / int8: against the same
// backend's plain attention over a cache expanded to one key and one value head per query head,
// which rounds the same rows the same way, |Δ| ≤ 1e-5.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Backend, HeadMaps } from '../src/backend/contract.ts';
import { kvRowWords, type KvDType } from '../src/backend/kv-dtype.ts';
import { createCpuBackend } from '../src/cpu/backend.ts';
import { GpuBackend } from '../src/gpu/backend.ts';
import { startNodeKernelWorker } from '../src/node/kernel-threads.ts';
import { assertClose } from './helpers/conformance.ts';
import { sharedGpu } from './helpers/engine.ts';
import { gpuTests } from './helpers/gpu-skip.ts';
import * as ref from './reference/kernels.ts';

// 5 query heads over 3 key heads and 2 value heads, or 2 key heads and 3 value heads (the V cache
// the longer one); no map is a contiguous grouping.
const H = 5, D = 6;
const LAYOUTS: Array<[string, HeadMaps, number]> = [
  ['3 key heads, 2 value heads', { numValueHeads: 2, queryToKey: Int32Array.from([2, 0, 2, 1, 0]), queryToValue: Int32Array.from([1, 1, 0, 1, 0]) }, 3],
  ['2 key heads, 3 value heads', { numValueHeads: 3, queryToKey: Int32Array.from([1, 0, 1, 1, 0]), queryToValue: Int32Array.from([2, 0, 1, 2, 0]) }, 2],
];
let maps = LAYOUTS[0][1], NK = LAYOUTS[0][2], NV = maps.numValueHeads;

/** Appends `chunks` of keys/values (positions 0…) and attends the last chunk's queries through the maps. */
async function mappedRun(be: Backend, chunks: number[], dtype: KvDType, seed: number) {
  const T = chunks.reduce((a, b) => a + b, 0), cap = T + 3, W = kvRowWords(D, dtype);
  const k = ref.randomArray(T * NK * D, seed), v = ref.randomArray(T * NV * D, seed + 1);
  const rows = chunks[chunks.length - 1], pastLen = T - rows;
  const q = ref.randomArray(rows * H * D, seed + 2);
  const kc = be.alloc(NK * cap * W), vc = be.alloc(NV * cap * W);
  let at = 0;
  for (const n of chunks) {
    be.kvAppend(kc, vc, be.upload(k.subarray(at * NK * D, (at + n) * NK * D)), be.upload(v.subarray(at * NV * D, (at + n) * NV * D)), n, NK, D, cap, at, dtype, NV);
    at += n;
  }
  const out = be.alloc(rows * H * D);
  be.attention(out, be.upload(q), kc, vc, { rows, numHeads: H, numKvHeads: NK, headDim: D, pastLen, scale: 1 / Math.sqrt(D), maps }, cap, dtype);
  return { out: await be.read(out), k, v, q, rows, pastLen, T, cap, kc, vc };
}

/** The same attention with every query head given its own copy of its key and value head (plain MHA). */
async function expandedRun(be: Backend, r: Awaited<ReturnType<typeof mappedRun>>, dtype: KvDType) {
  const { k, v, q, rows, pastLen, T, cap } = r;
  const ke = new Float32Array(T * H * D), ve = new Float32Array(T * H * D);
  for (let t = 0; t < T; t++) for (let h = 0; h < H; h++) {
    ke.set(k.subarray((t * NK + maps.queryToKey[h]) * D, (t * NK + maps.queryToKey[h] + 1) * D), (t * H + h) * D);
    ve.set(v.subarray((t * NV + maps.queryToValue[h]) * D, (t * NV + maps.queryToValue[h] + 1) * D), (t * H + h) * D);
  }
  const W = kvRowWords(D, dtype);
  const kc = be.alloc(H * cap * W), vc = be.alloc(H * cap * W);
  be.kvAppend(kc, vc, be.upload(ke), be.upload(ve), T, H, D, cap, 0, dtype);
  const out = be.alloc(rows * H * D);
  be.attention(out, be.upload(q), kc, vc, { rows, numHeads: H, numKvHeads: H, headDim: D, pastLen, scale: 1 / Math.sqrt(D) }, cap, dtype);
  return be.read(out);
}

function reference(r: Awaited<ReturnType<typeof mappedRun>>): Float64Array {
  const out = new Float64Array(r.rows * H * D);
  for (let h = 0; h < H; h++) {
    const kh = maps.queryToKey[h], vh = maps.queryToValue[h];
    const qh = new Float64Array(r.rows * D);
    for (let t = 0; t < r.rows; t++) qh.set(r.q.subarray((t * H + h) * D, (t * H + h + 1) * D), t * D);
    const o = ref.maskedAttention(qh, r.rows, 1, 1, D, r.pastLen, 1 / Math.sqrt(D),
      (_x, j) => r.k.subarray((j * NK + kh) * D, (j * NK + kh + 1) * D), (_x, j) => r.v.subarray((j * NV + vh) * D, (j * NV + vh + 1) * D), ref.causalVisible);
    for (let t = 0; t < r.rows; t++) out.set(o.subarray(t * D, (t + 1) * D), (t * H + h) * D);
  }
  return out;
}

function conformance(name: string, make: () => Promise<Backend>, gpu?: { available: boolean; reason: string }): void {
  const t = suite(`DHA kernels: ${name}`);
  const it = gpu ? gpuTests(t, gpu.available, gpu.reason) : t;
  let be: Backend;
  t.before(async () => { if (!gpu || gpu.available) be = await make(); });

  const use = (layout: (typeof LAYOUTS)[number]) => { [, maps, NK] = layout; NV = maps.numValueHeads; };
  for (const layout of LAYOUTS) {
    it(`${layout[0]}, f32: prefill after chunks (33 + 7 + 5 rows) and decode match the float64 reference`, async () => {
      use(layout);
      const pre = await mappedRun(be, [33, 7, 5], 'f32', 3);
      assertClose(pre.out, reference(pre), `${name} prefill`);
      const dec = await mappedRun(be, [70, 1], 'f32', 9);
      assertClose(dec.out, reference(dec), `${name} decode`);
    });

    it(`${layout[0]}: the K cache holds the key heads and the V cache the value heads, head-major`, async () => {
      use(layout);
      const r = await mappedRun(be, [4, 2], 'f32', 21);
      const kc = await be.read(r.kc), vc = await be.read(r.vc);
      assert.is(kc.length, NK * r.cap * D);
      assert.is(vc.length, NV * r.cap * D);
      for (let t = 0; t < r.T; t++) {
        for (let h = 0; h < NK; h++) for (let d = 0; d < D; d++) assert.is(kc[(h * r.cap + t) * D + d], r.k[(t * NK + h) * D + d]);
        for (let h = 0; h < NV; h++) for (let d = 0; d < D; d++) assert.is(vc[(h * r.cap + t) * D + d], r.v[(t * NV + h) * D + d]);
      }
    });

    for (const dtype of ['f16', 'int8'] as const) {
      it(`${layout[0]}, ${dtype}: equals plain attention over the cache expanded to one K and V head per query head`, async () => {
        use(layout);
        const r = await mappedRun(be, [30, 6], dtype, 5);
        assertClose(r.out, await expandedRun(be, r, dtype), `${name} ${dtype}`, 1e-5);
      });
    }
  }

  it('refuses maps out of range or of the wrong length, and decoupled streaming heads', async () => {
    use(LAYOUTS[0]);
    const kc = be.alloc(NK * 8 * D), vc = be.alloc(NV * 8 * D), q = be.alloc(H * D), out = be.alloc(H * D);
    const shape = { rows: 1, numHeads: H, numKvHeads: NK, headDim: D, pastLen: 0, scale: 1 };
    const bad = (m: HeadMaps) => () => be.attention(out, q, kc, vc, { ...shape, maps: m }, 8);
    assert.throws(bad({ ...maps, queryToKey: Int32Array.from([0, 1, 3, 0, 0]) }), /query head 2 maps to key head 3, outside 0\.\.2/);
    assert.throws(bad({ ...maps, queryToValue: Int32Array.from([0, 2, 0, 0, 0]) }), /query head 1 maps to value head 2, outside 0\.\.1/);
    assert.throws(bad({ ...maps, queryToKey: Int32Array.from([0, 1]) }), /head maps of 2 and 5 entries, the call has 5 query heads/);
    assert.throws(() => be.streamingAttention(out, q, q, q, kc, vc, { ...shape, maps }, { sink: 1, recent: 2 }), /full attention only/);
  });

  t.after(() => { be?.destroy(); });
  t.run();
}

conformance('cpu', () => createCpuBackend());
conformance('cpu × 2 threads', () => createCpuBackend({ threads: 2, startWorker: startNodeKernelWorker, minParallelWork: 0 }));
const { gpu, reason } = await sharedGpu();
conformance('gpu', async () => new GpuBackend(gpu!), { available: gpu !== null, reason });
