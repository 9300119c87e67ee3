// The SIMD WebAssembly kernels against the float64 reference (the shared conformance suite).
import { createCpuBackend, type CpuBackend } from '../src/cpu/backend.ts';
import { startNodeKernelWorker } from '../src/node/kernel-threads.ts';
import { kernelConformance } from './helpers/conformance.ts';

kernelConformance('cpu', createCpuBackend);
// Worker threads over one shared memory: every job split (no size threshold), 3 threads so that
// shares are uneven and some are empty (1 or 2 KV heads, 5 output columns).
let threaded: CpuBackend | null = null;
kernelConformance('cpu × 3 threads', async () => (threaded = await createCpuBackend({ threads: 3, startWorker: startNodeKernelWorker, minParallelWork: 0 })));

// Tensors above 2 GiB of WebAssembly memory (addresses with the top bit set) must work: wasm32
// allows 4 GiB, and the host converts byte addresses to element indices unsigned.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

test('the worker threads ran shares of the threaded suite; a bad thread count is a clear error', async () => {
  assert.ok(threaded, 'the threaded suite ran');
  assert.ok(threaded!.workerShares > 50, `worker shares: ${threaded!.workerShares}`);
  const two = await createCpuBackend({ threads: 2, startWorker: startNodeKernelWorker });
  assert.is(two.description, 'WebAssembly SIMD (f32x4), 2 threads');
  two.destroy();
  for (const [threads, message] of [[0, /threads must be a positive integer/], [2, /need a way to start workers/]] as const) {
    const error = await createCpuBackend({ threads }).then(() => null, (e: Error) => e);
    assert.match(String(error?.message), message);
  }
});

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

test('the roofline probes run on every kernel thread at once: each thread its slice of the read, the whole peak loop', async () => {
  const cpu = await createCpuBackend({ threads: 2, startWorker: startNodeKernelWorker });
  try {
    const buf = cpu.alloc(64);
    const before = cpu.workerShares;
    cpu.probeAllThreads('peak', 1000);
    assert.is(cpu.workerShares, before + 1, 'the worker ran the peak loop');
    cpu.probeAllThreads('read', buf.ptr, 256, 2);
    assert.is(cpu.workerShares, before + 2, 'the worker read its half');
    // 64 bytes are one 64-byte line: the second thread's share is empty and it reads nothing.
    cpu.probeAllThreads('read', buf.ptr, 64, 1);
    assert.is(cpu.workerShares, before + 2, 'an empty share is not run');
  } finally {
    cpu.destroy();
  }
});
