// The WASM packed-weight matmul (assembly/matmul_packed.ts) against "dequantize, then a float64
// reference", for f16, Q8_0, Q4_0 and Q4_K, on one thread and split across 3 worker threads: GEMV and
// GEMM row counts, rows not a multiple of 4/8, partial blocks, a GQA K projection, an LM head, bias and
// accumulate. Tolerance: 2e-6 · Σ|x·w| + 1e-6 per output (f32 accumulation in a different order; the
// weights are exactly the dequantized values, so the format adds no error here). The Q8_0/Q4_0 GEMV
// (one row) quantizes x to int16 per block of 32 first, so its reference uses the same int16 x
// (quantizeX16 below); against the exact x it is also held to the int16 rounding bound
// Σ|w|·scale/2. Also: tied embeddings read from a packed table, and a whole forward pass at each
// storage against the f32 engine.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createCpuBackend, type CpuBackend } from '../src/cpu/backend.ts';
import { startNodeKernelWorker } from '../src/node/kernel-threads.ts';
import { Engine } from '../src/engine/engine.ts';
import type { ModelWeights } from '../src/model/weights.ts';
import { tempCheckpoint } from './helpers/engine.ts';
import { CPU_F32_WEIGHT_LIMIT, defaultWeightDType, matmulWeightBytes } from '../src/engine/device-model.ts';
import { parseModelConfig } from '../src/model/config.ts';
import { shapeSpec } from '../src/bench/shapes.ts';
import { loaderWeights } from '../src/api/model.ts';
import type { ModelFiles } from '../src/model/files.ts';
import { dequantizeMatrix, dequantizeRow, quantizeMatrix, type WeightDType } from '../src/model/quant.ts';
import { matrixF32, type WeightMatrix } from '../src/model/weights.ts';

function noise(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; out[i] = s / 2 ** 31 - 1; }
  return out;
}

/**
 * x as the Q8_0/Q4_0 GEMV sees it: per block of 32 (the last zero-padded), scale = maxabs/32767 in f32
 * (0 for an all-zero block), code = x · f32(32767/maxabs) in f32 rounded to nearest, ties to even
 * (f32x4.nearest), saturated to int16. Returns code·scale per element and each element's scale.
 */
function quantizeX16(x: Float32Array): { values: Float64Array; scales: Float64Array } {
  const values = new Float64Array(x.length), scales = new Float64Array(x.length);
  for (let b = 0; b < x.length; b += 32) {
    const end = Math.min(x.length, b + 32);
    let m = 0;
    for (let i = b; i < end; i++) m = Math.max(m, Math.abs(x[i]));
    const scale = Math.fround(m / 32767), inv = m > 0 ? Math.fround(32767 / m) : 0;
    for (let i = b; i < end; i++) {
      const v = Math.fround(x[i] * inv);
      let q = Math.round(v);
      if (q - v === 0.5 && q % 2 !== 0) q -= 1; // a tie rounds to even
      values[i] = Math.max(-32768, Math.min(32767, q)) * scale;
      scales[i] = scale;
    }
  }
  return { values, scales };
}

/** Whether the matmul of `rows` rows against `dtype` runs on int16-quantized x (the Q8_0/Q4_0 GEMV). */
const int16X = (dtype: WeightDType, rows: number) => rows === 1 && (dtype === 'q8_0' || dtype === 'q4_0');

const DTYPES: WeightDType[] = ['f16', 'q8_0', 'q4_0', 'q4_k'];
// [rows, inDim, outDim, label]
const SHAPES: Array<[number, number, number, string]> = [
  [1, 96, 7, 'GEMV, outDim not a multiple of 4'],
  [1, 257, 13, 'GEMV, partial last block'],
  [1, 512, 5, 'GEMV, whole Q4_K super-blocks (x read in place)'],
  [1, 13, 3, 'GEMV, fewer columns than one f16 vector step'],
  [3, 64, 16, 'GQA K projection (2 KV heads × 8), 3 rows'],
  [9, 512, 11, 'GEMM, 9 rows (not a multiple of 4 or 8)'],
  [20, 200, 9, 'GEMM, partial blocks'],
  [1, 64, 1000, 'LM head'],
];

