// MagicPIG's WASM kernels (src/kv/magicpig/magicpig.as.ts through src/kv/magicpig/cpu.ts) against the float64
// reference of the estimator (src/kv/magicpig/reference.ts).
// - Codes: bit for bit. Inputs are multiples of 1/16 so every projection is exact in f32 whatever
//   the summation order (a sign is then never a rounding accident); odd d (37), K·L not a multiple
//   of 8, L not a multiple of 8 (masked code columns).
// - Sampled sets: exactly equal for the same codes. Partials (max, Σexp, o): |Δ| ≤ 2e-4·(1+|ref|)
//   (f32 dot products and cos θ vs float64; the kernel reads the correction from its θ table,
//   within 2e-5 of the f64 formula over K 1..16, L 2..1024, tested here too).
// - Merge: static exact part ⊕ sampled part equals exact attention to 2e-5 when every key is
//   sampled without correction; with huge L the corrected estimate approaches it (K=2, L=500:
//   1e-4 of the largest output; K=6: L=400 within 5e-3 where L=30, sampling ~13%, is off by > 2e-2).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MagicPigCpu, type MagicPigExports } from '../src/kv/magicpig/cpu.ts';
import { instantiateKernels } from '../src/cpu/wasm.ts';
import { WasmHeap } from '../src/cpu/memory.ts';
import { codeStride, type LshParams } from '../src/kv/magicpig/params.ts';
import * as ref from '../src/kv/magicpig/reference.ts';
import { assertClose } from './helpers/conformance.ts';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
/** Uniform multiples of 1/16 in [−a, a]. */
function dyadic(n: number, a: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => Math.round((r() * 2 - 1) * a * 16) / 16);
}
function gaussian(n: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r()));
}
/** [n][cs] → [n][L]. */
function strip(codes: Uint16Array, n: number, L: number): Uint16Array {
  const cs = codeStride(L), out = new Uint16Array(n * L);
  for (let r = 0; r < n; r++) {
    out.set(codes.subarray(r * cs, r * cs + L), r * L);
    for (let t = L; t < cs; t++) assert.is(codes[r * cs + t], 0, `padding column ${t} of row ${r}`);
  }
  return out;
}
function pad(codes: Uint16Array, n: number, L: number): Uint16Array {
  const cs = codeStride(L), out = new Uint16Array(n * cs);
  for (let r = 0; r < n; r++) out.set(codes.subarray(r * L, (r + 1) * L), r * cs);
  return out;
}
function meanRows(x: Float32Array, n: number, d: number): Float32Array {
  const m = new Float32Array(d);
  for (let r = 0; r < n; r++) for (let i = 0; i < d; i++) m[i] += x[r * d + i] / n;
  return m;
}
const rows = (x: Float32Array, d: number, a: number, b: number) => x.subarray(a * d, b * d);

test('SimHash codes are bit for bit the reference codes, centered or not; norms of the centered rows', async () => {
  const configs: Array<LshParams & { d: number; n: number }> = [
    { K: 10, L: 150, d: 40, n: 37 }, { K: 16, L: 9, d: 24, n: 5 }, { K: 3, L: 13, d: 37, n: 18 }, { K: 1, L: 2, d: 8, n: 1 },
  ];
  for (const [c, p] of configs.entries()) {
    const planes = dyadic(p.K * p.L * p.d, 4, 10 + c);
    const x = dyadic(p.n * p.d, 2, 20 + c);
    const center = dyadic(p.d, 1, 30 + c);
    const mp = await MagicPigCpu.create({ ...p, planes });
    for (const cen of [undefined, center]) {
      const got = mp.codes(x, p.n, cen);
      const want = ref.simhashCodes(x, p.n, p.d, planes, p, cen);
      assert.equal(Array.from(strip(got.codes, p.n, p.L)), Array.from(want), `codes K=${p.K} L=${p.L} d=${p.d} centered=${!!cen}`);
      const norms = Array.from({ length: p.n }, (_, r) => Math.hypot(...Array.from(rows(x, p.d, r, r + 1), (v, i) => v - (cen ? cen[i] : 0))));
      assertClose(got.norms, norms, 'norms', 1e-6);
    }
    // Not a constant: both bit values occur in every table's codes of the big config.
    if (c === 0) {
      const codes = ref.simhashCodes(x, p.n, p.d, planes, p);
      assert.ok(new Set(codes).size > 30, 'codes vary');
    }
  }
});

