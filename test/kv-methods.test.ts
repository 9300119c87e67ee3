// Conformance of every registered KV method (src/kv/registry.ts) on every backend (the CPU's SIMD
// WebAssembly, on one thread and on 3, the WebGPU backend on the software GPU) against the method's own float64 reference
// (src/kv/<name>/reference.ts): odd head dims (12, 20), GQA groups 1/3/4, chunked prefill then
// token-by-token decode, a chunk only appended, contexts that wrap any window, and a capacity that
// starts at 4 positions and grows as a Session grows it. After every chunk the cache's bytes equal
// the method's projection (what `duet memory` prints) and the reference's count.
// Tolerance: f32 kernels against float64, |Δ| ≤ 2e-4·(1 + |ref|) (the kernel suite's); keys and
// values are O(1).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { groupHeads, KV_METHODS, kvMethod, methodsOfKinds } from '../src/kv/registry.ts';
import { methodBytes, type KvGroupShape, type KvMethod, type KvSettings } from '../src/kv/method.ts';
import type { KvReference } from '../src/kv/reference.ts';
import type { Backend } from '../src/backend/contract.ts';
import { createCpuBackend } from '../src/cpu/backend.ts';
import { startNodeKernelWorker } from '../src/node/kernel-threads.ts';
import { GpuBackend } from '../src/gpu/backend.ts';
import { sharedGpu } from './helpers/engine.ts';
import { gpuTests } from './helpers/gpu-skip.ts';
import { assertClose } from './helpers/conformance.ts';
import { randomArray } from './reference/kernels.ts';

const TOL = 2e-4;
const DEFAULTS: KvSettings = { kvDtype: 'f32', window: { sink: 3, recent: 8 }, compensation: false };

const SHAPES: KvGroupShape[] = [
  { numKvHeads: 2, group: 3, headDim: 12 },
  { numKvHeads: 3, group: 1, headDim: 20 },
  { numKvHeads: 1, group: 4, headDim: 20 },
];

/** Chunk sizes; a negative size is a chunk that is only appended (no attention asked). */
const SCHEDULES: Array<{ label: string; chunks: number[] }> = [
  { label: 'prefill 13 + 6, then decode', chunks: [13, 6, 1, 1, 1, 1, 1, 1, 1, 1] },
  { label: 'chunks of 5', chunks: [5, 5, 5, 5, 5, 5, 5] },
  { label: 'decode from the first token', chunks: Array(22).fill(1) },
  { label: 'one long prefill, then decode', chunks: [41, 1, 1] },
  { label: 'a chunk only appended, then prefill and decode', chunks: [-9, 4, 1, 1, 17, 1] },
];

const INITIAL_CAPACITY = 4;

async function referenceOf(m: KvMethod): Promise<KvReference> {
  const mod = await import(`../src/kv/${m.name}/reference.ts`).catch((e: Error) => {
    throw new Error(`KV method "${m.name}" has no reference at src/kv/${m.name}/reference.ts (${e.message})`);
  });
  assert.ok(mod.reference, `src/kv/${m.name}/reference.ts exports \`reference\``);
  return mod.reference as KvReference;
}

