// The decode GEMV (matmul with rows = 1) in both of its variants: with subgroup reductions
// (wgsl/matmul_subgroup.wgsl, matmul_packed_subgroup.wgsl: chosen when the device has `subgroups`)
// and with the workgroup-memory reduction (matmul.wgsl, matmul_packed.wgsl: every other device, or
// the feature switched off with createNodeGpu({ features: { subgroups: false } })). Both run against
// a float64 reference on the dequantized weights for f32, f16, Q8_0, Q4_0 and Q4_K on odd shapes
// (inDim not a multiple of 4 or 32, odd outDim, an unaligned xOffset, bias + accumulate, an
// LM-head-sized outDim). Tolerance: 1e-5 · Σ|x·w| + 1e-6 per output (f32 sums in another order).
// The kernel-dispatch counter (GpuContext.kernelDispatches) asserts which variant ran, and where
// the adapter offers `subgroups` the default device must use it, so neither case passes on the
// other's kernel. The subgroup sum is also checked to repeat bit for bit (its order is fixed).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createNodeGpu } from '../src/node/gpu.ts';
import { GpuBackend } from '../src/gpu/backend.ts';
import type { GpuContext } from '../src/gpu/context.ts';
import { dequantizeMatrix, quantizeMatrix, type WeightDType } from '../src/model/quant.ts';
import { sharedGpu } from './helpers/engine.ts';
import { gpuTests } from './helpers/gpu-skip.ts';

function noise(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; out[i] = s / 2 ** 31 - 1; }
  return out;
}

const { gpu: on, reason } = await sharedGpu();
const off = on ? (await createNodeGpu({ features: { subgroups: false } })).gpu : null;
if (off) { const destroy = off.destroy.bind(off); off.destroy = () => {}; process.on('exit', destroy); }
const test = suite('gpu decode GEMV: subgroup and workgroup-memory variants');
const gpuTest = gpuTests(test, on !== null && off !== null, reason);

const DTYPES: WeightDType[] = ['f32', 'f16', 'q8_0', 'q4_0', 'q4_k'];
// [inDim, outDim, xOffset]
const SHAPES: Array<[number, number, number]> = [
  [1, 1, 0], [3, 7, 0], [37, 13, 5], [64, 9, 0], [257, 17, 3], [1030, 5, 0], [2051, 33, 1], [4096, 3, 0],
];
/** An LM head: many output rows (many workgroups, folded when needed), one row of x. */
const LM_HEAD: [number, number, number] = [64, 10001, 0];

function check(got: Float32Array, x: Float32Array, xOffset: number, wf: Float32Array, inDim: number, outDim: number,
  bias: Float32Array | null, prior: Float32Array | null, what: string): void {
  for (let o = 0; o < outDim; o++) {
    let ref = (prior ? prior[o] : 0) + (bias ? bias[o] : 0), mag = Math.abs(ref);
    for (let i = 0; i < inDim; i++) { const p = x[xOffset + i] * wf[o * inDim + i]; ref += p; mag += Math.abs(p); }
    const err = Math.abs(got[o] - ref);
    if (!(err <= 1e-5 * mag + 1e-6)) assert.unreachable(`${what} at row ${o}: ${got[o]} vs ${ref} (Σ|x·w| ${mag})`);
  }
}

/** Runs every shape for every format on `ctx`; returns the GEMV dispatches per kernel name. */
async function runAll(ctx: GpuContext, label: string): Promise<Map<string, number>> {
  const be = new GpuBackend(ctx);
  const before = new Map(ctx.kernelDispatches);
  let seed = 7;
  for (const dtype of DTYPES) {
    for (const [inDim, outDim, xOffset] of [...SHAPES, LM_HEAD]) {
      const withExtras = outDim < 1000;
      const wf32 = noise(outDim * inDim, seed++);
      const packed = dtype === 'f32' ? { dtype, rows: outDim, cols: inDim, data: wf32 } : quantizeMatrix(dtype, wf32, outDim, inDim);
      const wf = dtype === 'f32' ? wf32 : dequantizeMatrix(packed);
      const x = noise(xOffset + inDim, seed++), bias = noise(outDim, seed++), prior = noise(outDim, seed++);
      const w = be.uploadWeight(packed), xt = be.upload(x), bt = withExtras ? be.upload(bias) : null, out = be.upload(prior);
      be.matmul(out, xt, w, bt, 1, inDim, outDim, withExtras, xOffset);
      const got = await be.read(out);
      check(got, x, xOffset, wf, inDim, outDim, withExtras ? bias : null, withExtras ? prior : null, `${label} ${dtype} [${inDim}→${outDim}] xOffset ${xOffset}`);
      if (inDim === 2051) {
        const again = be.alloc(outDim);
        be.matmul(again, xt, w, null, 1, inDim, outDim, false, xOffset);
        be.matmul(again, xt, w, null, 1, inDim, outDim, false, xOffset);
        const a = await be.read(again);
        be.matmul(again, xt, w, null, 1, inDim, outDim, false, xOffset);
        assert.equal(Array.from(await be.read(again)), Array.from(a), `${label} ${dtype}: the same sums bit for bit`);
        be.free(again);
      }
      for (const t of [w, xt, out, ...(bt ? [bt] : [])]) be.free(t);
    }
  }
  const ran = new Map<string, number>();
  for (const [name, n] of ctx.kernelDispatches) {
    const d = n - (before.get(name) ?? 0);
    if (d > 0 && name.endsWith(':gemv')) ran.set(name, d);
  }
  return ran;
}

const CALLS_PER_DTYPE = SHAPES.length + 1 + 3; // + the three repeats of the 2051-wide shape

gpuTest('the default device uses subgroups whenever the adapter offers them; the switch turns them off', () => {
  assert.is(on!.subgroups, on!.adapterFeatures.has('subgroups'), `default device: ${on!.adapterDescription}`);
  assert.is(off!.subgroups, false, 'features: { subgroups: false }');
  if (!on!.subgroups) console.warn(`[note] the adapter offers no subgroups (${on!.adapterDescription}): only the fallback GEMV runs here`);
});

gpuTest('subgroup GEMV (when offered) matches the float64 reference for f32 and every packed format', async () => {
  const ran = await runAll(on!, on!.subgroups ? 'subgroup' : 'fallback');
  const f32 = on!.subgroups ? 'matmul_subgroup:gemv' : 'matmul:gemv';
  const packed = on!.subgroups ? 'matmul_packed_subgroup:gemv' : 'matmul_packed:gemv';
  assert.equal(Object.fromEntries(ran), { [f32]: CALLS_PER_DTYPE, [packed]: 4 * CALLS_PER_DTYPE });
});

gpuTest('workgroup-memory GEMV (subgroups switched off) matches the same reference', async () => {
  const ran = await runAll(off!, 'fallback');
  assert.equal(Object.fromEntries(ran), { 'matmul:gemv': CALLS_PER_DTYPE, 'matmul_packed:gemv': 4 * CALLS_PER_DTYPE });
});

test.run();
