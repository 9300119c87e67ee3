// Kernels reached by name (Backend.run, src/backend/kernels.ts): every named kernel, called through
// the entry on the CPU (one thread and three), the software GPU and the browser's CPU worker, equals
// the direct call: locret_score bit for bit the scorer modules that call the WASM export and the WGSL
// dispatch themselves (src/kv/locret/cpu.ts, gpu.ts), on odd shapes with q, k, v at offsets in one
// tensor and in padded tensors of their own; add is exact f32 addition, aliased operands included.
// Bad calls (unknown export / shader / entry, wrong tensor count, missing, extra or non-integer
// scalars, undersized tensors) fail naming the kernel and the argument.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Backend } from '../src/backend/contract.ts';
import { ADD_KERNEL, checkKernelCall, evalSize, type KernelDef } from '../src/backend/kernels.ts';
import { createCpuBackend } from '../src/cpu/backend.ts';
import { GpuBackend } from '../src/gpu/backend.ts';
import { WorkerCpuBackend } from '../src/browser/worker-cpu.ts';
import { LocretScorerCpu } from '../src/kv/locret/cpu.ts';
import { recordLocretScores } from '../src/kv/locret/gpu.ts';
import { LOCRET_SCORE_KERNEL, runLocretScores } from '../src/kv/locret/kernels.ts';
import { locretMethod } from '../src/kv/locret/method.ts';
import { seededLocretHeads } from '../src/kv/locret/reference.ts';
import { counterDelta } from '../src/gpu/context.ts';
import { initRetainingHeads, retainingHeadShape, type RetainingHeads } from '../src/kv/locret/retaining-heads.ts';
import { Random } from '../src/tasks/random.ts';
import { channelWorker } from './helpers/channel-worker.ts';
import { sharedGpu } from './helpers/engine.ts';
import { gpuTests } from './helpers/gpu-skip.ts';
import { differences, kernelBackends, uniform } from './helpers/kernel-backends.ts';

const gpu = await sharedGpu();
const test = suite('kernels by name');
const gpuTest = gpuTests(test, gpu.gpu !== null, gpu.reason);

const BACKENDS = kernelBackends(gpu.gpu);

// head_dim 5 with GQA 6/3 and hidden 7; one query head of head_dim 1; hidden above the 64-thread workgroup.
const CASES = [
  { heads: 6, kvHeads: 3, headDim: 5, hidden: 7, tokens: [1, 65] },
  { heads: 1, kvHeads: 1, headDim: 1, hidden: 1, tokens: [3] },
  { heads: 8, kvHeads: 2, headDim: 3, hidden: 131, tokens: [9] },
];

interface Layout { label: string; n: number; qd: number; kvd: number; q: Float32Array; k: Float32Array; v: Float32Array;
  rows: { q: [number, number]; k: [number, number]; v: [number, number] } }

/** q, k, v rows [stride, offset] in one tensor (offsets, the reference's [q; k; v] rows) or three padded tensors. */
function layouts(r: Random, n: number, qd: number, kvd: number): Layout[] {
  const inDim = qd + 2 * kvd, x = uniform(r, n * inDim + 2, 3);
  const q = uniform(r, n * (qd + 3), 3), k = uniform(r, n * (kvd + 1) + 2, 3), v = uniform(r, n * kvd, 3);
  return [
    { label: 'one tensor at offsets', n, qd, kvd, q: x, k: x, v: x, rows: { q: [inDim, 0], k: [inDim, qd], v: [inDim, qd + kvd] } },
    { label: 'padded tensors', n, qd, kvd, q, k, v, rows: { q: [qd + 3, 0], k: [kvd + 1, 2], v: [kvd, 0] } },
  ];
}

/** The direct CPU call: LocretScorerCpu runs the WASM export on its own kernel instance. */
async function directCpu(heads: RetainingHeads, dims: { numHeads: number; numKvHeads: number; headDim: number }, c: Layout): Promise<Float32Array> {
  const scorer = await LocretScorerCpu.create(heads, dims);
  try {
    return scorer.scores(0, { n: c.n, q: c.q.subarray(c.rows.q[1]), k: c.k.subarray(c.rows.k[1]), v: c.v.subarray(c.rows.v[1]),
      qStride: c.rows.q[0], kStride: c.rows.k[0], vStride: c.rows.v[0] });
  } finally { scorer.free(); }
}

