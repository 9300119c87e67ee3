// Locret's WGSL scoring kernel (src/kv/locret/locret_score.wgsl via src/kv/locret/gpu.ts) against the
// TypeScript reference forward in float64, on odd shapes (head_dim 5 with GQA 6/3, one query head
// of head_dim 1, hidden above the 64-thread workgroup, the bundled model's shape), q/k/v rows read
// in place from separate padded buffers at offsets, and the bad inputs the host refuses. (A dispatch
// folded into two dimensions, past 65,535 tokens, uses gpu.fold like every kernel; running one here
// would take about a minute on the software GPU.) And the label forward on the GPU training model
// against the CPU one. Without an adapter the suite is skipped, except
// in CI where a missing GPU is a failure.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createNodeGpu } from '../src/node/gpu.ts';
import { gpuTests } from './helpers/gpu-skip.ts';
import { LOCRET_GPU_MAX_HIDDEN, locretScoresOnGpu, recordLocretScores } from '../src/kv/locret/gpu.ts';
import { initRetainingHeads, retainingForward, retainingHeadShape, type RetainingHeadParams } from '../src/kv/locret/retaining-heads.ts';
import { Random } from '../src/tasks/random.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { frozenGpuModel, frozenModel } from '../src/identify/frozen.ts';
import { locretExample } from '../src/kv/locret/labels.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { writeCheckpoint } from './helpers/checkpoint.ts';
import { main } from '../src/cli/main.ts';
import { loadLocretHeads } from '../src/kv/locret/file.ts';

const { gpu, reason } = await createNodeGpu();
const gpuTest = gpuTests(test, gpu !== null, reason);

function uniform(r: Random, n: number, scale: number): Float32Array {
  return Float32Array.from({ length: n }, () => (2 * r.next() - 1) * scale);
}

function reference(p: RetainingHeadParams, x: Float32Array, n: number): Float64Array {
  return retainingForward({ ...p, fc1: Float64Array.from(p.fc1), fc2: Float64Array.from(p.fc2) }, Float64Array.from(x), n).scores;
}

/** Largest |got − want| in units of the tolerance 5e-5 · (1 + |want|) (f32 sums and WGSL exp against float64). */
function worst(got: Float32Array, want: Float64Array): number {
  let w = 0;
  want.forEach((v, i) => { w = Math.max(w, Math.abs(got[i] - v) / (5e-5 * (1 + Math.abs(v)))); });
  return w;
}

const CASES = [
  { heads: 6, kvHeads: 3, headDim: 5, hidden: 7, tokens: [1, 3, 65] },
  { heads: 1, kvHeads: 1, headDim: 1, hidden: 1, tokens: [2] },
  { heads: 4, kvHeads: 4, headDim: 16, hidden: 16, tokens: [130] },
  { heads: 8, kvHeads: 2, headDim: 3, hidden: 131, tokens: [9] },
];

gpuTest('WGSL scores match the float64 reference forward on odd shapes (concatenated rows)', async () => {
  if (!gpu) return;
  for (const [ci, c] of CASES.entries()) {
    const shape = retainingHeadShape({ numHeads: c.heads, numKvHeads: c.kvHeads, headDim: c.headDim, hiddenSize: 4 * c.hidden }, c.hidden);
    const [head] = initRetainingHeads(shape, 1, 50 + ci).layers;
    const r = new Random(ci);
    for (const n of c.tokens) {
      const x = uniform(r, n * shape.inDim, 3);
      const got = await locretScoresOnGpu(gpu, head, x, n, c.heads * c.headDim, c.kvHeads * c.headDim);
      assert.is(got.length, n * shape.outDim);
      const w = worst(got, reference(head, x, n));
      assert.ok(w <= 1, `case ${ci}, n ${n}: off by ${w.toFixed(2)}× the tolerance`);
    }
  }
});