let threaded: CpuBackend | null = null;
const backends: Array<[string, () => Promise<CpuBackend>]> = [
  ['1 thread', () => createCpuBackend()],
  ['3 threads', async () => (threaded = await createCpuBackend({ threads: 3, startWorker: startNodeKernelWorker, minParallelWork: 0 }))],
];

for (const [name, make] of backends) {
  test(`packed matmul matches dequantize + float64 reference (${name})`, async () => {
    const cpu = await make();
    try {
      let seed = 1;
      for (const dtype of DTYPES) {
        for (const [rows, inDim, outDim, label] of SHAPES) {
          for (const [withBias, accumulate] of [[false, false], [true, true]]) {
            const wq = quantizeMatrix(dtype, noise(outDim * inDim, seed++), outDim, inDim);
            const wf = dequantizeMatrix(wq);
            const x = noise(rows * inDim, seed++), bias = noise(outDim, seed++), prior = noise(rows * outDim, seed++);
            const w = cpu.uploadWeight(wq), xt = cpu.upload(x), bt = withBias ? cpu.upload(bias) : null;
            const out = cpu.upload(prior);
            cpu.matmul(out, xt, w, bt, rows, inDim, outDim, accumulate);
            const got = await cpu.read(out);
            const xr = int16X(dtype, rows) ? quantizeX16(x).values : x;
            for (let r = 0; r < rows; r++) {
              for (let o = 0; o < outDim; o++) {
                let ref = (accumulate ? prior[r * outDim + o] : 0) + (withBias ? bias[o] : 0), mag = Math.abs(ref);
                for (let i = 0; i < inDim; i++) { const p = xr[r * inDim + i] * wf[o * inDim + i]; ref += p; mag += Math.abs(p); }
                const err = Math.abs(got[r * outDim + o] - ref);
                if (!(err <= 2e-6 * mag + 1e-6)) assert.unreachable(`${dtype} ${label} [${rows}x${inDim}→${outDim}] bias=${withBias} acc=${accumulate} at [${r},${o}]: ${got[r * outDim + o]} vs ${ref}`);
              }
            }
            for (const t of [w, xt, out, ...(bt ? [bt] : [])]) cpu.free(t);
          }
        }
      }
    } finally { cpu.destroy(); }
  });
}

// The Q8_0/Q4_0 GEMV on int16 x: odd shapes and hard x, against the float64 reference on the same
// int16 x (2e-6 · Σ|x·w| + 1e-6) and on the exact x (that plus Σ|w|·scale/2, the rounding bound).
const GEMV_SHAPES: Array<[number, number, string]> = [
  [77, 5, 'inDim 77 (partial last block), outDim 5'],
  [31, 3, 'inDim 31 (one partial block)'],
  [1, 1, 'inDim 1, outDim 1'],
  [64, 16, 'GQA K projection (2 KV heads × 8)'],
  [96, 23, 'GQA-ish, outDim odd'],
  [200, 4099, 'LM-head-like wide outDim (odd)'],
];
const GEMV_X: Array<[string, (n: number, seed: number) => Float32Array]> = [
  ['noise', (n, seed) => noise(n, seed)],
  ['an all-zero block', (n, seed) => { const x = noise(n, seed); x.fill(0, 32, Math.min(n, 64)); return x; }],
  ['one huge outlier', (n, seed) => { const x = noise(n, seed); x[Math.min(n - 1, 40)] = 3e4; return x; }],
  ['all zero', (n) => new Float32Array(n)],
];

