// The residual add fused with the next RMSNorm (ADD_RMSNORM_KERNEL, src/backend/kernels.ts): on every
// backend (CPU, CPU × 3 threads, the browser's CPU worker, the software GPU) it leaves x and out bit for
// bit what `add` then `rmsnorm` leave, and both within 2e-6 (relative to the row's largest output) of a
// float64 reference; shapes: one row of one element, odd dims (not a multiple of 4 or of the GPU's
// 256-thread workgroup), several rows, a dim past one workgroup. Bad calls are refused by name.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ADD_RMSNORM_KERNEL } from '../src/backend/kernels.ts';
import { createCpuBackend } from '../src/cpu/backend.ts';
import { Random } from '../src/tasks/random.ts';
import { sharedGpu } from './helpers/engine.ts';
import { gpuTests } from './helpers/gpu-skip.ts';
import { differences, kernelBackends, uniform } from './helpers/kernel-backends.ts';

const gpu = await sharedGpu();
const test = suite('fused add + rmsnorm');
const gpuTest = gpuTests(test, gpu.gpu !== null, gpu.reason);

const BACKENDS = kernelBackends(gpu.gpu);

const SHAPES = [{ rows: 1, dim: 1 }, { rows: 3, dim: 7 }, { rows: 2, dim: 48 }, { rows: 5, dim: 131 }, { rows: 2, dim: 1031 }];
const EPS = 1e-5;

/** float64 reference of x + h and rmsnorm(x + h) · weight. */
function reference(x: Float32Array, h: Float32Array, w: Float32Array, rows: number, dim: number): { sum: Float64Array; out: Float64Array } {
  const sum = Float64Array.from(x, (v, i) => v + h[i]), out = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += sum[r * dim + i] ** 2;
    const inv = 1 / Math.sqrt(ss / dim + EPS);
    for (let i = 0; i < dim; i++) out[r * dim + i] = sum[r * dim + i] * inv * w[i];
  }
  return { sum, out };
}

for (const b of BACKENDS) {
  const register = b.gpu ? gpuTest : test;
  register(`${b.name}: add_rmsnorm equals add then rmsnorm bit for bit, and the float64 reference within 2e-6`, async () => {
    const be = await b.make();
    try {
      const r = new Random(11);
      for (const { rows, dim } of SHAPES) {
        const n = rows * dim;
        const x = uniform(r, n, 3), h = uniform(r, n, 2), w = uniform(r, dim, 1.5);
        const wt = be.upload(w);
        // The fused kernel.
        const xf = be.upload(x), hf = be.upload(h), outF = be.alloc(n);
        be.run(ADD_RMSNORM_KERNEL, [xf, hf, wt, outF], { rows, dim, eps: EPS });
        // The unfused pair.
        const xu = be.upload(x), hu = be.upload(h), outU = be.alloc(n);
        be.add(xu, hu, n);
        be.rmsnorm(outU, xu, wt, rows, dim, EPS);
        const [gx, go, ux, uo] = [await be.read(xf), await be.read(outF), await be.read(xu), await be.read(outU)];
        const label = `rows ${rows}, dim ${dim}`;
        assert.equal(differences(gx, ux), [], `${label}: x`);
        assert.equal(differences(go, uo), [], `${label}: out`);
        const ref = reference(x, h, w, rows, dim);
        assert.equal(differences(gx, Float32Array.from(ref.sum)), [], `${label}: x is the f32 sum`);
        for (let row = 0; row < rows; row++) {
          let scale = 0;
          for (let i = 0; i < dim; i++) scale = Math.max(scale, Math.abs(ref.out[row * dim + i]));
          for (let i = 0; i < dim; i++) {
            const err = Math.abs(go[row * dim + i] - ref.out[row * dim + i]);
            assert.ok(err <= 2e-6 * scale, `${label}: out[${row}][${i}] = ${go[row * dim + i]}, reference ${ref.out[row * dim + i]}`);
          }
        }
        for (const t of [wt, xf, hf, outF, xu, hu, outU]) be.free(t);
      }
    } finally { be.destroy(); }
  });
}

test('bad calls name the kernel and the argument', async () => {
  const be = await createCpuBackend();
  try {
    const t8 = be.alloc(8), t4 = be.alloc(4);
    assert.throws(() => be.run(ADD_RMSNORM_KERNEL, [t8, t8, t4], { rows: 2, dim: 4, eps: EPS }), /run add_rmsnorm: takes 4 tensors \(x, h, weight, out\), got 3/);
    assert.throws(() => be.run(ADD_RMSNORM_KERNEL, [t8, t8, t4, t4], { rows: 2, dim: 4, eps: EPS }), /run add_rmsnorm: tensor 'out' needs rows \* dim = 8 elements, it has 4/);
    assert.throws(() => be.run(ADD_RMSNORM_KERNEL, [t8, t8, t4, t8], { rows: 2, dim: 4 }), /run add_rmsnorm: scalar 'eps' is missing/);
    assert.throws(() => be.run(ADD_RMSNORM_KERNEL, [t8, t8, t4, t8], { rows: 2, dim: 4, eps: Number.NaN }), /run add_rmsnorm: scalar 'eps' must be a finite number/);
  } finally { be.destroy(); }
});

test.run();
