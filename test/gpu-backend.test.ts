// The WebGPU backend: the shared kernel conformance suite, plus GPU-specific cases (large matmuls,
// dispatches folded past 65535 workgroups per dimension, aliasing, write ordering).
// Without an adapter the suite is skipped, except in CI where a missing GPU is a failure.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createNodeGpu } from '../src/node/gpu.ts';
import { GpuBackend } from '../src/gpu/backend.ts';
import type { GpuContext } from '../src/gpu/context.ts';
import { assertClose, kernelConformance } from './helpers/conformance.ts';
import * as ref from './reference/kernels.ts';
import { gpuTests } from './helpers/gpu-skip.ts';

const { gpu, reason } = await createNodeGpu();

if (!gpu) {
  const skipped = suite('gpu backend');
  gpuTests(skipped, false, reason)('the WebGPU kernel conformance suite and GPU-specific cases', () => {});
  skipped.run();
} else {
  const ctx: GpuContext = gpu;
  // The conformance suite destroys its backend at the end; the GPU-specific suite below shares the
  // device, so the real destroy happens at process exit.
  const destroyDevice = ctx.destroy.bind(ctx);
  ctx.destroy = () => {};
  process.on('exit', destroyDevice);

  kernelConformance('gpu', async () => new GpuBackend(ctx));

  const test = suite(`gpu backend specifics (${ctx.adapterDescription})`);
  const be = new GpuBackend(ctx);
  const { randomArray } = ref;

  test('dispatch counter increases', async () => {
    const before = be.dispatches;
    const t = be.upload(randomArray(10, 1));
    be.add(t, be.upload(randomArray(10, 2)), 10);
    await be.read(t);
    assert.ok(be.dispatches > before);
  });

  test('matmul 2048×2048, rows 1 (GEMV) and rows 19 (GEMM)', async () => {
    const n = 2048;
    const w = randomArray(n * n, 21, 0.05), wt = be.upload(w);
    for (const rows of [1, 19]) {
      const x = randomArray(rows * n, 22 + rows);
      const out = be.alloc(rows * n);
      be.matmul(out, be.upload(x), wt, null, rows, n, n);
      assertClose(await be.read(out), ref.matmul(x, w, null, rows, n, n), `matmul rows ${rows}`, 5e-4);
    }
  });

  test('matmul GEMM with odd inDim, bias, unaligned xOffset', async () => {
    const rows = 70, inDim = 131, outDim = 67;
    const x = randomArray((rows + 1) * inDim, 31), w = randomArray(outDim * inDim, 32, 0.2), b = randomArray(outDim, 33);
    const out = be.alloc(rows * outDim);
    be.matmul(out, be.upload(x), be.upload(w), be.upload(b), rows, inDim, outDim, false, inDim);
    assertClose(await be.read(out), ref.matmul(x.subarray(inDim), w, b, rows, inDim, outDim), 'matmul', 5e-4);
  });

  test('GEMV over more than 65535 workgroups (folded into y)', async () => {
    const inDim = 4, outDim = 65536 * 8 + 40; // 65541 workgroups of 8 rows
    const x = randomArray(inDim, 41), w = randomArray(outDim * inDim, 42), b = randomArray(outDim, 43);
    const out = be.alloc(outDim);
    be.matmul(out, be.upload(x), be.upload(w), be.upload(b), 1, inDim, outDim);
    assertClose(await be.read(out), ref.matmul(x, w, b, 1, inDim, outDim), 'gemv folded', 5e-4);
  });

  test('elementwise and rmsnorm over more than 65535 workgroups', async () => {
    const n = 256 * 65535 + 1000;
    const g = randomArray(n, 51, 4), u = randomArray(n, 52);
    const gt = be.upload(g), ut = be.upload(u);
    be.siluMul(gt, gt, ut, n); // in place (out is gate)
    const got = await be.read(gt);
    const want = ref.siluMul(g, u, n);
    for (const i of [0, 1, 255, 256 * 65535 - 1, 256 * 65535, n - 1]) {
      assert.ok(Math.abs(got[i] - want[i]) <= 2e-4 * (1 + Math.abs(want[i])), `siluMul element ${i}`);
    }
    be.free(gt); be.free(ut);
    const rows = 70000, dim = 3;
    const x = randomArray(rows * dim, 53), wn = randomArray(dim, 54);
    const xt = be.upload(x);
    be.rmsnorm(xt, xt, be.upload(wn), rows, dim, 1e-6);
    assertClose(await be.read(xt), ref.rmsnorm(x, wn, rows, dim, 1e-6), 'rmsnorm folded');
    be.free(xt);
  });

  test('aliasing: siluMul out = up, add(x, x), copy within one tensor, embed and rope past the uniform block', async () => {
    const n = 100;
    const g = randomArray(n, 61), u = randomArray(n, 62);
    const ut = be.upload(u);
    be.siluMul(ut, be.upload(g), ut, n);
    assertClose(await be.read(ut), ref.siluMul(g, u, n), 'siluMul out = up');
    const x = randomArray(n, 63), xt = be.upload(x);
    be.add(xt, xt, n);
    assertClose(await be.read(xt), x.map((v) => 2 * v), 'add(x, x)');
    const c = be.upload(Float32Array.from({ length: 10 }, (_, i) => i));
    be.copy(c, 2, c, 0, 5);
    assertClose(await be.read(c), [0, 1, 0, 1, 2, 3, 4, 7, 8, 9], 'copy overlapping', 0);

    const vocab = 50, dim = 12, ids = Int32Array.from({ length: 100 }, (_, i) => (i * 7) % vocab);
    const table = randomArray(vocab * dim, 64), out = be.alloc(ids.length * dim);
    be.embed(out, be.upload(table), ids, dim);
    const expected = new Float32Array(ids.length * dim);
    ids.forEach((id, r) => expected.set(table.subarray(id * dim, (id + 1) * dim), r * dim));
    assertClose(await be.read(out), expected, 'embed 100 rows', 0);
    assert.throws(() => be.embed(out, be.upload(table), new Int32Array([vocab]), dim), /outside the table/);

    const rows = 90, heads = 2, headDim = 16;
    const q = randomArray(rows * heads * headDim, 65);
    const positions = Int32Array.from({ length: rows }, (_, r) => 1000 + r * 13);
    const invFreq = Float32Array.from({ length: headDim / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / headDim));
    const qt = be.upload(q);
    be.rope(qt, rows, heads, headDim, positions, be.upload(invFreq));
    // Position 2000 in f32 products: allow for the rounding of θ itself.
    assertClose(await be.read(qt), ref.rope(q, rows, heads, headDim, positions, invFreq), 'rope 90 rows', 1e-3);
  });

  test('write keeps recording order; free of a tensor used by unsubmitted work', async () => {
    const a = be.upload(new Float32Array([1, 2, 3, 4]));
    const b = be.alloc(4);
    be.copy(b, 0, a, 0, 4);        // recorded, not submitted
    be.write(a, new Float32Array([9, 9, 9, 9]));
    assertClose(await be.read(b), [1, 2, 3, 4], 'copy saw the data before the write', 0);
    assertClose(await be.read(a), [9, 9, 9, 9], 'write applied', 0);
    const t = be.upload(randomArray(8, 71));
    be.add(b, t, 4);
    be.free(t);                     // destroyed after the submit
    be.flush();
    await be.read(b);
    assert.equal(ctx.errors, [], 'no WebGPU errors');
  });

  test('no WebGPU validation errors during the run', () => {
    assert.equal(ctx.errors, []);
  });

  test.run();
}
