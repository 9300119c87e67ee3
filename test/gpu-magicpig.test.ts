// MagicPIG's SimHash codes as a kernel reached by name (SIMHASH_KERNEL, src/kv/magicpig/kernels.ts) on
// the CPU backend (one and three threads: magicpig.as.ts's simhashRows), in the browser's CPU worker (over a
// MessageChannel) and on the GPU backend (simhash.wgsl), against the float64 reference: codes bit for
// bit, centered (keys) and not (queries), on odd shapes (d = 37, L not a multiple of 8, K = 16, K = 1
// with L = 2), strided rows (one head of a [rows][heads][d] tensor), the KV cache's ring case (the key
// row of every head at slot s of [H][slots][d], each centered by its head's mean), codes written at an
// offset into a bigger tensor, and the refusals. Inputs are multiples of 1/16, so every projection is
// exact in f32 and the signs cannot depend on summation order or fma. Without an adapter the GPU
// tests are skipped, except in CI where a missing GPU is a failure. (.ci/run also runs this file on
// llvmpipe, by its gpu- name.)
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Backend } from '../src/backend/contract.ts';
import { MagicPigCpu } from '../src/kv/magicpig/cpu.ts';
import { codesOf, runSimhash, SIMHASH_KERNEL } from '../src/kv/magicpig/kernels.ts';
import { codeStride, type LshParams } from '../src/kv/magicpig/params.ts';
import * as ref from '../src/kv/magicpig/reference.ts';
import { sharedGpu } from './helpers/engine.ts';
import { gpuTests } from './helpers/gpu-skip.ts';
import { kernelBackends } from './helpers/kernel-backends.ts';

const gpu = await sharedGpu();
const test = suite('MagicPIG SimHash kernel');
const gpuTest = gpuTests(test, gpu.gpu !== null, gpu.reason);

function dyadic(n: number, a: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const r = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 4294967296; };
  return Float32Array.from({ length: n }, () => Math.round((r() * 2 - 1) * a * 16) / 16);
}

interface Rows { data: Float32Array; stride: number; offset: number }

/** The float64 reference's codes of n rows, padded to [n][cs] (columns ≥ L zero); row r centered by center row r. */
function want(x: Rows, n: number, d: number, planes: Float32Array, p: LshParams, center?: Rows): Uint16Array {
  const cs = codeStride(p.L), out = new Uint16Array(n * cs);
  for (let r = 0; r < n; r++) {
    const row = x.data.subarray(x.offset + r * x.stride, x.offset + r * x.stride + d);
    const c = center && center.data.subarray(center.offset + r * center.stride, center.offset + r * center.stride + d);
    out.set(ref.simhashCodes(row, 1, d, planes, p, c), r * cs);
  }
  return out;
}

/** A codes tensor of `words` f32 whose bytes are all 0xa5 (a normal float), to see which bytes a call wrote. */
const SENTINEL = 0xa5a5;
function codesTensor(be: Backend, words: number) {
  return be.upload(new Float32Array(new Uint16Array(2 * words).fill(SENTINEL).buffer));
}