/** The direct GPU call: gpu.ts records the WGSL dispatch on its own buffers. */
async function directGpu(heads: RetainingHeads, c: Layout): Promise<Float32Array> {
  const ctx = gpu.gpu!, p = heads.layers[0];
  const buf = (a: Float32Array) => ctx.bufferWith(a, GPUBufferUsage.STORAGE);
  const q = buf(c.q), k = c.k === c.q ? q : buf(c.k), v = c.v === c.q ? q : buf(c.v), fc1 = buf(p.fc1), fc2 = buf(p.fc2);
  const scores = ctx.createBuffer(c.n * p.outDim * 4);
  recordLocretScores(ctx, { n: c.n, qd: c.qd, kvd: c.kvd, hidden: p.hidden, outDim: p.outDim, fc1, fc2, scores,
    q: { buffer: q, stride: c.rows.q[0], offset: c.rows.q[1] }, k: { buffer: k, stride: c.rows.k[0], offset: c.rows.k[1] },
    v: { buffer: v, stride: c.rows.v[0], offset: c.rows.v[1] } });
  const out = new Float32Array(await ctx.readBuffer(scores, 0, c.n * p.outDim * 4));
  for (const b of new Set([q, k, v, fc1, fc2, scores])) ctx.release(b);
  return out;
}

/** Through the entry: runLocretScores → Backend.run on `be`. */
async function viaRun(be: Backend, heads: RetainingHeads, c: Layout): Promise<Float32Array> {
  const p = heads.layers[0];
  const q = be.upload(c.q), k = c.k === c.q ? q : be.upload(c.k), v = c.v === c.q ? q : be.upload(c.v);
  const fc1 = be.upload(p.fc1), fc2 = be.upload(p.fc2), scores = be.alloc(c.n * p.outDim);
  runLocretScores(be, { n: c.n, qd: c.qd, kvd: c.kvd, hidden: p.hidden, outDim: p.outDim, fc1, fc2, scores,
    q: { tensor: q, stride: c.rows.q[0], offset: c.rows.q[1] }, k: { tensor: k, stride: c.rows.k[0], offset: c.rows.k[1] },
    v: { tensor: v, stride: c.rows.v[0], offset: c.rows.v[1] } });
  const out = await be.read(scores);
  for (const t of new Set([q, k, v, fc1, fc2, scores])) be.free(t);
  return out;
}

