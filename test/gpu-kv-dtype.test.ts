// f16 / int8 full KV caches on the WebGPU backend: the shared suite (stored words equal the reference
// encoder's, attention equals f32 attention over the decoded cache) and the bundled model's passkey
// at 1,024 tokens with exact KV bytes, as on the CPU (kv-dtype.test.ts, kv-dtype-model.test.ts).
import { suite } from 'uvu';
import { createNodeGpu } from '../src/node/gpu.ts';
import { GpuBackend } from '../src/gpu/backend.ts';
import type { GpuContext } from '../src/gpu/context.ts';
import { kvDtypeConformance } from './helpers/kv-dtype-conformance.ts';
import { gpuTests } from './helpers/gpu-skip.ts';
import { checkBundledKv } from './helpers/kv-dtype-model.ts';
import { tempCheckpoint } from './helpers/engine.ts';
import { Engine } from '../src/engine/engine.ts';
import * as assert from 'uvu/assert';

const { gpu, reason } = await createNodeGpu();
if (gpu) {
  const ctx: GpuContext = gpu;
  const destroyDevice = ctx.destroy.bind(ctx);
  ctx.destroy = () => {};
  process.on('exit', destroyDevice);
  kvDtypeConformance('gpu', async () => new GpuBackend(ctx));
}

const test = suite('gpu: the bundled model with f16 / int8 full KV caches');
const gpuTest = gpuTests(test, gpu !== null, reason);
for (const kvDtype of ['f16', 'int8'] as const) {
  gpuTest(`bundled model on the GPU (split placement) with ${kvDtype} full KV caches: passkey at 1,024 tokens, exact KV bytes`, async () => {
    // One depth each on the software GPU (a 1,024-token prefill there takes seconds); the CPU test runs three.
    await checkBundledKv(kvDtype, { device: 'gpu', placement: 'split', threads: 1 }, 'gpu', [0.5]);
  });
}
gpuTest('f16 / int8 streaming rings on the GPU (placement gpu) are refused up front, naming the option; split and f32 are not', async () => {
  const ck = await tempCheckpoint({ layers: 2, hidden: 32, heads: 2, kvHeads: 2, intermediate: 48, vocab: 50 });
  const kinds = [[true, false], [false, true]], window = { sink: 2, recent: 4 };
  for (const kvDtype of ['f16', 'int8'] as const) {
    const error = await Engine.create(ck.config, ck.weights, { device: 'gpu', placement: 'gpu', kinds, window, kvDtype, acquireGpu: async () => ({ gpu, reason }) })
      .then(() => null, (e: Error & { field?: string }) => e);
    assert.is(error?.field, 'kvDtype');
    assert.match(String(error?.message), new RegExp(`kvDtype '${kvDtype}': the WebGPU backend keeps streaming rings in f32 only, and placement 'gpu' runs the streaming heads there`));
  }
  for (const [placement, kvDtype] of [['split', 'int8'], ['gpu', 'f32']] as const) {
    const engine = await Engine.create(ck.config, ck.weights, { device: 'gpu', placement, kinds, window, kvDtype, acquireGpu: async () => ({ gpu, reason }) });
    engine.dispose();
  }
});
test.run();