for (const [name, make] of backends) {
  test(`Q8_0/Q4_0 GEMV on int16 x: same-x reference and the int16 rounding bound (${name})`, async () => {
    const cpu = await make();
    try {
      let seed = 1000, outlierGap = 0;
      for (const dtype of ['q8_0', 'q4_0'] as WeightDType[]) {
        for (const [inDim, outDim, label] of GEMV_SHAPES) {
          for (const [xLabel, makeX] of GEMV_X) {
            const wq = quantizeMatrix(dtype, noise(outDim * inDim, seed++), outDim, inDim);
            const wf = dequantizeMatrix(wq);
            const x = makeX(inDim, seed++), { values: xq, scales } = quantizeX16(x);
            const w = cpu.uploadWeight(wq), xt = cpu.upload(x), out = cpu.alloc(outDim);
            cpu.matmul(out, xt, w, null, 1, inDim, outDim);
            const got = await cpu.read(out);
            for (let o = 0; o < outDim; o++) {
              let ref = 0, mag = 0, exact = 0, exactMag = 0, bound = 0;
              for (let i = 0; i < inDim; i++) {
                const wi = wf[o * inDim + i], p = xq[i] * wi, e = x[i] * wi;
                ref += p; mag += Math.abs(p); exact += e; exactMag += Math.abs(e); bound += Math.abs(wi) * scales[i] / 2;
              }
              const where = `${dtype} ${label} [${inDim}→${outDim}], x ${xLabel}, at ${o}`;
              const err = Math.abs(got[o] - ref), errExact = Math.abs(got[o] - exact);
              if (!(err <= 2e-6 * mag + 1e-6)) assert.unreachable(`${where}: ${got[o]} vs same-x reference ${ref}`);
              if (!(errExact <= bound + 2e-6 * exactMag + 1e-6)) assert.unreachable(`${where}: ${got[o]} vs exact ${exact}, error ${errExact} > bound ${bound}`);
              if (xLabel === 'one huge outlier') outlierGap = Math.max(outlierGap, Math.abs(ref - exact) / (2e-6 * mag + 1e-6));
            }
            for (const t of [w, xt, out]) cpu.free(t);
          }
        }
      }
      // The outlier's block coarsens its neighbours' codes, far beyond the same-x tolerance: the
      // kernel's agreement with the int16 reference is not one the exact x would also pass.
      assert.ok(outlierGap > 100, `outlier: int16 vs exact reference differ by only ${outlierGap}× the tolerance`);
    } finally { cpu.destroy(); }
  });
}

test('the threaded run split packed matmuls across the workers', () => {
  assert.ok(threaded && threaded.workerShares > 0, `worker shares: ${threaded?.workerShares}`);
});

test('embed reads rows of a packed table; shape mismatches and reads of packed weights are errors', async () => {
  const cpu = await createCpuBackend();
  try {
    for (const dtype of DTYPES) {
      const table = quantizeMatrix(dtype, noise(50 * 40, 9), 50, 40);
      const t = cpu.uploadWeight(table);
      const out = cpu.alloc(3 * 40);
      cpu.embed(out, t, new Int32Array([7, 0, 49]), 40);
      const got = await cpu.read(out);
      const want = new Float32Array(3 * 40);
      [7, 0, 49].forEach((id, r) => dequantizeRow(table, id, want, r * 40));
      assert.equal([...got], [...want], dtype);
      assert.throws(() => cpu.embed(out, t, new Int32Array([50]), 40), /token id 50 is outside the vocabulary/);
      const x = cpu.alloc(40), y = cpu.alloc(50);
      assert.throws(() => cpu.matmul(y, x, t, null, 1, 40, 49), /packed .* weights are \[50, 40\], the call needs \[49, 40\]/);
      await cpu.read(t).then(() => assert.unreachable('read a packed tensor'), (e: Error) => assert.match(e.message, /holds packed/));
    }
  } finally { cpu.destroy(); }
});

