// Decoupled key/value heads (DHA) in the attention kernels: a full cache with its own key and value
// head counts (kvAppend's numValueHeads) and attention through per-query-head maps (AttentionShape.maps),
// on the CPU (one and two threads) and the GPU (skipped without an adapter, failing in CI).
// f32: against a float64 reference, |Δ| ≤ 2e-4 (assertClose). f16 / int8: against the same
// backend's plain attention over a cache expanded to one key and one value head per query head,
// which rounds the same rows the same way, |Δ| ≤ 1e-5. The same for streaming attention over rings
// with their own key and value head counts (ringAppend's numValueHeads, streamingAttention's maps),
// through chunked prefill and decode past the ring's wrap, and for the streaming method's caches
// (growth included) against its float64 reference (src/kv/streaming/reference.ts).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Backend, HeadMaps } from '../src/backend/contract.ts';
import { kvRowWords, type KvDType } from '../src/backend/kv-dtype.ts';
import { createCpuBackend } from '../src/cpu/backend.ts';
import { GpuBackend } from '../src/gpu/backend.ts';
import { startNodeKernelWorker } from '../src/node/kernel-threads.ts';
import { streamingMethod } from '../src/kv/streaming/method.ts';
import { reference as streamingReference } from '../src/kv/streaming/reference.ts';
import type { KvGroupShape, KvSettings } from '../src/kv/method.ts';
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

/**
 * Float64 attention of `rows` query rows at pastLen… through the maps: query head h reads key head
 * queryToKey[h] and value head queryToValue[h] of the positions `visible` lets it see.
 */
function mappedReference(r: { q: Float32Array; k: Float32Array; v: Float32Array }, rows: number, pastLen: number,
  visible: Parameters<typeof ref.maskedAttention>[9]): Float64Array {
  const out = new Float64Array(rows * H * D);
  for (let h = 0; h < H; h++) {
    const kh = maps.queryToKey[h], vh = maps.queryToValue[h];
    const qh = new Float64Array(rows * D);
    for (let t = 0; t < rows; t++) qh.set(r.q.subarray((t * H + h) * D, (t * H + h + 1) * D), t * D);
    const o = ref.maskedAttention(qh, rows, 1, 1, D, pastLen, 1 / Math.sqrt(D),
      (_x, j) => r.k.subarray((j * NK + kh) * D, (j * NK + kh + 1) * D), (_x, j) => r.v.subarray((j * NV + vh) * D, (j * NV + vh + 1) * D), visible);
    for (let t = 0; t < rows; t++) out.set(o.subarray(t * D, (t + 1) * D), (t * H + h) * D);
  }
  return out;
}

const reference = (r: Awaited<ReturnType<typeof mappedRun>>) => mappedReference(r, r.rows, r.pastLen, ref.causalVisible);

const WINDOW = { sink: 3, recent: 8 };

/**
 * Streams `chunks` through rings of NK key heads and NV value heads (attend each chunk, then append
 * it, as the streaming method does); returns every chunk's outputs, concatenated by row.
 * expanded: the same through rings of one key and one value head per query head, without maps.
 */
async function streamingRun(be: Backend, chunks: number[], dtype: KvDType, seed: number, expanded = false) {
  const T = chunks.reduce((a, b) => a + b, 0), slots = WINDOW.sink + WINDOW.recent, W = kvRowWords(D, dtype);
  const k = ref.randomArray(T * NK * D, seed), v = ref.randomArray(T * NV * D, seed + 1), q = ref.randomArray(T * H * D, seed + 2);
  const [nk, nv] = expanded ? [H, H] : [NK, NV];
  const expand = (x: Float32Array, n: number, map: Int32Array) => {
    if (!expanded) return x;
    const e = new Float32Array((x.length / n) * H);
    for (let t = 0; t < x.length / (n * D); t++) for (let h = 0; h < H; h++) e.set(x.subarray((t * n + map[h]) * D, (t * n + map[h] + 1) * D), (t * H + h) * D);
    return e;
  };
  const ke = expand(k, NK, maps.queryToKey), ve = expand(v, NV, maps.queryToValue);
  const kRing = be.alloc(nk * slots * W), vRing = be.alloc(nv * slots * W);
  const out = new Float32Array(T * H * D);
  let at = 0;
  for (const n of chunks) {
    const kc = be.upload(ke.subarray(at * nk * D, (at + n) * nk * D)), vc = be.upload(ve.subarray(at * nv * D, (at + n) * nv * D));
    const o = be.alloc(n * H * D);
    const shape = { rows: n, numHeads: H, numKvHeads: nk, headDim: D, pastLen: at, scale: 1 / Math.sqrt(D), ...(expanded ? {} : { maps }) };
    be.streamingAttention(o, be.upload(q.subarray(at * H * D, (at + n) * H * D)), kc, vc, kRing, vRing, shape, WINDOW, null, dtype);
    be.ringAppend(kRing, vRing, kc, vc, n, nk, D, at, WINDOW, null, dtype, nv);
    out.set(await be.read(o), at * H * D);
    at += n;
  }
  return { out, k, v, q, T, kRing, vRing };
}

