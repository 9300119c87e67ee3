// The RMSNorm folded into the matmul (Backend.matmul's `norm`: the forward pass's input, post-
// attention and final norms): on every backend (CPU on 1 and 3 threads, the browser's CPU worker, the
// software GPU with and without subgroups, and with weights split over a small buffer limit), for
// f32, f16, Q8_0, Q4_0 and Q4_K weights, GEMV and tiled GEMM rows, against a float64 reference
// (rmsnorm in float64, then x̂ · dequant(w)ᵀ (+ bias) (+ prior)). Shapes: inDim odd and not a
// multiple of 4 or of the block, an unaligned xOffset, rows over two GEMM tiles, an LM-head-sized
// outDim. Tolerance: 1e-5 · Σ|x̂·w| + 1e-6 per output (f32 sums in another order; the norm's scale is
// f32). x must be left unchanged. On the CPU the norm runs once through the rmsnorm kernel, so the
// result is bit for bit rmsnorm then matmul. Bad norms are refused naming the field.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Backend, DeviceTensor } from '../src/backend/contract.ts';
import { GpuBackend } from '../src/gpu/backend.ts';
import { createNodeGpu } from '../src/node/gpu.ts';
import { dequantizeMatrix, packedBytes, quantizeMatrix, type WeightDType } from '../src/model/quant.ts';
import { GpuRowParts } from '../src/gpu/tensor.ts';
import { Random } from '../src/tasks/random.ts';
import { sharedGpu } from './helpers/engine.ts';
import { differences, kernelBackends, uniform, type KernelBackend } from './helpers/kernel-backends.ts';
import { gpuTests } from './helpers/gpu-skip.ts';

const EPS = 1e-5;
const DTYPES: WeightDType[] = ['f32', 'f16', 'q8_0', 'q4_0', 'q4_k'];
// [rows, inDim, outDim, xOffset, label]
const SHAPES: Array<[number, number, number, number, string]> = [
  [1, 37, 13, 5, 'GEMV, odd inDim, unaligned xOffset'],
  [1, 1030, 17, 0, 'GEMV, inDim over 256 vec4s per thread step'],
  [1, 64, 1001, 64, 'LM head on the last of two rows'],
  [3, 257, 9, 0, 'GEMM, partial blocks'],
  [70, 96, 67, 3, 'GEMM over two 64-row tiles, unaligned xOffset'],
];

const SMALL_LIMIT = 8192;
const { gpu, reason } = await sharedGpu();
const keep = (g: typeof gpu) => { if (g) { const destroy = g.destroy.bind(g); g.destroy = () => {}; process.on('exit', destroy); } return g; };
const noSubgroups = gpu ? keep((await createNodeGpu({ features: { subgroups: false } })).gpu) : null;
const smallLimit = gpu ? keep((await createNodeGpu({ maxBufferBytes: SMALL_LIMIT })).gpu) : null;
const backends: Array<KernelBackend & { limit?: number }> = [
  ...kernelBackends(gpu),
  { name: 'gpu without subgroups', gpu: true, make: async () => new GpuBackend(noSubgroups!) },
  // Weights over the limit split by rows; only shapes whose x and out fit run there.
  { name: 'gpu, weights split over an 8 KiB buffer limit', gpu: true, make: async () => new GpuBackend(smallLimit!), limit: SMALL_LIMIT },
];

/**
 * Checks out against the float64 reference of rmsnorm(x rows at xOffset) · wfᵀ (+ bias) (+ prior).
 * With int16X (the CPU's Q8_0/Q4_0 GEMV, which rounds x̂ to int16 per block of 32, scale =
 * maxabs/32767) the bound adds that rounding: Σ|w| · scale/2.
 */
function check(got: Float32Array, x: Float32Array, xOffset: number, g: Float32Array, wf: Float32Array, rows: number, inDim: number,
  outDim: number, bias: Float32Array | null, prior: Float32Array | null, int16X: boolean, what: string): void {
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < inDim; i++) ss += x[xOffset + r * inDim + i] ** 2;
    const s = 1 / Math.sqrt(ss / inDim + EPS);
    const xn = Array.from({ length: inDim }, (_, i) => x[xOffset + r * inDim + i] * s * g[i]);
    const halfStep = xn.map((_, i) => {
      const b = i - (i % 32);
      return int16X ? Math.max(...xn.slice(b, b + 32).map(Math.abs)) / 32767 / 2 : 0;
    });
    for (let o = 0; o < outDim; o++) {
      let ref = (prior ? prior[r * outDim + o] : 0) + (bias ? bias[o] : 0), mag = Math.abs(ref), rounding = 0;
      for (let i = 0; i < inDim; i++) {
        const p = xn[i] * wf[o * inDim + i];
        ref += p; mag += Math.abs(p); rounding += Math.abs(wf[o * inDim + i]) * halfStep[i];
      }
      const err = Math.abs(got[r * outDim + o] - ref);
      if (!(err <= 1e-5 * mag + 1e-6 + rounding)) assert.unreachable(`${what} at [${r},${o}]: ${got[r * outDim + o]} vs ${ref} (Σ|x̂·w| ${mag}, int16 bound ${rounding})`);
    }
  }
}

