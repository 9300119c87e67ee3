// The browser's CPU worker protocol (src/browser/worker-cpu.ts ↔ cpu-worker.ts) in Node: the page side
// and the worker side joined by a MessageChannel (structured clone and transfers as between a page and
// its Web Worker). Packed weights (f16, q8_0, q4_0, q4_k) cross as bytes and stay packed in the worker:
// matmul and embed give exactly what the CpuBackend gives on the same bytes (same kernels, one thread),
// misuse of a packed tensor fails with a clear error, and the browser entry's loadModel with
// `weights: 'q8_0'` and a CPU worker generates the same greedy text as Node's loadModel at q8_0.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createCpuBackend } from '../src/cpu/backend.ts';
import { WorkerCpuBackend } from '../src/browser/worker-cpu.ts';
import { channelWorker } from './helpers/channel-worker.ts';
import { loadModel as loadBrowserModel } from '../src/index.ts';
import { loadModel as loadNodeModel } from '../src/node.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { dequantizeRow, packedBytes, quantizeMatrix, type WeightDType } from '../src/model/quant.ts';

function noise(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; out[i] = s / 2 ** 31 - 1; }
  return out;
}

const DTYPES: WeightDType[] = ['f32', 'f16', 'q8_0', 'q4_0', 'q4_k'];
// [rows, inDim, outDim]: GEMV with a partial block and an odd outDim, and a GEMM over 5 rows.
const SHAPES: Array<[number, number, number]> = [[1, 257, 13], [5, 96, 7]];

test('packed weights in the worker: matmul and embed equal the CpuBackend on the same bytes', async () => {
  const { worker, ops } = channelWorker();
  const remote = await WorkerCpuBackend.start(worker);
  const local = await createCpuBackend();
  try {
    let seed = 1;
    for (const dtype of DTYPES) {
      for (const [rows, inDim, outDim] of SHAPES) {
        const m = quantizeMatrix(dtype, noise(outDim * inDim, seed++), outDim, inDim);
        const keep = m.data.slice();
        const x = noise(rows * inDim, seed++), bias = noise(outDim, seed++);
        const run = async (be: WorkerCpuBackend | typeof local) => {
          const w = be.uploadWeight(m), xt = be.upload(x), bt = be.upload(bias), out = be.alloc(rows * outDim);
          be.matmul(out, xt, w, bt, rows, inDim, outDim);
          // The matrix as an embedding table (tied embeddings read packed rows): rows 0, last, 0 again.
          const emb = be.alloc(3 * inDim);
          be.embed(emb, w, Int32Array.from([0, outDim - 1, 0]), inDim);
          return { y: await be.read(out), e: await be.read(emb) };
        };
        const want = await run(local), got = await run(remote);
        assert.equal(Array.from(got.y), Array.from(want.y), `${dtype} matmul [${rows}×${inDim}]·[${outDim}×${inDim}]ᵀ`);
        const row = new Float32Array(inDim);
        dequantizeRow(m, outDim - 1, row);
        assert.equal(Array.from(got.e.subarray(inDim, 2 * inDim)), Array.from(row), `${dtype} embed of a packed row`);
        assert.equal(Array.from(got.e), Array.from(want.e), `${dtype} embed`);
        // The caller's matrix is untouched (the worker got a transferred copy).
        assert.equal(m.data.length, keep.length);
        assert.ok(m.data.every((v, i) => v === keep[i]), `${dtype}: the uploaded matrix changed`);
      }
    }
    // Every packed matrix crossed as its own op (f32 ones as plain uploads), 2 shapes × 4 packed formats.
    assert.is(ops.get('uploadWeight'), 8);
  } finally {
    remote.destroy();
    local.destroy();
  }
});

test('packed weights in the worker: misuse fails clearly', async () => {
  const remote = await WorkerCpuBackend.start(channelWorker().worker);
  try {
    const m = quantizeMatrix('q8_0', noise(4 * 40, 9), 4, 40);
    assert.is(packedBytes(m), 4 * 2 * 34);
    const w = remote.uploadWeight(m);
    assert.is(w.length, 160);
    // Packed tensors hold no f32 values to read, write or copy (refused on the page side).
    try { await remote.read(w); assert.unreachable('read a packed tensor'); } catch (e) { assert.match((e as Error).message, /read: the tensor holds packed q8_0 weights/); }
    assert.throws(() => remote.write(w, new Float32Array(4)), /write: the tensor holds packed q8_0 weights/);
    assert.throws(() => remote.uploadWeight({ ...m, data: m.data.subarray(1) }), /q8_0 \[4, 40\] needs 272 bytes, got 271/);
    // A shape the packed matrix does not have fails in the worker; the error comes back with the next read.
    const x = remote.upload(new Float32Array(4 * 40)), out = remote.alloc(40 * 4);
    remote.matmul(out, x, w, null, 1, 4, 40);
    try { await remote.read(out); assert.unreachable('matmul with the wrong shape'); } catch (e) {
      assert.match((e as Error).message, /CPU worker: matmul failed: matmul: packed q8_0 weights are \[4, 40\], the call needs \[40, 4\]/);
    }
  } finally {
    remote.destroy();
  }
});

test("browser entry: loadModel({ weights: 'q8_0', cpuWorker }) generates what Node's CPU backend does at q8_0", async () => {
  const prompt = 'what is the pass key?';
  const started: ReturnType<typeof channelWorker>[] = [];
  const notices: string[] = [];
  const browser = await loadBrowserModel(nodeModelFiles('fixtures/duet-passkey'), {
    device: 'cpu', weights: 'q8_0', cpuWorker: () => { const c = channelWorker(); started.push(c); return c.worker; }, notice: (n) => notices.push(n),
  });
  const node = await loadNodeModel('fixtures/duet-passkey', { device: 'cpu', weights: 'q8_0', threads: 1 });
  try {
    assert.is(started.length, 1, 'the CPU worker was not started');
    assert.match(browser.info.cpu, /in a Web Worker/);
    assert.equal(notices, []);
    assert.is(browser.info.weights.dtype, 'q8_0');
    assert.is(browser.info.weights.bytes, node.info.weights.bytes);
    // Every matmul weight (7 per layer and the LM head; the embedding too when it is packed) crossed packed.
    assert.ok((started[0].ops.get('uploadWeight') ?? 0) >= 7 * browser.info.config.numLayers + 1, `${started[0].ops.get('uploadWeight')} packed uploads`);
    const b = await browser.generate(prompt, { maxTokens: 40 }).result();
    const n = await node.generate(prompt, { maxTokens: 40 }).result();
    assert.equal(b.tokens, n.tokens);
    assert.match(b.text, /pass key is \d+/);
    assert.ok(b.work.cpuKernelCalls > 0);
  } finally {
    await browser.dispose();
    await node.dispose();
  }
});

test.run();
