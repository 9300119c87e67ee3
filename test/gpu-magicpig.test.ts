// MagicPIG's WGSL SimHash kernel (src/kv/magicpig/simhash.wgsl) against the float64 reference and the WASM
// kernel: codes bit for bit, centered (keys) and not (queries), on odd shapes (d = 37, L not a
// multiple of 8, K = 16, strided rows of a [rows][heads][d] tensor). Inputs are multiples of 1/16,
// so every projection is exact in f32 and the signs cannot depend on summation order or fma.
// Without an adapter the suite is skipped, except in CI where a missing GPU is a failure.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createNodeGpu } from '../src/node/gpu.ts';
import { gpuTests } from './helpers/gpu-skip.ts';
import { MagicPigCpu } from '../src/kv/magicpig/cpu.ts';
import { recordSimhash, simhashOnGpu } from '../src/kv/magicpig/gpu.ts';
import { codeStride } from '../src/kv/magicpig/params.ts';
import * as ref from '../src/kv/magicpig/reference.ts';

const { gpu, reason } = await createNodeGpu();
const gpuTest = gpuTests(test, gpu !== null, reason);

function dyadic(n: number, a: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const r = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 4294967296; };
  return Float32Array.from({ length: n }, () => Math.round((r() * 2 - 1) * a * 16) / 16);
}

gpuTest('WGSL codes = reference codes = WASM codes, bit for bit, centered and not', async () => {
  if (!gpu) return;
  const configs = [{ K: 10, L: 150, d: 40, n: 67 }, { K: 16, L: 9, d: 24, n: 5 }, { K: 3, L: 13, d: 37, n: 18 }, { K: 1, L: 2, d: 8, n: 1 }];
  for (const [c, p] of configs.entries()) {
    const planes = dyadic(p.K * p.L * p.d, 4, 10 + c), x = dyadic(p.n * p.d, 2, 20 + c), center = dyadic(p.d, 1, 30 + c);
    const cs = codeStride(p.L);
    const cpu = await MagicPigCpu.create({ ...p, planes });
    for (const cen of [undefined, center]) {
      const got = await simhashOnGpu(gpu, x, p.n, p.d, planes, p, cen);
      const want = ref.simhashCodes(x, p.n, p.d, planes, p, cen);
      const padded = new Uint16Array(p.n * cs);
      for (let r = 0; r < p.n; r++) padded.set(want.subarray(r * p.L, (r + 1) * p.L), r * cs);
      assert.equal(Array.from(got), Array.from(padded), `K=${p.K} L=${p.L} d=${p.d} centered=${!!cen}: GPU vs reference`);
      assert.equal(Array.from(got), Array.from(cpu.codes(x, p.n, cen).codes), 'GPU vs WASM');
    }
  }
});

gpuTest('strided rows: one KV head of a [rows][heads][d] tensor', async () => {
  if (!gpu) return;
  const p = { K: 7, L: 21 }, d = 16, heads = 3, rows = 11, head = 2, cs = codeStride(p.L);
  const planes = dyadic(p.K * p.L * d, 4, 5), x = dyadic(rows * heads * d, 2, 6), center = dyadic(d, 1, 7);
  const xb = gpu.bufferWith(x, GPUBufferUsage.STORAGE), pb = gpu.bufferWith(planes, GPUBufferUsage.STORAGE);
  const cb = gpu.bufferWith(center, GPUBufferUsage.STORAGE), out = gpu.createBuffer(rows * cs * 2);
  recordSimhash(gpu, { ...p, x: xb, n: rows, d, xStride: heads * d, xOffset: head * d, planes: pb, center: cb, codes: out });
  const got = new Uint16Array(await gpu.readBuffer(out, 0, rows * cs * 2));
  const want = ref.simhashCodes(x.subarray(head * d), rows, d, planes, p, center, heads * d);
  for (let r = 0; r < rows; r++) assert.equal(Array.from(got.subarray(r * cs, r * cs + p.L)), Array.from(want.subarray(r * p.L, (r + 1) * p.L)), `row ${r}`);
  assert.throws(() => recordSimhash(gpu, { ...p, x: xb, n: rows + 30, d, xStride: heads * d, planes: pb, codes: out }), /x buffer of .* too small/);
  assert.throws(() => recordSimhash(gpu, { K: 17, L: 21, x: xb, n: 1, d, planes: pb, codes: out }), /MagicPIG K .*got 17/);
  assert.throws(() => recordSimhash(gpu, { K: 7, L: 1, x: xb, n: 1, d, planes: pb, codes: out }), /MagicPIG L .*got 1/);
  for (const b of [xb, pb, cb, out]) gpu.release(b);
});

test.after(() => gpu?.destroy());
test.run();
