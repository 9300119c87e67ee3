// Full KV caches larger than the device's storage-buffer limit: alloc splits them into consecutive
// buffers (GpuSplitTensor), kvAppend writes each part it touches, attention runs one dispatch per
// part and merges the parts' partial softmax states in the flash-decoding combine pass. A software
// GPU has generous limits, so the test forces a small one (maxBufferBytes) with head sizes whose
// cache rows straddle the part boundaries, and compares with the same calls on an unlimited device:
// the cache words bit for bit (append and grow-by-copy are exact), attention within 1e-5 absolute
// (outputs are convex combinations of values in [-1, 1]; only the merge order of the partial sums
// differs), for f32, f16 and int8 caches, prefill chunks and decode steps, GQA.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createNodeGpu } from '../src/node/gpu.ts';
import { GpuBackend } from '../src/gpu/backend.ts';
import { GpuSplitTensor } from '../src/gpu/tensor.ts';
import { KV_DTYPES, kvRowWords } from '../src/backend/kv-dtype.ts';
import type { DeviceTensor } from '../src/backend/contract.ts';
import { Engine } from '../src/engine/engine.ts';
import * as ref from './reference/kernels.ts';
import { makeEngine, sharedGpu, tempCheckpoint } from './helpers/engine.ts';
import { gpuTests } from './helpers/gpu-skip.ts';

const LIMIT = 4096; // 1024 words per part
const { gpu, reason } = await sharedGpu();
const small = gpu ? (await createNodeGpu({ maxBufferBytes: LIMIT })).gpu : null;
if (small) { const destroy = small.destroy.bind(small); small.destroy = () => {}; process.on('exit', destroy); }
const test = suite(`full KV caches over a ${LIMIT}-byte buffer limit`);
const gpuTest = gpuTests(test, small !== null, reason);

const words = (t: Float32Array) => Array.from(new Uint32Array(t.buffer, t.byteOffset, t.length));

/** |got − want| ≤ tol · (1 + rel·|want|) element-wise. */
function close(got: ArrayLike<number>, want: ArrayLike<number>, what: string, tol = 1e-5, rel = 0): void {
  assert.is(got.length, want.length, `${what}: length`);
  for (let i = 0; i < got.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= tol * (1 + rel * Math.abs(want[i])))) assert.unreachable(`${what} at ${i}: ${got[i]} vs ${want[i]}`);
  }
}

gpuTest('kvAppend, attention and grow-by-copy on a split cache match the unsplit device (f32, f16, int8)', async () => {
  const split = new GpuBackend(small!), whole = new GpuBackend(gpu!);
  // Rows of 6 (f32), 3 (f16) and 3 (int8) words, parts of 1024 words: rows straddle part boundaries,
  // and KV head 1's positions cross one in every dtype. (The attention partials must fit the limit
  // too: 8 rows × 4 heads × 8 floats per part used.)
  const numHeads = 4, numKvHeads = 2, headDim = 6, capacity = 300, grown = 390, scale = 1 / Math.sqrt(headDim);
  let seed = 5;
  for (const dtype of KV_DTYPES) {
    const W = kvRowWords(headDim, dtype);
    const cacheWords = numKvHeads * capacity * W;
    const caches = [split, whole].map((be) => ({ be, k: be.alloc(cacheWords), v: be.alloc(cacheWords), out: be.alloc(8 * numHeads * headDim) }));
    const [s, w] = caches;
    assert.ok(s.k instanceof GpuSplitTensor && s.v instanceof GpuSplitTensor, `${dtype}: split`);
    assert.is((s.k as GpuSplitTensor).parts.length, Math.ceil(cacheWords / 1024), `${dtype}: parts`);
    assert.not.ok(w.k instanceof GpuSplitTensor);
    let pastLen = 0;
    // One chunk appended and attended on both caches at `cap`, the outputs compared.
    const step = async (rows: number, cap: number, what: string) => {
      const q = ref.randomArray(rows * numHeads * headDim, seed++), k = ref.randomArray(rows * numKvHeads * headDim, seed++), v = ref.randomArray(rows * numKvHeads * headDim, seed++);
      const outs: Float32Array[] = [];
      for (const c of caches) {
        c.be.kvAppend(c.k, c.v, c.be.upload(k), c.be.upload(v), rows, numKvHeads, headDim, cap, pastLen, dtype);
        c.be.attention(c.out, c.be.upload(q), c.k, c.v, { rows, numHeads, numKvHeads, headDim, pastLen, scale }, cap, dtype);
        outs.push(await c.be.read(c.out, 0, rows * numHeads * headDim));
      }
      close(outs[0], outs[1], `${dtype} ${what}, ${rows} rows at ${pastLen}`);
      pastLen += rows;
    };
    // Prefill chunks, decode steps, another chunk: attention after each append.
    for (const rows of [8, 8, 8, 8, 8, 8, 8, 1, 1, 1, 5]) await step(rows, capacity, 'attention');
    assert.equal(words(await split.read(s.k)), words(await whole.read(w.k)), `${dtype}: K cache words`);
    assert.equal(words(await split.read(s.v)), words(await whole.read(w.v)), `${dtype}: V cache words`);
    // Grow the capacity as a session does (a new cache, each head's rows copied), then keep decoding.
    for (const c of caches) {
      for (const which of ['k', 'v'] as const) {
        const old = c[which], t = c.be.alloc(numKvHeads * grown * W);
        for (let h = 0; h < numKvHeads; h++) c.be.copy(t, h * grown * W, old, h * capacity * W, pastLen * W);
        c.be.free(old);
        c[which] = t;
      }
    }
    for (const rows of [1, 8, 8]) await step(rows, grown, 'attention after growing');
    const grownK = await split.read(s.k);
    assert.equal(words(grownK), words(await whole.read(w.k)), `${dtype}: grown K cache words`);
    // write and read at an offset that crosses a part boundary.
    const patch = ref.randomArray(700, seed++);
    split.write(s.k, patch, 1000);
    assert.equal(Array.from(await split.read(s.k, 1000, 700)), Array.from(patch), `${dtype}: write/read across parts`);
    for (const c of caches) for (const t of [c.k, c.v, c.out] as DeviceTensor[]) c.be.free(t);
  }
});