// The engine on packed weights equals the f32 engine on the dequantized weights (same model, other kernels).
test('a forward pass on packed weights matches the f32 engine on the dequantized weights (tied LM head, odd dims)', async () => {
  const ckpt = await tempCheckpoint({ hidden: 72, intermediate: 100, heads: 4, kvHeads: 2, vocab: 301, tieEmbeddings: true, layers: 2 });
  const ids = [5, 17, 300, 2, 99, 41, 7, 7, 250, 1, 0, 63, 128];
  const run = async (engine: Engine) => {
    const session = engine.newSession(32, 16);
    try { return [await session.forward(ids), await session.forward([11]), await session.forward([12])]; } finally { session.dispose(); engine.dispose(); }
  };
  for (const dtype of DTYPES) {
    const packedEngine = await Engine.create(ckpt.config, ckpt.weights, { device: 'cpu', placement: 'cpu', weights: dtype });
    assert.is(packedEngine.model.weightDType, dtype);
    const calls = packedEngine.cpu.kernelCalls;
    const packed = await run(packedEngine);
    assert.ok(packedEngine.cpu.kernelCalls > calls);
    const w = ckpt.weights;
    const dq = (m: WeightMatrix, rows: number) => { const a = matrixF32(m); return dequantizeMatrix(quantizeMatrix(dtype, a, rows, a.length / rows)); };
    const H = ckpt.config.hiddenSize;
    const lm = dq(w.lmHead, ckpt.config.vocabSize);
    const ref: ModelWeights = {
      embed: lm, lmHead: lm, finalNorm: w.finalNorm,
      layers: w.layers.map((l) => ({ ...l, wq: dq(l.wq, ckpt.config.numHeads * ckpt.config.headDim), wk: dq(l.wk, ckpt.config.numKvHeads * ckpt.config.headDim), wv: dq(l.wv, ckpt.config.numKvHeads * ckpt.config.headDim),
        wo: dq(l.wo, H), wGate: dq(l.wGate, ckpt.config.intermediateSize), wUp: dq(l.wUp, ckpt.config.intermediateSize), wDown: dq(l.wDown, H) })),
    };
    const want = await run(await Engine.create(ckpt.config, ref, { device: 'cpu', placement: 'cpu' }));
    want.forEach((logits, step) => {
      let peak = 0, err = 0;
      for (let i = 0; i < logits.length; i++) { peak = Math.max(peak, Math.abs(logits[i])); err = Math.max(err, Math.abs(logits[i] - packed[step][i])); }
      assert.ok(err <= 1e-4 * (1 + peak), `${dtype} step ${step}: max logit difference ${err} (peak ${peak})`);
    });
  }
});

test('default weight storage: f32 while it fits 2 GiB on the CPU, q8_0 beyond (Llama-3.2-1B), f32 on the GPU; a GGUF as stored', () => {
  const llama1b = parseModelConfig(shapeSpec('llama-3.2-1b').config);
  const small = parseModelConfig(shapeSpec('qwen2.5-0.5b').config);
  assert.ok(matmulWeightBytes(llama1b) > CPU_F32_WEIGHT_LIMIT && matmulWeightBytes(small) < CPU_F32_WEIGHT_LIMIT);
  assert.is(defaultWeightDType(llama1b, 'cpu'), 'q8_0');
  assert.is(defaultWeightDType(small, 'cpu'), 'f32');
  assert.is(defaultWeightDType(llama1b, 'gpu'), 'f32');
  // What loadModel asks the loader for: a GGUF keeps its tensors' types (a Q4_0 file is not turned
  // into q8_0 for being large); a safetensors checkpoint that big is packed to q8_0 on the CPU.
  const gguf = { gguf: 'model.gguf' } as unknown as ModelFiles, folder = {} as unknown as ModelFiles;
  assert.is(loaderWeights({ placement: 'cpu' }, gguf)(llama1b), 'keep');
  assert.is(loaderWeights({ placement: 'cpu' }, folder)(llama1b), 'q8_0');
  assert.is(loaderWeights({ placement: 'cpu', weights: 'q4_k' }, gguf)(llama1b), 'q4_k');
  assert.is(loaderWeights({ placement: 'gpu' }, folder)(llama1b), 'keep');
  assert.is(loaderWeights({ placement: 'cpu' }, folder)(small), 'keep');
});

test.run();
