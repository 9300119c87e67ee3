// Weights larger than the device's buffer limits (maxBufferSize / maxStorageBufferBindingSize) are
// split by rows over several buffers: matmul runs one dispatch per part, embed copies rows from
// the part that holds them. A software GPU has generous limits, so the test forces small ones
// (GpuContextOptions.maxBufferBytes) and compares with the unsplit run on the ordinary device.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createNodeGpu } from '../src/node/gpu.ts';
import { GpuBackend } from '../src/gpu/backend.ts';
import { GpuRowParts, GpuSplitTensor } from '../src/gpu/tensor.ts';
import { Engine } from '../src/engine/engine.ts';
import { assertClose } from './helpers/conformance.ts';
import * as ref from './reference/kernels.ts';
import { makeEngine, sharedGpu, tempCheckpoint } from './helpers/engine.ts';
import { gpuTests } from './helpers/gpu-skip.ts';

const LIMIT = 32 * 1024;
const { gpu, reason } = await sharedGpu();
const small = gpu ? (await createNodeGpu({ maxBufferBytes: LIMIT })).gpu : null;
if (small) { const destroy = small.destroy.bind(small); small.destroy = () => {}; process.on('exit', destroy); }
const test = suite(`weights over a ${LIMIT}-byte buffer limit`);
const gpuTest = gpuTests(test, small !== null, reason);

gpuTest('matmul (GEMV and GEMM, bias, accumulate) and embed through a weight split by rows', async () => {
  const be = new GpuBackend(small!);
  const rows = 301, cols = 72; // 86,688 bytes: 3 parts of ≤ 113 rows
  const w = ref.randomArray(rows * cols, 3, 0.2), b = ref.randomArray(rows, 4);
  const wt = be.uploadWeight({ dtype: 'f32', rows, cols, data: w });
  assert.ok(wt instanceof GpuRowParts);
  assert.equal((wt as GpuRowParts).parts.map((p) => p.rows), [113, 113, 75]);
  for (const n of [1, 19]) {
    const x = ref.randomArray(n * cols, 10 + n);
    const out = be.alloc(n * rows);
    be.matmul(out, be.upload(x), wt, be.upload(b), n, cols, rows);
    const want = ref.matmul(x, w, b, n, cols, rows);
    assertClose(await be.read(out), want, `split matmul rows ${n}`, 5e-4);
    be.matmul(out, be.upload(x), wt, null, n, cols, rows, true);
    const twice = ref.matmul(x, w, null, n, cols, rows).map((v, i) => v + want[i]);
    assertClose(await be.read(out), Float64Array.from(twice), `split matmul rows ${n}, accumulated`, 5e-4);
  }
  const ids = Int32Array.from([0, 112, 113, 226, 300, 5]);
  const e = be.alloc(ids.length * cols);
  be.embed(e, wt, ids, cols);
  const got = await be.read(e);
  ids.forEach((id, r) => assert.equal(Array.from(got.subarray(r * cols, (r + 1) * cols)), Array.from(w.subarray(id * cols, (id + 1) * cols)), `embed row ${id}`));
  assert.throws(() => be.add(wt, e, 4), /split over 3 buffers.*only matmul and embed/);
  assert.throws(() => be.uploadWeight({ dtype: 'f32', rows: 2, cols: LIMIT, data: new Float32Array(2 * LIMIT) }), /one row of 32768 f32 \(131072 bytes\) exceeds the device's storage-buffer limit of 32768 bytes/);
  // A tensor over the limit is split too (test/gpu-kv-split.test.ts), and only the cache ops take it.
  const big = be.alloc(LIMIT);
  assert.ok(big instanceof GpuSplitTensor && big.parts.length === 4);
  assert.throws(() => be.add(big, e, 4), /add x: a tensor of 131072 bytes split over 4 buffers/);
  be.free(big);
});

gpuTest('a model whose tied LM head exceeds the limit decodes as on the unlimited device', async () => {
  const ck = await tempCheckpoint({ hidden: 72, intermediate: 100, heads: 4, kvHeads: 2, vocab: 301, tieEmbeddings: true, layers: 2, seed: 12 });
  const kinds = [[true, false], [false, true]], window = { sink: 2, recent: 3 };
  const split = await Engine.create(ck.config, ck.weights, { device: 'gpu', placement: 'gpu', kinds, window, acquireGpu: async () => ({ gpu: small, reason: '' }) });
  const whole = await makeEngine(ck, 'gpu', kinds, window);
  try {
    assert.ok(split.model.lmHead instanceof GpuRowParts);
    assert.not.ok(whole.model.lmHead instanceof GpuRowParts);
    const a = split.newSession(32, 8), b = whole.newSession(32, 8);
    const prompt = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3];
    assert.equal(Array.from(await a.forward(prompt)), Array.from(await b.forward(prompt)), 'prefill logits');
    for (const id of [7, 300, 0, 113]) assert.equal(Array.from(await a.forward([id])), Array.from(await b.forward([id])), `decode logits after ${id}`);
    a.dispose(); b.dispose();
    const ga = await split.generate(prompt, { maxTokens: 6, temperature: 0.9, topK: 50, seed: 4 });
    const gb = await whole.generate(prompt, { maxTokens: 6, temperature: 0.9, topK: 50, seed: 4 });
    assert.equal(ga.tokens, gb.tokens);
  } finally { split.dispose(); whole.dispose(); }
});

test.run();
