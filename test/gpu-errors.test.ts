// An uncaptured WebGPU error (here a validation error; on a real device also a failed allocation)
// makes the next read reject, naming it, instead of returning bytes the skipped work never wrote;
// it is reported once and later reads go on. Without an adapter the suite is skipped, except in CI.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createNodeGpu } from '../src/node/gpu.ts';
import { GpuBackend } from '../src/gpu/backend.ts';
import { gpuTests } from './helpers/gpu-skip.ts';

const { gpu, reason } = await createNodeGpu();
const gpuTest = gpuTests(test, gpu !== null, reason);

gpuTest('a read after an uncaptured WebGPU error rejects naming it, once', async () => {
  const be = new GpuBackend(gpu!);
  const t = be.upload(new Float32Array([1, 2, 3, 4]));
  assert.equal(Array.from(await be.read(t)), [1, 2, 3, 4]);
  // A write past the end of a 16-byte buffer: skipped, reported as an uncaptured validation error.
  const small = gpu!.device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  gpu!.device.queue.writeBuffer(small, 64, new Float32Array(4));
  let message = '';
  for (let tries = 0; tries < 20 && !message; tries++) await be.read(t).catch((e: Error) => { message = e.message; });
  assert.match(message, /WebGPU reported 1 error since the last read \(the latest: Write range[\s\S]+\); the GPU.s results cannot be trusted/);
  assert.is(gpu!.errors.length, 1);
  assert.equal(Array.from(await be.read(t)), [1, 2, 3, 4], 'reported once; the next read goes on');
});

test.after(() => gpu?.destroy());
test.run();