gpuTest('WGSL scores read q, k, v in place from separate padded buffers at offsets', async () => {
  if (!gpu) return;
  for (const { heads, kvHeads, headDim, hidden, n } of [{ heads: 6, kvHeads: 3, headDim: 5, hidden: 7, n: 37 }, { heads: 1, kvHeads: 1, headDim: 1, hidden: 70, n: 3 }]) {
    const qd = heads * headDim, kvd = kvHeads * headDim;
    const shape = retainingHeadShape({ numHeads: heads, numKvHeads: kvHeads, headDim, hiddenSize: 4 * hidden }, hidden);
    const [head] = initRetainingHeads(shape, 1, 7).layers;
    const r = new Random(n);
    const layout = { q: { stride: qd + 3, offset: 5 }, k: { stride: kvd + 1, offset: 2 }, v: { stride: 2 * kvd, offset: 0 } };
    const q = uniform(r, layout.q.offset + n * layout.q.stride, 3), k = uniform(r, layout.k.offset + n * layout.k.stride, 3), v = uniform(r, n * layout.v.stride, 3);
    const x = new Float32Array(n * shape.inDim);
    for (let t = 0; t < n; t++) {
      x.set(q.subarray(layout.q.offset + t * layout.q.stride, layout.q.offset + t * layout.q.stride + qd), t * shape.inDim);
      x.set(k.subarray(layout.k.offset + t * layout.k.stride, layout.k.offset + t * layout.k.stride + kvd), t * shape.inDim + qd);
      x.set(v.subarray(t * layout.v.stride, t * layout.v.stride + kvd), t * shape.inDim + qd + kvd);
    }
    const up = (a: Float32Array, label: string) => gpu.bufferWith(a, GPUBufferUsage.STORAGE, label);
    const bufs = { q: up(q, 'q'), k: up(k, 'k'), v: up(v, 'v'), fc1: up(head.fc1, 'fc1'), fc2: up(head.fc2, 'fc2') };
    const out = gpu.createBuffer(n * shape.outDim * 4, 'scores');
    try {
      recordLocretScores(gpu, {
        n, qd, kvd, hidden, outDim: shape.outDim, fc1: bufs.fc1, fc2: bufs.fc2, scores: out,
        q: { buffer: bufs.q, ...layout.q }, k: { buffer: bufs.k, ...layout.k }, v: { buffer: bufs.v, ...layout.v },
      });
      const got = new Float32Array(await gpu.readBuffer(out, 0, n * shape.outDim * 4));
      const w = worst(got, reference(head, x, n));
      assert.ok(w <= 1, `n ${n}: off by ${w.toFixed(2)}× the tolerance`);
    } finally {
      for (const b of Object.values(bufs)) gpu.release(b);
      gpu.release(out);
    }
  }
});

gpuTest('the GPU host refuses shapes and buffers that do not fit, naming the limit', async () => {
  if (!gpu) return;
  const shape = retainingHeadShape({ numHeads: 2, numKvHeads: 1, headDim: 4, hiddenSize: 32 }, 8);
  const [head] = initRetainingHeads(shape, 1, 1).layers;
  const rows = gpu.bufferWith(new Float32Array(64), GPUBufferUsage.STORAGE, 'rows');
  const w = gpu.bufferWith(new Float32Array(128), GPUBufferUsage.STORAGE, 'weights');
  const out = gpu.createBuffer(16, 'scores');
  try {
    const base = {
      n: 4, qd: 8, kvd: 4, hidden: 8, outDim: 1, fc1: w, fc2: w, scores: out,
      q: { buffer: rows, stride: 16 }, k: { buffer: rows, stride: 16, offset: 8 }, v: { buffer: rows, stride: 16, offset: 12 },
    };
    recordLocretScores(gpu, base); // v fits exactly: 12 + 3·16 + 4 = 64 floats
    assert.throws(() => recordLocretScores(gpu, { ...base, hidden: LOCRET_GPU_MAX_HIDDEN + 1 }), /hidden 1025 must be an integer in \[1, 1024\]/);
    assert.throws(() => recordLocretScores(gpu, { ...base, v: { buffer: rows, stride: 16, offset: 13 } }), /v buffer of 256 bytes is too small for 4 rows \(260 bytes\)/);
    assert.throws(() => recordLocretScores(gpu, { ...base, k: { buffer: rows, stride: 3 } }), /k row stride 3 must be an integer ≥ 4/);
    assert.throws(() => recordLocretScores(gpu, { ...base, n: 2.5 }), /token count n must be a non-negative integer/);
    assert.throws(() => recordLocretScores(gpu, { ...base, hidden: 9 }), /fc1 buffer of 512 bytes is smaller than hidden × inDim floats \(576 bytes\)/);
    assert.throws(() => recordLocretScores(gpu, { ...base, q: { buffer: rows, stride: 0 } }), /q row stride 0 must be an integer ≥ 8/);
    assert.throws(() => recordLocretScores(gpu, { ...base, n: 5, q: { buffer: w, stride: 8 }, k: { buffer: w, stride: 4 }, v: { buffer: w, stride: 4 } }), /scores buffer of 16 bytes is smaller than n × outDim floats \(20 bytes\)/);
    const bad = await locretScoresOnGpu(gpu, head, new Float32Array(10), 1, 8, 4).then(() => null, (e: Error) => e);
    assert.match(bad?.message ?? '', /x has 10 values, expected n × inDim = 1 × 16/);
  } finally {
    gpu.release(rows);
    gpu.release(w);
    gpu.release(out);
  }
});

