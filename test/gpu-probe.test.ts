// The bench's GPU roofline probes (wgsl/probe.wgsl) against plain float64 references: the read
// probe's per-thread grid-stride sums on an odd-sized buffer that does not fill the last stride,
// and the fma probe's eight chains per thread. Tolerance: 1e-5 relative (f32 sums of a few terms).
// Without an adapter the suite is skipped, except in CI where a missing GPU is a failure.
import { test } from 'uvu';
import { createNodeGpu } from '../src/node/gpu.ts';
import { gpuTests } from './helpers/gpu-skip.ts';
import { noiseArray } from '../src/bench/random-weights.ts';
import { assertClose } from './helpers/conformance.ts';

const WG = 256;
const { gpu, reason } = await createNodeGpu();
const params = (n4: number, iters: number) => new Uint32Array([n4, iters, 0, 0]).buffer;

const gpuTest = gpuTests(test, gpu !== null, reason);

gpuTest('read_sum: each thread sums its grid-stride vec4s', async () => {
  if (!gpu) return;
  const groups = 3, threads = groups * WG, n4 = 2 * threads + 77;
  const data = noiseArray(4 * n4, 7);
  const src = gpu.bufferWith(data, GPUBufferUsage.STORAGE, 'probe src');
  const sink = gpu.createBuffer(threads * 4, 'probe sink');
  gpu.dispatch(gpu.pipeline('probe', 'read_sum'), [src, sink], params(n4, 0), [groups]);
  const got = new Float32Array(await gpu.readBuffer(sink, 0, threads * 4));
  const want = new Float64Array(threads);
  for (let t = 0; t < threads; t++) for (let i = t; i < n4; i += threads) for (let l = 0; l < 4; l++) want[t] += data[4 * i + l];
  assertClose(got, want, 'read_sum', 1e-5);
  gpu.release(src); gpu.release(sink);
});

gpuTest('fma_chains: eight bounded chains per thread', async () => {
  if (!gpu) return;
  const groups = 5, threads = groups * WG, iters = 7;
  const sink = gpu.createBuffer(threads * 4, 'probe sink');
  gpu.dispatch(gpu.pipeline('probe', 'fma_chains'), [sink], params(0, iters), [groups]);
  const got = new Float32Array(await gpu.readBuffer(sink, 0, threads * 4));
  const want = new Float64Array(threads);
  for (let t = 0; t < threads; t++) {
    const s = Math.fround((t & 1023) * Math.fround(1e-4));
    for (let chain = 0; chain < 8; chain++) {
      for (let lane = 0; lane < 4; lane++) {
        let a = s + 0.01 * lane + 0.1 * chain;
        for (let i = 0; i < iters; i++) a = a * 0.999 + 0.001;
        want[t] += a;
      }
    }
  }
  assertClose(got, want, 'fma_chains', 1e-5);
  gpu.release(sink);
});

test.after(() => gpu?.destroy());
test.run();