/** Float64 streaming attention of every position through the maps (sink + recent of its own key and value heads). */
const streamingReferenceOut = (r: Awaited<ReturnType<typeof streamingRun>>) =>
  mappedReference(r, r.T, 0, ref.streamingVisible(WINDOW.sink, WINDOW.recent));

/** The streaming method's cache with maps (created short, grown past the window) against its float64 reference. */
async function streamingMethodRun(be: Backend, dtype: KvDType, seed: number): Promise<void> {
  const shape: KvGroupShape = { numKvHeads: NK, group: 1, headDim: D, layer: 2, maps };
  const settings: KvSettings = { kvDtype: dtype, window: WINDOW, compensation: false };
  let capacity = 6;
  const cache = streamingMethod.create(be, shape, capacity, settings);
  const mirror = streamingReference.open(shape, settings);
  assert.is(cache.bytes(), streamingReference.bytes(shape, capacity, settings), 'bytes at capacity 6');
  let at = 0;
  for (const n of [4, 2, 9, 1, 17, 1, 1]) {
    if (at + n > capacity) { capacity = at + n + 5; cache.grow(capacity, at); }
    assert.is(cache.bytes(), streamingReference.bytes(shape, capacity, settings), `bytes at capacity ${capacity}`);
    const k = ref.randomArray(n * NK * D, seed + at), v = ref.randomArray(n * NV * D, seed + at + 100), q = ref.randomArray(n * H * D, seed + at + 200);
    const kt = be.upload(k), vt = be.upload(v), qt = be.upload(q), o = be.alloc(n * H * D);
    await cache.attend(o, qt, kt, vt, n, at);
    await cache.append(kt, vt, n, at, qt);
    assertClose(await be.read(o), mirror.attend(q, k, v, n, at), `streaming method, ${dtype}, chunk at ${at}`, dtype === 'f32' ? 2e-4 : 1e-5);
    mirror.append(k, v, n, at, q);
    at += n;
  }
  cache.free();
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

    it(`${layout[0]}, f32 streaming (sink 3, recent 8): prefill in chunks (9 + 7 + 13 rows) and decode past the wrap match the float64 reference`, async () => {
      use(layout);
      const r = await streamingRun(be, [9, 7, 13, 1, 1, 1], 'f32', 31);
      assertClose(r.out, streamingReferenceOut(r), `${name} streaming`);
    });

    it(`${layout[0]}: the K ring holds the key heads and the V ring the value heads, by slot`, async () => {
      use(layout);
      const r = await streamingRun(be, [5, 9], 'f32', 41);
      const slots = WINDOW.sink + WINDOW.recent, kr = await be.read(r.kRing), vr = await be.read(r.vRing);
      assert.is(kr.length, NK * slots * D);
      assert.is(vr.length, NV * slots * D);
      for (let t = 0; t < r.T; t++) {
        if (t >= WINDOW.sink && t < r.T - WINDOW.recent) continue;
        const slot = t < WINDOW.sink ? t : WINDOW.sink + ((t - WINDOW.sink) % WINDOW.recent);
        for (let h = 0; h < NK; h++) for (let d = 0; d < D; d++) assert.is(kr[(h * slots + slot) * D + d], r.k[(t * NK + h) * D + d]);
        for (let h = 0; h < NV; h++) for (let d = 0; d < D; d++) assert.is(vr[(h * slots + slot) * D + d], r.v[(t * NV + h) * D + d]);
      }
    });

    for (const dtype of ['f16', 'int8'] as const) {
      it(`${layout[0]}, ${dtype} streaming: equals streaming over rings expanded to one K and V head per query head`, async () => {
        use(layout);
        const chunks = [9, 7, 13, 1, 1];
        const r = await streamingRun(be, chunks, dtype, 51);
        assertClose(r.out, (await streamingRun(be, chunks, dtype, 51, true)).out, `${name} streaming ${dtype}`, 1e-5);
      });
    }

    for (const dtype of ['f32', 'f16', 'int8'] as const) {
      it(`${layout[0]}, ${dtype}: the streaming method's cache with maps (grown twice) matches its float64 reference`, async () => {
        use(layout);
        await streamingMethodRun(be, dtype, 61);
      });
    }

    for (const dtype of ['f16', 'int8'] as const) {
      it(`${layout[0]}, ${dtype}: equals plain attention over the cache expanded to one K and V head per query head`, async () => {
        use(layout);
        const r = await mappedRun(be, [30, 6], dtype, 5);
        assertClose(r.out, await expandedRun(be, r, dtype), `${name} ${dtype}`, 1e-5);
      });
    }
  }

  it('refuses maps out of range or of the wrong length, and compensation with maps', async () => {
    use(LAYOUTS[0]);
    const kc = be.alloc(NK * 8 * D), vc = be.alloc(NV * 8 * D), q = be.alloc(H * D), out = be.alloc(H * D);
    const shape = { rows: 1, numHeads: H, numKvHeads: NK, headDim: D, pastLen: 0, scale: 1 };
    const bad = (m: HeadMaps) => () => be.attention(out, q, kc, vc, { ...shape, maps: m }, 8);
    assert.throws(bad({ ...maps, queryToKey: Int32Array.from([0, 1, 3, 0, 0]) }), /query head 2 maps to key head 3, outside 0\.\.2/);
    assert.throws(bad({ ...maps, queryToValue: Int32Array.from([0, 2, 0, 0, 0]) }), /query head 1 maps to value head 2, outside 0\.\.1/);
    assert.throws(bad({ ...maps, queryToKey: Int32Array.from([0, 1]) }), /head maps of 2 and 5 entries, the call has 5 query heads/);
    const w = { sink: 1, recent: 2 }, comp = { kSum: be.alloc(NK * D), vSum: be.alloc(NK * D) };
    const kv = be.alloc(2 * NK * D);
    assert.throws(() => be.streamingAttention(out, q, kv, kv, kc, vc, { ...shape, maps: { ...maps, queryToValue: Int32Array.from([0, 0, 0, 2, 0]) } }, w),
      /streamingAttention: query head 3 maps to value head 2, outside 0\.\.1/);
    assert.throws(() => be.streamingAttention(out, q, kv, kv, kc, vc, { ...shape, maps }, w, comp), /compensation with decoupled key\/value heads/);
    assert.throws(() => be.ringAppend(kc, vc, kv, kv, 1, NK, D, 0, w, comp, 'f32', NV), /compensation with decoupled key\/value heads/);
    assert.throws(() => streamingMethod.create(be, { numKvHeads: NK, group: 1, headDim: D, layer: 4, maps }, 8, { kvDtype: 'f32', window: w, compensation: true }),
      /streaming heads of layer 4: compensation \(RazorAttention\) is not supported with decoupled key\/value heads/);
  });

  t.after(() => { be?.destroy(); });
  t.run();
}

conformance('cpu', () => createCpuBackend());
conformance('cpu × 2 threads', () => createCpuBackend({ threads: 2, startWorker: startNodeKernelWorker, minParallelWork: 0 }));
const { gpu, reason } = await sharedGpu();
conformance('gpu', async () => new GpuBackend(gpu!), { available: gpu !== null, reason });