for (const b of BACKENDS) {
  const register = b.gpu ? gpuTest : test;
  register(`locret_score through run on ${b.name} equals the direct call, bit for bit`, async () => {
    const be = await b.make();
    try {
      for (const [ci, c] of CASES.entries()) {
        const dims = { numHeads: c.heads, numKvHeads: c.kvHeads, headDim: c.headDim };
        const heads = initRetainingHeads(retainingHeadShape({ ...dims, hiddenSize: 4 * c.hidden }, c.hidden), 1, 70 + ci);
        const r = new Random(ci);
        for (const n of c.tokens) {
          for (const l of layouts(r, n, c.heads * c.headDim, c.kvHeads * c.headDim)) {
            const want = b.gpu ? await directGpu(heads, l) : await directCpu(heads, dims, l);
            const got = await viaRun(be, heads, l);
            assert.is(got.length, n * c.kvHeads);
            assert.ok(want.some((x) => x !== 0), 'the direct call scored something');
            assert.equal(differences(got, want), [], `case ${ci}, n ${n}, ${l.label}`);
          }
        }
      }
    } finally { be.destroy(); }
  });

  register(`add through run on ${b.name} is exact f32 addition, aliased operands too; bad calls are refused by name`, async () => {
    const be = await b.make();
    try {
      const r = new Random(5);
      const x = uniform(r, 1031, 10), y = uniform(r, 1031, 10);
      const xt = be.upload(x), yt = be.upload(y);
      be.add(xt, yt, 1030); // the last element stays
      const want = x.map((a, i) => (i < 1030 ? Math.fround(a + y[i]) : a));
      assert.equal(differences(await be.read(xt), want), []);
      be.run(ADD_KERNEL, [yt, yt], { n: 1031 }); // y += y reads y from a copy on the GPU
      assert.equal(differences(await be.read(yt), y.map((a) => Math.fround(2 * a))), []);
      be.run(ADD_KERNEL, [xt, yt], { n: 0 });

      const small = be.alloc(4);
      assert.throws(() => be.run(ADD_KERNEL, [xt], { n: 4 }), /run add: takes 2 tensors \(x, y\), got 1/);
      assert.throws(() => be.run(ADD_KERNEL, [xt, yt], {}), /run add: scalar 'n' is missing/);
      assert.throws(() => be.run(ADD_KERNEL, [xt, yt], { n: 4, m: 1 }), /run add: unknown scalar 'm' \(takes n\)/);
      assert.throws(() => be.run(ADD_KERNEL, [xt, yt], { n: 2.5 }), /run add: scalar 'n' must be a non-negative 32-bit integer \(got 2.5\)/);
      assert.throws(() => be.add(small, yt, 5), /run add: tensor 'x' needs n = 5 elements, it has 4/);
      const p = initRetainingHeads(retainingHeadShape({ numHeads: 2, numKvHeads: 1, headDim: 4, hiddenSize: 32 }, 8), 1, 1).layers[0];
      const fc1 = be.upload(p.fc1), fc2 = be.upload(p.fc2), rows = be.alloc(64), scores = be.alloc(4);
      const base = { n: 4, qd: 8, kvd: 4, hidden: 8, outDim: 1, fc1, fc2, scores,
        q: { tensor: rows, stride: 16 }, k: { tensor: rows, stride: 16, offset: 8 }, v: { tensor: rows, stride: 16, offset: 12 } };
      runLocretScores(be, base); // v fits exactly: 12 + 3·16 + 4 = 64
      assert.throws(() => runLocretScores(be, { ...base, v: { tensor: rows, stride: 16, offset: 13 } }), /run locret_score: tensor 'v' needs vOffset \+ \(n - 1\) \* vStride \+ kvd = 65 elements, it has 64/);
      assert.throws(() => runLocretScores(be, { ...base, n: 5, q: { tensor: rows, stride: 8 }, k: { tensor: rows, stride: 4 }, v: { tensor: rows, stride: 4 } }), /tensor 'scores' needs n \* outDim = 5 elements, it has 4/);
      assert.throws(() => runLocretScores(be, { ...base, k: { tensor: rows, stride: 3 } }), /locret scores: k row stride 3 must be an integer ≥ 4/);
      assert.throws(() => runLocretScores(be, { ...base, hidden: 1025 }), /hidden 1025 must be an integer in \[1, 1024\]/);
      assert.throws(() => be.run(LOCRET_SCORE_KERNEL, [rows, rows, rows, fc1, fc2], {}), /run locret_score: takes 6 tensors \(q, k, v, fc1, fc2, scores\), got 5/);
      // A backend without the kernel's side, export, shader or entry says which.
      const missing: KernelDef[] = b.gpu
        ? [{ ...ADD_KERNEL, gpu: undefined }, { ...ADD_KERNEL, gpu: { ...ADD_KERNEL.gpu!, shader: 'no_such_shader' } }, { ...ADD_KERNEL, gpu: { ...ADD_KERNEL.gpu!, entry: 'no_such_entry' } }]
        : [{ ...ADD_KERNEL, cpu: undefined }, { ...ADD_KERNEL, cpu: { ...ADD_KERNEL.cpu!, export: 'noSuchExport' } }];
      const messages = b.gpu
        ? [/run add: the kernel has no GPU \(WGSL\) implementation/, /unknown WGSL shader 'no_such_shader' \(no wgsl\/no_such_shader\.wgsl\)/, /WGSL shader 'elementwise' has no entry point 'no_such_entry'/]
        : [/run add: the kernel has no CPU \(WASM\) implementation/, /run add: the CPU kernel module has no export 'noSuchExport'/];
      for (const [i, def] of missing.entries()) {
        if (b.name === 'cpu worker') {
          // Checked in the worker: the failure comes back with the next read, naming the kernel (and poisons the worker).
          const worker = await b.make();
          const t = worker.alloc(4);
          worker.run(def, [t, t], { n: 4 });
          const err = await worker.read(t).then(() => null, (e: Error) => e);
          worker.destroy();
          assert.match(err?.message ?? '', /CPU worker: add failed: /);
          assert.match(err?.message ?? '', messages[i]);
        } else {
          assert.throws(() => be.run(def, [xt, yt], { n: 4 }), messages[i]);
        }
      }
    } finally { be.destroy(); }
  });
}