interface Case { K: number; L: number; d: number; group: number; sinks: number; local: number; T: number; seed: number }

/** A context of T keys whose middle (after sinks, before the local window) is offloaded. */
async function setup(c: Case, planes?: Float32Array, tables = false) {
  const { d, group, T } = c;
  const keys = gaussian(T * d, c.seed), values = gaussian(T * d, c.seed + 1);
  // Queries near some keys, so that a few keys are much more likely to be sampled.
  const q = gaussian(group * d, c.seed + 2);
  for (let g = 0; g < group; g++) for (let i = 0; i < d; i++) q[g * d + i] = 0.6 * q[g * d + i] + 1.2 * keys[(c.sinks + 7 + 31 * g) * d + i];
  const lo = c.sinks, hi = T - c.local, n = hi - lo;
  const mid = rows(keys, d, lo, hi), midV = rows(values, d, lo, hi);
  const mean = meanRows(mid, n, d);
  const p = { K: c.K, L: c.L };
  const mp = await MagicPigCpu.create({ ...p, d, planes: planes ?? gaussian(c.K * c.L * d, c.seed + 3) });
  const head = mp.createHead(n + 3, { tables });
  head.setMean(mean);
  // Appended in uneven chunks (codes and norms land at the right rows).
  head.append(rows(mid, d, 0, 1), rows(midV, d, 0, 1), 1);
  head.append(rows(mid, d, 1, n), rows(midV, d, 1, n), n - 1);
  return { keys, values, q, mid, midV, mean, n, p, mp, head };
}

/** The static tokens' exact partial for query g. */
function staticPartial(c: Case, keys: Float32Array, values: Float32Array, qg: Float32Array, scale: number): ref.PartialSoftmax {
  const idx = [...Array(c.sinks).keys(), ...Array.from({ length: c.local }, (_, i) => c.T - c.local + i)];
  const s = idx.map((j) => { let t = 0; for (let i = 0; i < c.d; i++) t += qg[i] * keys[j * c.d + i]; return t * scale; });
  return ref.partialSoftmax(s, idx, values, c.d);
}

function kernelPartial(res: { max: Float32Array; sumExp: Float32Array; o: Float32Array }, g: number, d: number): ref.PartialSoftmax {
  return { max: res.max[g], sumExp: res.sumExp[g], o: Float64Array.from(res.o.subarray(g * d, (g + 1) * d)) };
}

function maxRelError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) { num = Math.max(num, Math.abs(a[i] - b[i])); den = Math.max(den, Math.abs(b[i])); }
  return num / den;
}