/** Runs one schedule on a fresh cache; returns how many output rows were compared. */
async function runSchedule(be: Backend, method: KvMethod, ref: KvReference, shape: KvGroupShape, settings: KvSettings,
  chunks: number[], seed: number): Promise<number> {
  const { numKvHeads, group, headDim: D } = shape;
  const rowQ = numKvHeads * group * D, rowK = numKvHeads * D;
  const total = chunks.reduce((a, c) => a + Math.abs(c), 0);
  const qAll = randomArray(total * rowQ, seed, 1.5), kAll = randomArray(total * rowK, seed + 1, 1.5), vAll = randomArray(total * rowK, seed + 2);
  let capacity = INITIAL_CAPACITY;
  const cache = method.create(be, shape, capacity, settings);
  const mirror = ref.open(shape, settings);
  const checkBytes = (when: string) => {
    const projected = methodBytes(method, shape, capacity, settings);
    assert.is(cache.bytes(), projected, `${when}: cache bytes = the method's projection at capacity ${capacity}`);
    assert.is(projected, ref.bytes(shape, capacity, settings), `${when}: projection = the reference's count at capacity ${capacity}`);
  };
  let pastLen = 0, compared = 0;
  try {
    checkBytes('new cache');
    for (const c of chunks) {
      const rows = Math.abs(c), where = `chunk of ${rows} at ${pastLen}`;
      if (pastLen + rows > capacity) {
        capacity = Math.max(pastLen + rows, capacity * 2);
        cache.grow(capacity, pastLen);
        checkBytes(`grown before the ${where}`);
      }
      const q = qAll.subarray(pastLen * rowQ, (pastLen + rows) * rowQ);
      const k = kAll.subarray(pastLen * rowK, (pastLen + rows) * rowK), v = vAll.subarray(pastLen * rowK, (pastLen + rows) * rowK);
      const kt = be.upload(k), vt = be.upload(v), qt = be.upload(q);
      if (c > 0) {
        const out = be.alloc(rows * rowQ);
        await cache.attend(out, qt, kt, vt, rows, pastLen);
        const expected = mirror.attend(q, k, v, rows, pastLen);
        assertClose(await be.read(out), expected, where, TOL);
        compared += rows;
        be.free(out);
      }
      await cache.append(kt, vt, rows, pastLen, qt);
      mirror.append(k, v, rows, pastLen, q);
      be.free(kt); be.free(vt); be.free(qt);
      pastLen += rows;
      checkBytes(`after the ${where}`);
    }
  } finally { cache.free(); }
  return compared;
}

const gpu = await sharedGpu();
const backends: Array<{ name: string; available: boolean; make: () => Promise<Backend> }> = [
  { name: 'cpu', available: true, make: () => createCpuBackend() },
  // KV heads shared by 3 threads (per-thread scratch, e.g. a packed ring's decoded copy).
  { name: 'cpu × 3 threads', available: true, make: () => createCpuBackend({ threads: 3, startWorker: startNodeKernelWorker, minParallelWork: 0 }) },
  { name: 'gpu', available: gpu.gpu !== null, make: async () => new GpuBackend(gpu.gpu!) },
];

const test = suite('KV methods vs their float64 references, on every backend');

test('the registry names each method once, and each has a reference with variants', async () => {
  assert.ok(KV_METHODS.length >= 2);
  assert.is(new Set(KV_METHODS.map((m) => m.name)).size, KV_METHODS.length);
  for (const m of KV_METHODS) assert.ok((await referenceOf(m)).variants.length > 0, m.name);
});

test('head kinds become method names; a layer groups its heads in registry order; unknown names are refused', () => {
  const methods = methodsOfKinds([[false, true, false, true], [true, true, true, true]]);
  assert.equal(methods, [['streaming', 'full', 'streaming', 'full'], ['full', 'full', 'full', 'full']]);
  assert.equal(groupHeads(methods[0]).map((g) => [g.method.name, g.kvHeads]), [['full', [1, 3]], ['streaming', [0, 2]]]);
  assert.equal(groupHeads(methods[1]).map((g) => [g.method.name, g.kvHeads]), [['full', [0, 1, 2, 3]]]);
  assert.is(kvMethod('streaming').home, 'side');
  assert.throws(() => groupHeads(['full', 'topk']), /unknown KV method "topk" \(registered: full, streaming, locret, magicpig\)/);
});

for (const method of KV_METHODS) {
  const ref = await referenceOf(method);
  for (const { label, settings } of ref.variants) {
    for (const b of backends) {
      const onCpu = b.name !== 'gpu';
      const register = onCpu ? test : gpuTests(test, b.available, gpu.reason);
      register(`${method.name} (${label}) on ${b.name}: every shape and schedule`, async () => {
        const be = await b.make();
        const s: KvSettings = { ...DEFAULTS, ...settings };
        let compared = 0, seed = 1;
        try {
          for (const shape of SHAPES) {
            for (const sched of SCHEDULES) {
              try {
                compared += await runSchedule(be, method, ref, shape, s, sched.chunks, seed += 7);
              } catch (e) {
                (e as Error).message = `heads ${shape.numKvHeads}×${shape.group} headDim ${shape.headDim}, ${sched.label}: ${(e as Error).message}`;
                throw e;
              }
            }
          }
        } finally { if (onCpu) be.destroy(); }
        const rowsPerShape = SCHEDULES.reduce((n, x) => n + x.chunks.filter((c) => c > 0).reduce((a, c) => a + c, 0), 0);
        assert.is(compared, SHAPES.length * rowsPerShape, 'every attended row was compared');
      });
    }
  }
}

test.run();