test('the worker forwards every named kernel in one message kind, and a tensor of another backend is refused', async () => {
  const { worker, ops } = channelWorker();
  const remote = await WorkerCpuBackend.start(worker);
  const local = await createCpuBackend();
  try {
    const a = remote.upload(Float32Array.of(1, 2, 3)), b = remote.upload(Float32Array.of(10, 20, 30));
    remote.add(a, b, 3);
    remote.run(ADD_KERNEL, [a, b], { n: 2 });
    assert.equal(Array.from(await remote.read(a)), [21, 42, 33]);
    assert.is(ops.get('run'), 2);
    assert.is(ops.get('call'), undefined);
    assert.throws(() => remote.run(ADD_KERNEL, [a, local.alloc(3)], { n: 3 }), /run add y: not a CPU-worker tensor/);
    assert.throws(() => local.run(ADD_KERNEL, [local.alloc(3), a], { n: 3 }), /run add y: not a CPU tensor/);
  } finally { remote.destroy(); local.destroy(); }
});

gpuTest('a locret chunk on the GPU reads back only its scores: one host wait of rows × kvHeads floats', async () => {
  const be = new GpuBackend(gpu.gpu!);
  const shape = { numKvHeads: 2, group: 3, headDim: 12, layer: 0 }, rows = 5;
  const cache = locretMethod.create(be, shape, 16, { kvDtype: 'f32', window: { sink: 1, recent: 4 }, compensation: false,
    locret: { budget: 4, stabilizers: 1, heads: seededLocretHeads(3) } });
  const r = new Random(2);
  const q = be.upload(uniform(r, rows * 72, 1)), k = be.upload(uniform(r, rows * 24, 1)), v = be.upload(uniform(r, rows * 24, 1));
  const out = be.alloc(rows * 72);
  cache.attend(out, q, k, v, rows, 0);
  be.flush();
  const before = gpu.gpu!.snapshot(), scored = gpu.gpu!.kernelDispatches.get('locret_score:main') ?? 0;
  await cache.append(k, v, rows, 0, q);
  const d = counterDelta(gpu.gpu!.snapshot(), before);
  // Before kernels by name: three host waits, reading all of q, k and v (rows × (72 + 24 + 24) floats).
  assert.is(d.hostWaits, 1);
  assert.is(d.readbackBytes, rows * 2 * 4);
  assert.is(gpu.gpu!.kernelDispatches.get('locret_score:main'), scored + 1);
  cache.free();
  for (const t of [q, k, v, out]) be.free(t);
});

test('size expressions: precedence, parentheses, unary minus; a bad one names the kernel', () => {
  assert.is(evalSize('qOffset + (n - 1) * qStride + qd', { qOffset: 3, n: 4, qStride: 10, qd: 8 }, 'x'), 41);
  assert.is(evalSize('2 * 3 + 4 * (5 - -1)', {}, 'x'), 30);
  assert.throws(() => evalSize('n * m', { n: 1 }, 'run k'), /run k: size expression 'n \* m' names 'm', which is not a scalar of the call/);
  assert.throws(() => evalSize('(n', { n: 1 }, 'run k'), /misses a \)/);
  assert.throws(() => evalSize('n / 2', { n: 1 }, 'run k'), /has an unexpected '\/'/);
  const def: KernelDef = { ...ADD_KERNEL, floats: ['scale'], scalars: ['n', 'scale'] };
  checkKernelCall(def, [{ length: 2 }, { length: 2 }], { n: 2, scale: -0.5 });
  assert.throws(() => checkKernelCall(def, [{ length: 2 }, { length: 2 }], { n: 2, scale: Infinity }), /scalar 'scale' must be a finite number/);
});

test.run();