const attendCases: Case[] = [
  { K: 4, L: 20, d: 40, group: 3, sinks: 4, local: 64, T: 4 + 301 + 64, seed: 100 },
  { K: 5, L: 27, d: 37, group: 1, sinks: 4, local: 24, T: 4 + 233 + 24, seed: 110 },
];
for (const [tables, c] of [false, true].flatMap((t) => attendCases.map((c) => [t, c] as const))) {
  test(`gather-and-attend (${tables ? 'bucket tables' : 'code scan'}): sampled sets exactly, partials to 2e-4, GQA group ${c.group}, ${c.T - c.sinks - c.local} keys, d = ${c.d}`, async () => {
    const { q, mid, midV, mean, n, p, mp, head } = await setup(c, undefined, tables);
    const scale = 1 / Math.sqrt(c.d);
    const { codes, norms } = head.readCodes();
    assert.is(head.length, n);
    const kCodes = strip(codes, n, c.L);
    assert.equal(Array.from(kCodes), Array.from(strip(mp.codes(mid, n, mean).codes, n, c.L)), 'appended codes = codes of the centered keys');
    assertClose(norms, Array.from({ length: n }, (_, j) => Math.hypot(...Array.from(rows(mid, c.d, j, j + 1), (v, i) => v - mean[i]))), 'stored norms', 1e-6);
    const qCodesRef = ref.simhashCodes(q, c.group, c.d, mpPlanes(c), p);
    for (const correction of [true, false]) {
      const res = head.attend({ q, group: c.group, scale, qCodes: pad(qCodesRef, c.group, c.L), correction, withSampled: true });
      let total = 0;
      for (let g = 0; g < c.group; g++) {
        const qg = rows(q, c.d, g, g + 1);
        const want = ref.sampledPartial({ q: qg, qCodes: qCodesRef.subarray(g * c.L, (g + 1) * c.L), keys: mid, values: midV, kCodes, mean, n, d: c.d, scale, correction }, p);
        const got = Array.from(res.sampled![g]);
        // The scan lists keys ascending; the tables in bucket order (the softmax does not depend on it).
        assert.equal(tables ? got.sort((a, b) => a - b) : got, want.sampled, `sampled set of query ${g}`);
        assert.is(res.counts[g], want.sampled.length);
        total += want.sampled.length;
        assertClose([res.max[g], res.sumExp[g]], [want.partial.max, want.partial.sumExp], `max, Σexp of query ${g}`);
        assertClose(res.o.subarray(g * c.d, (g + 1) * c.d), want.partial.o, `o of query ${g}`);
      }
      // Neither nothing nor everything: the test exercises the selection.
      assert.ok(total > c.group * 5 && total < c.group * n * 0.8, `sampled ${total} of ${c.group * n}`);
    }
    // Query codes hashed on the CPU (no qCodes given) = the kernel's own codes of q.
    const own = head.attend({ q, group: c.group, scale });
    const given = head.attend({ q, group: c.group, scale, qCodes: mp.codes(q, c.group).codes });
    assert.equal(Array.from(own.counts), Array.from(given.counts));
    assert.equal(Array.from(own.o), Array.from(given.o));
    // Appending after an attend: the tables are rebuilt over every row (same sets as the reference's).
    const extraK = gaussian(3 * c.d, 7), extraV = gaussian(3 * c.d, 8);
    head.append(extraK, extraV, 3);
    const allK = new Float32Array([...mid, ...extraK]), allV = new Float32Array([...midV, ...extraV]);
    const res = head.attend({ q, group: c.group, scale, qCodes: pad(qCodesRef, c.group, c.L), withSampled: true });
    const allCodes = strip(head.readCodes().codes, n + 3, c.L);
    for (let g = 0; g < c.group; g++) {
      const want = ref.sampledPartial({ q: rows(q, c.d, g, g + 1), qCodes: qCodesRef.subarray(g * c.L, (g + 1) * c.L), keys: allK, values: allV, kCodes: allCodes, mean, n: n + 3, d: c.d, scale }, p);
      assert.equal(Array.from(res.sampled![g]).sort((a, b) => a - b), want.sampled, `after append: sampled set of query ${g}`);
      assertClose(res.o.subarray(g * c.d, (g + 1) * c.d), want.partial.o, `after append: o of query ${g}`);
    }
  });
}

// The planes setup() draws for a case (the same seed).
function mpPlanes(c: Case): Float32Array { return gaussian(c.K * c.L * c.d, c.seed + 3); }

test('static ⊕ sampled by log-sum-exp is exact attention when every key is sampled (zero planes, no correction)', async () => {
  const c: Case = { K: 10, L: 150, d: 24, group: 4, sinks: 4, local: 64, T: 4 + 257 + 64, seed: 200 };
  const { keys, values, q, mid, midV, mean, n, p, head } = await setup(c, new Float32Array(10 * 150 * 24));
  const scale = 1 / Math.sqrt(c.d);
  for (const correction of [false, true]) {
    const res = head.attend({ q, group: c.group, scale, correction });
    for (let g = 0; g < c.group; g++) {
      assert.is(res.counts[g], n, 'every key collides in every table');
      const qg = rows(q, c.d, g, g + 1);
      const merged = ref.finishPartial(ref.mergePartials(staticPartial(c, keys, values, qg, scale), kernelPartial(res, g, c.d)));
      if (!correction) {
        assertClose(merged, ref.finishPartial(ref.exactPartial(qg, keys, values, c.T, c.d, scale)), `query ${g}: merged = exact`, 2e-5);
      } else {
        // One softmax over static (exact logits) ∪ all offloaded keys (corrected logits): the merge is exact here too.
        const all = ref.sampledPartial({ q: qg, qCodes: new Uint16Array(c.L), keys: mid, values: midV, kCodes: new Uint16Array(n * c.L), mean, n, d: c.d, scale }, p);
        const want = ref.finishPartial(ref.mergePartials(staticPartial(c, keys, values, qg, scale), all.partial));
        assertClose(merged, want, `query ${g}: merged = one softmax over the union`, 2e-4);
      }
    }
  }
});

