// The SIMD WebAssembly kernels against the float64 reference (the shared conformance suite).
import { createCpuBackend } from '../src/cpu/backend.ts';
import { kernelConformance } from './helpers/conformance.ts';

kernelConformance('cpu', createCpuBackend);

// Tensors above 2 GiB of WebAssembly memory (addresses with the top bit set) must work: wasm32
// allows 4 GiB, and the host converts byte addresses to element indices unsigned.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

test('tensors above 2 GiB of wasm memory: upload, kernel, read', async () => {
  const be = await createCpuBackend();
  const big = be.alloc(540_000_000); // 2.16 GB
  const a = be.upload(Float32Array.from([1, 2, 3, 4, 5]));
  assert.ok(a.ptr >= 2 ** 31, `tensor at ${a.ptr}`);
  be.add(a, be.upload(Float32Array.from([10, 20, 30, 40, 50])), 5);
  assert.equal(Array.from(await be.read(a)), [11, 22, 33, 44, 55]);
  be.free(big);
  be.destroy();
});
test.run();