const test = suite('matmul with a folded RMSNorm');
const gpuTest = gpuTests(test, gpu !== null && noSubgroups !== null && smallLimit !== null, reason);

for (const kb of backends) {
  const register = kb.gpu ? gpuTest : test;
  register(`${kb.name}: matmul(norm) = float64 rmsnorm then matmul, every weight format, GEMV and GEMM`, async () => {
    const be = await kb.make();
    const r = new Random(11);
    try {
      for (const dtype of DTYPES) {
        for (const [rows, inDim, outDim, xOffset, label] of SHAPES) {
          if (kb.limit && Math.max(xOffset + rows * inDim, rows * outDim) * 4 > kb.limit) continue;
          for (const [withBias, accumulate] of [[false, false], [true, true]]) {
            const what = `${kb.name} ${dtype} ${label} [${rows}x${inDim}→${outDim}] bias=${withBias} acc=${accumulate}`;
            const packed = quantizeMatrix(dtype, uniform(r, outDim * inDim, 1), outDim, inDim);
            const wf = dequantizeMatrix(packed);
            // Rows of very different scales, so a missing or wrong per-row scale shows.
            const x = uniform(r, xOffset + rows * inDim, 1);
            for (let row = 0; row < rows; row++) for (let i = 0; i < inDim; i++) x[xOffset + row * inDim + i] *= 0.01 * 7 ** (row % 4);
            const g = uniform(r, inDim, 2), bias = uniform(r, outDim, 1), prior = uniform(r, rows * outDim, 1);
            const w = be.uploadWeight(packed);
            if (kb.limit && packedBytes(packed) > kb.limit) assert.ok(w instanceof GpuRowParts, `${what}: the weight is split`);
            const xt = be.upload(x), gt = be.upload(g), bt = withBias ? be.upload(bias) : null, out = be.upload(prior);
            be.matmul(out, xt, w, bt, rows, inDim, outDim, accumulate, xOffset, { weight: gt, eps: EPS });
            const int16X = !kb.gpu && rows === 1 && (dtype === 'q8_0' || dtype === 'q4_0');
            check(await be.read(out), x, xOffset, g, wf, rows, inDim, outDim, withBias ? bias : null, accumulate ? prior : null, int16X, what);
            assert.equal(differences(await be.read(xt), x), [], `${what}: x unchanged`);
            for (const t of [w, xt, gt, out, ...(bt ? [bt] : [])]) be.free(t);
          }
        }
      }
    } finally { be.destroy(); }
  });
}

for (const kb of backends.filter((b) => !b.gpu)) {
  test(`${kb.name}: matmul(norm) is bit for bit rmsnorm then matmul`, async () => {
    const be = await kb.make();
    const r = new Random(5);
    try {
      for (const dtype of ['f32', 'q8_0'] as WeightDType[]) {
        for (const [rows, inDim, outDim, xOffset] of [[1, 37, 13, 5], [9, 96, 20, 0]]) {
          const packed = quantizeMatrix(dtype, uniform(r, outDim * inDim, 1), outDim, inDim);
          const w = dtype === 'f32' ? be.upload(dequantizeMatrix(packed)) : be.uploadWeight(packed);
          const x = uniform(r, xOffset + rows * inDim, 3), g = uniform(r, inDim, 1);
          const xt = be.upload(x), gt = be.upload(g), folded = be.alloc(rows * outDim), plain = be.alloc(rows * outDim);
          const xn = be.upload(x.slice(xOffset, xOffset + rows * inDim));
          be.matmul(folded, xt, w, null, rows, inDim, outDim, false, xOffset, { weight: gt, eps: EPS });
          be.rmsnorm(xn, xn, gt, rows, inDim, EPS);
          be.matmul(plain, xn, w, null, rows, inDim, outDim);
          assert.equal(differences(await be.read(folded), await be.read(plain)), [], `${dtype} ${rows}x${inDim}→${outDim}`);
          for (const t of [w, xt, gt, folded, plain, xn]) be.free(t);
        }
      }
    } finally { be.destroy(); }
  });
}

for (const kb of backends.filter((b) => b.name === 'cpu' || b.name === 'gpu')) {
  const register = kb.gpu ? gpuTest : test;
  register(`${kb.name}: a bad folded norm is refused naming the field`, async () => {
    const be: Backend = await kb.make();
    try {
      const x = be.alloc(8), w = be.alloc(4), out = be.alloc(8), short: DeviceTensor = be.alloc(1), g = be.alloc(2);
      assert.throws(() => be.matmul(out, x, w, null, 4, 2, 2, false, 0, { weight: short, eps: EPS }), /matmul: the norm weight has 1 elements, the input rows 2/);
      assert.throws(() => be.matmul(out, x, w, null, 4, 2, 2, false, 0, { weight: g, eps: Number.NaN }), /matmul: norm eps must be a finite number ≥ 0 \(got NaN\)/);
      assert.throws(() => be.matmul(out, x, w, null, 4, 2, 2, false, 0, { weight: g, eps: -1 }), /norm eps must be a finite number ≥ 0 \(got -1\)/);
    } finally { be.destroy(); }
  });
}

test.run();