test('with huge L the corrected estimate approaches exact attention; error shrinks as L grows', async () => {
  const base = { d: 40, group: 2, sinks: 4, local: 64, T: 4 + 401 + 64, seed: 300 };
  const errors: Record<string, number> = {};
  const fractions: Record<string, number> = {};
  for (const [K, L] of [[2, 500], [6, 30], [6, 400]]) {
    const c: Case = { ...base, K, L };
    const { keys, values, q, n, head } = await setup(c);
    const scale = 1 / Math.sqrt(c.d);
    const res = head.attend({ q, group: c.group, scale });
    // Bucket tables with L > 255 hits per key: the u8 counter must not wrap.
    const tabled = (await setup(c, undefined, true)).head.attend({ q, group: c.group, scale });
    assert.equal(Array.from(tabled.counts), Array.from(res.counts), `K=${K} L=${L}: tables and scan sample the same keys`);
    assertClose(tabled.o, res.o, `K=${K} L=${L}: tables vs scan`, 1e-5);
    let err = 0;
    for (let g = 0; g < c.group; g++) {
      const qg = rows(q, c.d, g, g + 1);
      const merged = ref.finishPartial(ref.mergePartials(staticPartial(c, keys, values, qg, scale), kernelPartial(res, g, c.d)));
      err = Math.max(err, maxRelError(merged, ref.finishPartial(ref.exactPartial(qg, keys, values, c.T, c.d, scale))));
    }
    errors[`${K},${L}`] = err;
    fractions[`${K},${L}`] = (res.counts[0] + res.counts[1]) / (2 * n);
  }
  assert.ok(fractions['2,500'] > 0.99, `K=2 L=500 samples ${fractions['2,500']}`);
  assert.ok(errors['2,500'] < 1e-4, `K=2 L=500 error ${errors['2,500']}`);
  assert.ok(fractions['6,30'] < 0.5, `K=6 L=30 samples ${fractions['6,30']}`);
  assert.ok(errors['6,400'] < 5e-3 && errors['6,30'] > 2e-2, `K=6: L=400 error ${errors['6,400']}, L=30 error ${errors['6,30']}`);
  assert.ok(errors['6,400'] < errors['6,30'], `error L=400 ${errors['6,400']} < L=30 ${errors['6,30']}`);
});

test('the sampling correction read from its θ table is within 2e-5 of the float64 formula (cells checked to 1e-5 at build): K 1..16, L 2..1024, cos θ over [−1, 1], near ±1 and clamped', async () => {
  const { kernels, memory } = await instantiateKernels();
  const k = kernels as unknown as MagicPigExports, heap = new WasmHeap(memory, kernels.heapBase());
  const table = heap.alloc(k.samplingWeightEntries() * 8);
  const worst: Record<string, number> = {};
  for (const [K, L] of [[1, 2], [1, 1024], [2, 500], [3, 12], [6, 20], [10, 150], [11, 150], [14, 60], [16, 2], [16, 1024]]) {
    k.buildSamplingWeights(table, K, L);
    let w = 0;
    const check = (c: number) => { w = Math.max(w, Math.abs(k.tabledLogWeight(table, c, K, L) - ref.logSamplingWeight(c, { K, L }))); };
    for (let i = 0; i <= 20000; i++) { check(Math.cos((i * Math.PI) / 20000)); check(-1 + i / 10000); }
    for (const e of [0, 1e-12, 1e-9, 1e-6, 1e-3]) { check(1 - e); check(-1 + e); }
    check(1.5); check(-1.5);
    worst[`${K},${L}`] = w;
  }
  for (const [p, w] of Object.entries(worst)) assert.ok(w < 2e-5, `K,L = ${p}: |Δ| ${w}`);
  // The table is the formula's: a table of another K or L is visibly off.
  k.buildSamplingWeights(table, 10, 149);
  assert.ok(Math.abs(k.tabledLogWeight(table, 0.3, 10, 150) - ref.logSamplingWeight(0.3, { K: 10, L: 150 })) > 1e-3);
});