gpuTest('a split tensor is refused by every op but the cache ops, with its size in the message', async () => {
  const be = new GpuBackend(small!);
  const t = be.alloc(3000), x = be.alloc(16);
  assert.ok(t instanceof GpuSplitTensor);
  assert.throws(() => be.add(t, x, 4), /add x: a tensor of 12000 bytes split over 3 buffers .*only kvAppend and attention/);
  assert.throws(() => be.rmsnorm(x, t, x, 1, 4, 1e-5), /rmsnorm x: a tensor of 12000 bytes split over 3 buffers/);
  const other = be.alloc(1500);
  assert.throws(() => be.attention(x, x, t, other, { rows: 1, numHeads: 1, numKvHeads: 1, headDim: 4, pastLen: 0, scale: 1 }, 10, 'f32'),
    /attention: the K and V caches are split differently \(3 and 2 buffers\)/);
  for (const u of [t, x, other]) be.free(u);
});

gpuTest('a model whose full KV cache exceeds the limit decodes as on the unlimited device', async () => {
  const ck = await tempCheckpoint({ hidden: 32, intermediate: 48, heads: 4, kvHeads: 2, headDim: 10, vocab: 61, layers: 2, seed: 21 });
  const kinds = [[true, false], [true, true]], window = { sink: 2, recent: 3 };
  const limited = await createNodeGpu({ maxBufferBytes: 8192 });
  const split = await Engine.create(ck.config, ck.weights, { device: 'gpu', placement: 'gpu', kinds, window, acquireGpu: async () => limited });
  const whole = await makeEngine(ck, 'gpu', kinds, window);
  try {
    // Layer 1: 2 KV heads × 160 positions × 10 f32 = 12,800 bytes per cache: 2 buffers of ≤ 8192 bytes.
    // Logits within 1e-4 · (1 + |logit|): the attention merge order differs, nothing else.
    const a = split.newSession(160, 8), b = whole.newSession(160, 8);
    const prompt = Array.from({ length: 110 }, (_, i) => (i * 7 + 3) % 61);
    let ga: Float32Array = new Float32Array(0), gb: Float32Array = ga;
    for (let i = 0; i < prompt.length; i += 8) { ga = await a.forward(prompt.slice(i, i + 8)); gb = await b.forward(prompt.slice(i, i + 8)); }
    close(ga, gb, 'prefill logits', 1e-4, 1);
    for (const id of [5, 60, 0, 17, 33]) {
      ga = await a.forward([id]); gb = await b.forward([id]);
      close(ga, gb, `decode logits after ${id}`, 1e-4, 1);
    }
    a.dispose(); b.dispose();
    // generate's cache: 118 positions, 9,440 bytes per layer-1 cache (split again).
    const ta = await split.generate(prompt, { maxTokens: 8, prefillChunk: 8 }), tb = await whole.generate(prompt, { maxTokens: 8, prefillChunk: 8 });
    assert.equal(ta.tokens, tb.tokens, 'greedy tokens');
  } finally { split.dispose(); whole.dispose(); }
});

test.run();