for (const b of kernelBackends(gpu.gpu)) {
  const register = b.gpu ? gpuTest : test;

  register(`${b.name}: codes = reference codes, bit for bit, centered and not, on odd shapes`, async () => {
    const be = await b.make();
    try {
      const configs = [{ K: 10, L: 150, d: 40, n: 67 }, { K: 16, L: 9, d: 24, n: 5 }, { K: 3, L: 13, d: 37, n: 18 }, { K: 1, L: 2, d: 8, n: 1 }];
      for (const [c, p] of configs.entries()) {
        const planes = dyadic(p.K * p.L * p.d, 4, 10 + c), x = dyadic(p.n * p.d, 2, 20 + c), center = dyadic(p.d, 1, 30 + c);
        const cs = codeStride(p.L);
        const wasm = b.name !== 'cpu' ? null : await MagicPigCpu.create({ ...p, planes });
        const xt = be.upload(x), pt = be.upload(planes), ct = be.upload(center);
        for (const centered of [false, true]) {
          const codes = codesTensor(be, p.n * cs / 2);
          runSimhash(be, { ...p, x: xt, planes: pt, center: centered ? ct : undefined, codes });
          const got = codesOf(await be.read(codes));
          const label = `K=${p.K} L=${p.L} d=${p.d} centered=${centered}`;
          assert.equal(Array.from(got), Array.from(want({ data: x, stride: p.d, offset: 0 }, p.n, p.d, planes, p,
            centered ? { data: center, stride: 0, offset: 0 } : undefined)), `${label}: ${b.name} vs reference`);
          if (wasm) assert.equal(Array.from(got), Array.from(wasm.codes(x, p.n, centered ? center : undefined).codes), `${label}: vs MagicPigCpu`);
          be.free(codes);
        }
        for (const t of [xt, pt, ct]) be.free(t);
      }
    } finally { be.destroy(); }
  });

  register(`${b.name}: strided rows (one head of [rows][heads][d]) written at a codes offset, nothing else touched`, async () => {
    const be = await b.make();
    try {
      const p = { K: 7, L: 21 }, d = 16, heads = 3, rows = 11, head = 2, cs = codeStride(p.L), at = 5, words = at + rows * cs / 2 + 3;
      const planes = dyadic(p.K * p.L * d, 4, 5), x = dyadic(rows * heads * d, 2, 6), center = dyadic(d, 1, 7);
      const xt = be.upload(x), pt = be.upload(planes), ct = be.upload(center), codes = codesTensor(be, words);
      runSimhash(be, { ...p, n: rows, d, x: { tensor: xt, stride: heads * d, offset: head * d }, planes: pt, center: ct, codes, codesOffset: at });
      const got = codesOf(await be.read(codes));
      const expect = new Uint16Array(2 * words).fill(SENTINEL);
      expect.set(want({ data: x, stride: heads * d, offset: head * d }, rows, d, planes, p, { data: center, stride: 0, offset: 0 }), 2 * at);
      assert.equal(Array.from(got), Array.from(expect));
      // n = 0 writes nothing.
      runSimhash(be, { ...p, n: 0, d, x: xt, planes: pt, codes: be.alloc(1) });
      for (const t of [xt, pt, ct, codes]) be.free(t);
    } finally { be.destroy(); }
  });

  register(`${b.name}: the ring case, one key row per head at slot s with per-head centers, and the queries uncentered`, async () => {
    const be = await b.make();
    try {
      const p = { K: 8, L: 12 }, H = 3, G = 2, slots = 7, d = 20, cs = codeStride(p.L);
      const planes = dyadic(p.K * p.L * d, 4, 41), ring = dyadic(H * slots * d, 2, 42), q = dyadic(H * G * d, 2, 43);
      // The per-head means [H][d] sit at an offset in a bigger tensor.
      const cat = 9, means = new Float32Array(cat + H * d + 4);
      means.set(dyadic(H * d, 1, 44), cat);
      const rt = be.upload(ring), pt = be.upload(planes), mt = be.upload(means), qt = be.upload(q);
      for (const s of [0, 4, slots - 1]) {
        const codes = codesTensor(be, H * cs / 2);
        runSimhash(be, { ...p, n: H, d, x: { tensor: rt, stride: slots * d, offset: s * d }, planes: pt,
          center: { tensor: mt, stride: d, offset: cat }, codes });
        const got = codesOf(await be.read(codes));
        assert.equal(Array.from(got), Array.from(want({ data: ring, stride: slots * d, offset: s * d }, H, d, planes, p,
          { data: means, stride: d, offset: cat })), `slot ${s}`);
        be.free(codes);
      }
      const qc = codesTensor(be, H * G * cs / 2);
      runSimhash(be, { ...p, n: H * G, d, x: qt, planes: pt, codes: qc });
      assert.equal(Array.from(codesOf(await be.read(qc))), Array.from(want({ data: q, stride: d, offset: 0 }, H * G, d, planes, p)), 'queries');
      for (const t of [rt, pt, mt, qt, qc]) be.free(t);
    } finally { be.destroy(); }
  });

  register(`${b.name}: bad calls are refused, naming the field or the tensor`, async () => {
    const be = await b.make();
    try {
      const p = { K: 7, L: 21 }, d = 16, cs = codeStride(p.L);
      const x = be.alloc(4 * d), planes = be.alloc(p.K * p.L * d), center = be.alloc(3 * d), codes = be.alloc(4 * cs / 2);
      const base = { ...p, n: 4, d, x, planes, codes };
      runSimhash(be, base); // everything fits exactly
      runSimhash(be, { ...base, n: 3, center: { tensor: center, stride: d } });
      assert.throws(() => runSimhash(be, { ...base, K: 17 }), /MagicPIG K .*got 17/);
      assert.throws(() => runSimhash(be, { ...base, K: 0 }), /MagicPIG K .*got 0/);
      assert.throws(() => runSimhash(be, { ...base, L: 1 }), /MagicPIG L .*got 1/);
      assert.throws(() => runSimhash(be, { ...base, L: 1025 }), /MagicPIG L .*got 1025/);
      assert.throws(() => runSimhash(be, { ...base, d: 0 }), /MagicPIG hash: head dim d must be a positive integer \(got 0\)/);
      assert.throws(() => runSimhash(be, { ...base, n: 1.5 }), /MagicPIG hash: row count n must be a non-negative integer/);
      assert.throws(() => runSimhash(be, { ...base, n: 1, x: { tensor: x, stride: d - 1 } }), /MagicPIG hash: x row stride 15 must be an integer ≥ d 16/);
      assert.throws(() => runSimhash(be, { ...base, center: { tensor: center, stride: -1 } }), /MagicPIG hash: center row stride -1/);
      assert.throws(() => runSimhash(be, { ...base, codesOffset: 0.5 }), /MagicPIG hash: codes offset 0.5/);
      assert.throws(() => runSimhash(be, { ...base, x: { tensor: x, stride: d, offset: 1 } }), /run simhash: tensor 'x' needs xOffset \+ \(n - 1\) \* xStride \+ d = 65 elements, it has 64/);
      assert.throws(() => runSimhash(be, { ...base, planes: x }), /run simhash: tensor 'planes' needs K \* L \* d = 2352 elements, it has 64/);
      assert.throws(() => runSimhash(be, { ...base, center: { tensor: center, stride: d } }), /run simhash: tensor 'center' needs centered \* \(centerOffset \+ \(n - 1\) \* centerStride \+ d\) = 64 elements, it has 48/);
      assert.throws(() => runSimhash(be, { ...base, codesOffset: 1 }), /run simhash: tensor 'codes' needs codesOffset \+ n \* pairs = 49 elements, it has 48/);
      assert.throws(() => be.run(SIMHASH_KERNEL, [x, planes, planes], {}), /run simhash: takes 4 tensors \(x, planes, center, codes\), got 3/);
      if (b.name === 'cpu') {
        const scalars = { n: 1, d, K: 7, L: 21, pairs: 10, xStride: d, xOffset: 0, centered: 0, centerStride: 0, centerOffset: 0, codesOffset: 0 };
        be.run(SIMHASH_KERNEL, [x, planes, planes, codes], { ...scalars, pairs: 11 });
        assert.throws(() => be.run(SIMHASH_KERNEL, [x, planes, planes, codes], scalars), /unreachable/);
      }
      for (const t of [x, planes, center, codes]) be.free(t);
    } finally { be.destroy(); }
  });
}

test.run();