gpuTest('labels and pre-RoPE q/k/v from the GPU training model equal the CPU one\'s (GQA 6/2, qwen2 biases)', async () => {
  if (!gpu) return;
  const dir = mkdtempSync(join(tmpdir(), 'duet-gpu-locret-'));
  try {
    await writeCheckpoint(dir, { modelType: 'qwen2', hidden: 18, intermediate: 26, layers: 2, heads: 6, kvHeads: 2, headDim: 6, vocab: 37, seed: 11, scale: 1.2 });
    const { config, weights } = await loadCheckpoint(nodeModelFiles(dir));
    const r = new Random(5);
    const ids = Int32Array.from({ length: 45 }, () => r.int(0, 37));
    const onCpu = await locretExample(await frozenModel(config, weights, 48), ids, 33);
    const onGpu = await locretExample(frozenGpuModel(gpu, config, weights, 48), ids, 33);
    onCpu.layers.forEach((c, l) => {
      // f32 on both devices, different summation orders: 1e-4 · (1 + |x|) for the inputs, 1e-5 for probabilities.
      let wx = 0;
      c.x.forEach((v, i) => { wx = Math.max(wx, Math.abs(onGpu.layers[l].x[i] - v) / (1e-4 * (1 + Math.abs(v)))); });
      assert.ok(wx <= 1, `layer ${l}: q/k/v off by ${wx.toFixed(2)}× the tolerance`);
      const dl = c.labels.reduce((m, v, i) => Math.max(m, Math.abs(onGpu.layers[l].labels[i] - v)), 0);
      assert.ok(dl <= 1e-5, `layer ${l}: labels differ by ${dl}`);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

gpuTest('`duet locret train --device gpu` labels on the GPU and records it', async () => {
  if (!gpu) return;
  const dir = mkdtempSync(join(tmpdir(), 'duet-gpu-locret-cli-'));
  const stderr = process.stderr.write;
  try {
    await writeCheckpoint(dir, { hidden: 24, intermediate: 40, layers: 2, heads: 6, kvHeads: 2, headDim: 4, vocab: 280, tokenizer: true, seed: 3, scale: 1 });
    process.stderr.write = (() => true) as typeof process.stderr.write;
    assert.is(await main(['locret', 'train', '--model', dir, '--steps', '2', '--seq-len', '300', '--tasks', 'passkey', '--eval-samples', '1', '--device', 'gpu']), 0);
    process.stderr.write = stderr;
    const files = nodeModelFiles(dir);
    const loaded = await loadLocretHeads(files, (await loadCheckpoint(files)).config);
    assert.is(loaded.training.device, 'gpu');
    assert.is(loaded.training.steps, 2);
  } finally {
    process.stderr.write = stderr;
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
