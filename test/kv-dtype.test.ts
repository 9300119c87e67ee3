// f16 / int8 full KV caches: the reference encoder (src/backend/kv-dtype.ts) on known values, and the
// CPU kernels (one thread and three) against it; the GPU runs the same suite in gpu-kv-dtype.test.ts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createCpuBackend } from '../src/cpu/backend.ts';
import { startNodeKernelWorker } from '../src/node/kernel-threads.ts';
import { decodeKvRow, encodeKvRow, kvRowBytes, kvRowWords } from '../src/backend/kv-dtype.ts';
import { kvDTypeOption } from '../src/engine/kv-dtype.ts';
import { kvDtypeConformance } from './helpers/kv-dtype-conformance.ts';

test('row sizes: f32 4·D, f16 2·D (rounded up to a word), int8 D codes (rounded up to a word) + a 4-byte scale', () => {
  assert.equal([64, 128, 24, 22, 7].map((d) => kvRowBytes(d, 'f32')), [256, 512, 96, 88, 28]);
  assert.equal([64, 128, 24, 22, 7].map((d) => kvRowBytes(d, 'f16')), [128, 256, 48, 44, 16]);
  assert.equal([64, 128, 24, 22, 7].map((d) => kvRowBytes(d, 'int8')), [68, 132, 28, 28, 12]);
  assert.is(kvRowWords(64, 'int8'), 17);
});

test('reference encoder on known values', () => {
  const out = new Uint32Array(4);
  encodeKvRow([1, -2, 0.5, 65504, 1e9, -0], 'f16', out);
  assert.equal(Array.from(out.subarray(0, 3)), [0xc000_3c00, 0x7bff_3800, 0x8000_7c00]);
  // int8: max|x| = 254 → scale 2, codes x / 2 rounded half to even (1.5 → 2, 2.5 → 2, −0.5 → 0).
  encodeKvRow([254, -254, 3, 5, -1, 0, 1, 7], 'int8', out);
  assert.equal(Array.from(new Int8Array(out.buffer, 0, 8)), [127, -127, 2, 2, 0, 0, 0, 4]);
  assert.is(new Float32Array(out.buffer, 8, 1)[0], 2);
  const back = new Float32Array(8);
  decodeKvRow(out, 0, 8, 'int8', back);
  assert.equal(Array.from(back), [254, -254, 4, 4, 0, 0, 0, 8]);
  encodeKvRow(new Float32Array(8), 'int8', out);
  assert.equal(Array.from(out.subarray(0, 3)), [0, 0, 0], 'an all-zero row: codes 0, scale 0');
});

test('kvDtype option: f32 by default; anything else than f32/f16/int8 is an error naming the option', () => {
  assert.is(kvDTypeOption(undefined), 'f32');
  assert.is(kvDTypeOption('int8'), 'int8');
  try { kvDTypeOption('q8_0'); assert.unreachable('accepted q8_0'); } catch (e) {
    assert.is((e as { field?: string }).field, 'kvDtype');
    assert.match((e as Error).message, /must be one of f32, f16, int8 \(got "q8_0"\)/);
  }
});

test.run();

kvDtypeConformance('cpu', createCpuBackend);
kvDtypeConformance('cpu × 3 threads', () => createCpuBackend({ threads: 3, startWorker: startNodeKernelWorker, minParallelWork: 0 }));
