// Kernels that no adapter here can execute, validated instead: Dawn's null backend offers both
// `subgroups` and `shader-f16` and compiles and validates WGSL, but runs nothing. Every built
// shader (wgsl/*.wgsl, the shader-f16 GEMVs matmul_f16*.wgsl included) must compile without errors
// and give a valid compute pipeline for each entry point on a device with both features; and the
// GPU backend must pick the shader-f16 GEMV for f16 weights there (inDim % 4 == 0; the u32-unpack
// kernels otherwise), with its bind group and dispatch passing validation. Correctness of the
// shader-f16 path itself is NOT tested (no execution): SwiftShader lacks the feature, so the
// executed f16 path there is the u32 unpack (test/gpu-gemv.test.ts).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createNodeGpu } from '../src/node/gpu.ts';
import { GpuBackend } from '../src/gpu/backend.ts';
import type { GpuContext } from '../src/gpu/context.ts';
import { quantizeMatrix } from '../src/model/quant.ts';
import { shaders } from '../src/generated/shaders.ts';
import { gpuTests } from './helpers/gpu-skip.ts';

async function nullDevice(features?: { subgroups?: boolean }): Promise<{ gpu: GpuContext | null; reason: string }> {
  const r = await createNodeGpu({ backend: 'null', features });
  if (r.gpu) { const destroy = r.gpu.destroy.bind(r.gpu); r.gpu.destroy = () => {}; process.on('exit', destroy); }
  return r;
}

const both = await nullDevice();
const f16Only = both.gpu ? (await nullDevice({ subgroups: false })).gpu : null;
const test = suite("shaders validated on Dawn's null backend (subgroups + shader-f16)");
const gpuTest = gpuTests(test, both.gpu !== null && f16Only !== null, both.reason);

/** The compute entry points of a WGSL source. */
function entryPoints(code: string): string[] {
  return [...code.matchAll(/@compute\s+@workgroup_size\([^)]*\)\s*fn\s+(\w+)/g)].map((m) => m[1]);
}

async function validationErrors(device: GPUDevice, run: () => void): Promise<string | null> {
  device.pushErrorScope('validation');
  run();
  const e = await device.popErrorScope();
  return e ? e.message : null;
}

gpuTest('the null device has both features', () => {
  assert.ok(both.gpu!.subgroups && both.gpu!.shaderF16, both.gpu!.adapterDescription);
  assert.ok(f16Only!.shaderF16 && !f16Only!.subgroups);
});

gpuTest('every shader compiles and every entry point gives a valid pipeline', async () => {
  const device = both.gpu!.device;
  // The validator is live: f16 without `enable f16`, and a binding of the wrong type, are caught.
  let bad: GPUShaderModule | null = null;
  const parse = await validationErrors(device, () => { bad = device.createShaderModule({ code: '@compute @workgroup_size(1) fn main() { let h = 1.0h; }' }); });
  assert.match(parse ?? '', /f16/, 'f16 without enable f16 is an error');
  assert.ok((await bad!.getCompilationInfo()).messages.some((m) => m.type === 'error'), 'and compilation info reports it');
  const typed = device.createShaderModule({ code: shaders.matmul_f16 });
  const err = await validationErrors(device, () => device.createComputePipeline({ layout: 'auto', compute: { module: typed, entryPoint: 'gemm' } }));
  assert.ok(err !== null, 'a missing entry point fails pipeline validation');
  const names = Object.keys(shaders);
  for (const required of ['matmul_f16', 'matmul_f16_subgroup', 'matmul_subgroup', 'matmul_packed_subgroup']) assert.ok(names.includes(required), required);
  for (const name of names) {
    const module = device.createShaderModule({ code: shaders[name], label: name });
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((m) => m.type === 'error').map((m) => `${m.lineNum}:${m.linePos} ${m.message}`);
    assert.equal(errors, [], `${name} compiles`);
    const entries = entryPoints(shaders[name]);
    assert.ok(entries.length > 0, `${name} has an entry point`);
    for (const entryPoint of entries) {
      const err = await validationErrors(device, () => device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint } }));
      assert.is(err, null, `${name}:${entryPoint} pipeline`);
    }
  }
});

gpuTest('f16 weights: the backend picks the shader-f16 GEMV (inDim % 4 == 0), and it validates', async () => {
  for (const [ctx, kernel] of [[both.gpu!, 'matmul_f16_subgroup:gemv'], [f16Only!, 'matmul_f16:gemv']] as const) {
    const be = new GpuBackend(ctx);
    const before = new Map(ctx.kernelDispatches);
    const ran = (name: string) => (ctx.kernelDispatches.get(name) ?? 0) - (before.get(name) ?? 0);
    const err = await validationErrors(ctx.device, () => {
      for (const [inDim, outDim] of [[64, 9], [4096, 3], [37, 5]]) {
        const w = be.uploadWeight(quantizeMatrix('f16', new Float32Array(inDim * outDim).fill(0.5), outDim, inDim));
        const x = be.upload(new Float32Array(inDim).fill(1)), out = be.alloc(outDim);
        be.matmul(out, x, w, null, 1, inDim, outDim);
        be.flush();
        for (const t of [w, x, out]) be.free(t);
      }
    });
    assert.is(err, null, `${kernel}: dispatches validate`);
    assert.is(ran(kernel), 2, `${kernel} for the two shapes with inDim % 4 == 0`);
    const unpack = ctx.subgroups ? 'matmul_packed_subgroup:gemv' : 'matmul_packed:gemv';
    assert.is(ran(unpack), 1, `${unpack} (u32 pairs) for inDim 37`);
    assert.equal(ctx.errors, [], 'no uncaptured WebGPU errors');
  }
});

test.run();