test('an empty head gives the empty partial, and merging it leaves the static part', async () => {
  const mp = await MagicPigCpu.create({ K: 10, L: 150, d: 8, planes: gaussian(10 * 150 * 8, 1) });
  const head = mp.createHead(4);
  const res = head.attend({ q: gaussian(16, 2), group: 2, scale: 0.35 });
  assert.equal(Array.from(res.counts), [0, 0]);
  assert.equal(Array.from(res.max), [-Infinity, -Infinity]);
  assert.equal(Array.from(res.sumExp), [0, 0]);
  assert.equal(Array.from(res.o), new Array(16).fill(0));
  const st: ref.PartialSoftmax = { max: 1.5, sumExp: 2, o: Float64Array.from([1, 2, 3, 4, 5, 6, 7, 8]) };
  assert.equal(Array.from(ref.mergePartials(st, kernelPartial(res, 0, 8)).o), Array.from(st.o));
  head.free();
  assert.throws(() => head.attend({ q: gaussian(8, 3), group: 1, scale: 1 }), /used after free/);
});

test('bad parameters and shapes are clear errors naming the field', async () => {
  const planes = (K: number, L: number, d: number) => new Float32Array(K * L * d);
  for (const [K, L, msg] of [[0, 150, /MagicPIG K .*1\.\.16 \(got 0\)/], [17, 150, /MagicPIG K .*got 17/], [2.5, 10, /MagicPIG K/],
    [10, 1, /MagicPIG L .*2\.\.1024 \(got 1\)/], [10, 1025, /MagicPIG L .*got 1025/], [10, NaN, /MagicPIG L/]] as const) {
    const e = await MagicPigCpu.create({ K, L, d: 8, planes: planes(Math.max(1, K | 0), Math.max(1, L | 0), 8) }).then(() => null, (x: Error) => x);
    assert.match(String(e?.message), msg);
    assert.throws(() => ref.simhashCodes(new Float32Array(8), 1, 8, planes(16, 16, 8), { K, L }), msg);
  }
  const e = await MagicPigCpu.create({ K: 4, L: 8, d: 8, planes: planes(4, 8, 7) }).then(() => null, (x: Error) => x);
  assert.match(String(e?.message), /planes: need K·L·d = 256 values, got 224/);
  const mp = await MagicPigCpu.create({ K: 4, L: 8, d: 8, planes: planes(4, 8, 8) });
  const head = mp.createHead(3);
  assert.throws(() => head.append(new Float32Array(8), new Float32Array(8), 1), /setMean before append/);
  head.setMean(new Float32Array(8));
  head.append(new Float32Array(16), new Float32Array(16), 2);
  assert.throws(() => head.append(new Float32Array(16), new Float32Array(16), 2), /capacity 3 exceeded \(2 rows \+ 2\)/);
  assert.throws(() => head.setMean(new Float32Array(8)), /before the first append/);
  assert.throws(() => head.setMean(new Float32Array(7)), /key mean has 7 values, head dim is 8/);
  assert.throws(() => head.attend({ q: new Float32Array(12), group: 2, scale: 1 }), /q has 12 values, group 2 × head dim 8 needs 16/);
  assert.throws(() => head.attend({ q: new Float32Array(8), group: 1, scale: 1, qCodes: new Uint16Array(7) }), /qCodes has 7 values/);
  assert.throws(() => mp.createHead(0), /head capacity must be a positive integer/);
  assert.is(head.bytes, 3 * (2 * 8 * 4 + 4 + 8 * 2) + 8 * 4);
  assert.is(mp.createHead(3, { tables: true }).bytes, 3 * (2 * 8 * 4 + 4 + 8 * 2) + 8 * 4 + 8 * 3 * 4 + 8 * 17 * 4);
});

test.run();
