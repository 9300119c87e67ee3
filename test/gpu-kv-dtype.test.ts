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
import { kvRowBytes } from '../src/backend/kv-dtype.ts';

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
gpuTest('f16 / int8 streaming rings on the GPU (placement gpu): the session allocates the dtype\'s rows', async () => {
  const ck = await tempCheckpoint({ layers: 2, hidden: 32, heads: 2, kvHeads: 2, intermediate: 48, vocab: 50 });
  const kinds = [[true, false], [false, true]], window = { sink: 2, recent: 4 };
  for (const kvDtype of ['f32', 'f16', 'int8'] as const) {
    const engine = await Engine.create(ck.config, ck.weights, { device: 'gpu', placement: 'gpu', kinds, window, kvDtype, acquireGpu: async () => ({ gpu, reason }) });
    try {
      for (const capacity of [4, 37]) {
        const session = engine.newSession(capacity, 4);
        const kv = session.kvMemory();
        // 2 streaming KV heads of dim 16, rings of min(capacity, 6) rows, K and V.
        assert.is(kv.streamingBytes, 2 * Math.min(capacity, 6) * 2 * kvRowBytes(16, kvDtype), `${kvDtype} rings at ${capacity}`);
        session.dispose();
      }
    } finally { engine.dispose(); }
  }
});
test.run();
