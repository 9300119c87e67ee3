// The locret KV method beyond the conformance harness (test/kv-methods.test.ts): with a budget no
// smaller than the context it is the full method bit for bit; with hand-made retaining heads whose
// scores we know, the tokens that survive eviction are the stabilizers and the top-scored ones
// (ties to the earlier position), seen through attention with zero queries (a uniform average of the
// kept values); bad settings are refused by name.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Backend } from '../src/backend/contract.ts';
import { createCpuBackend } from '../src/cpu/backend.ts';
import { GpuBackend } from '../src/gpu/backend.ts';
import { fullMethod } from '../src/kv/full/method.ts';
import { locretMethod } from '../src/kv/locret/method.ts';
import { seededLocretHeads } from '../src/kv/locret/reference.ts';
import type { LocretHeads } from '../src/kv/locret/settings.ts';
import type { KvGroupShape, KvSettings } from '../src/kv/method.ts';
import { sharedGpu } from './helpers/engine.ts';
import { gpuTests } from './helpers/gpu-skip.ts';
import { randomArray } from './reference/kernels.ts';
import { tempCheckpoint } from './helpers/engine.ts';
import { Engine } from '../src/engine/engine.ts';
import { initRetainingHeads, retainingHeadShape } from '../src/kv/locret/retaining-heads.ts';
import { allHeads } from '../src/attention/pattern.ts';
import { main } from '../src/cli/main.ts';

const BASE: KvSettings = { kvDtype: 'f32', window: { sink: 3, recent: 8 }, compensation: false };
const gpu = await sharedGpu();
const backends: Array<{ name: string; available: boolean; make: () => Promise<Backend> }> = [
  { name: 'cpu', available: true, make: () => createCpuBackend() },
  { name: 'gpu', available: gpu.gpu !== null, make: async () => new GpuBackend(gpu.gpu!) },
];
const test = suite('locret method');

/** Runs chunks through a cache; returns every attended output row, concatenated. */
async function outputs(be: Backend, method: typeof fullMethod, shape: KvGroupShape, settings: KvSettings, chunks: number[],
  q: Float32Array, k: Float32Array, v: Float32Array): Promise<Float32Array[]> {
  const rowQ = shape.numKvHeads * shape.group * shape.headDim, rowK = shape.numKvHeads * shape.headDim;
  const total = chunks.reduce((a, b) => a + b, 0);
  const cache = method.create(be, shape, total, settings);
  const outs: Float32Array[] = [];
  let pastLen = 0;
  for (const rows of chunks) {
    const qt = be.upload(q.subarray(pastLen * rowQ, (pastLen + rows) * rowQ));
    const kt = be.upload(k.subarray(pastLen * rowK, (pastLen + rows) * rowK)), vt = be.upload(v.subarray(pastLen * rowK, (pastLen + rows) * rowK));
    const out = be.alloc(rows * rowQ);
    cache.attend(out, qt, kt, vt, rows, pastLen);
    outs.push(await be.read(out));
    await cache.append(kt, vt, rows, pastLen, qt);
    for (const t of [qt, kt, vt, out]) be.free(t);
    pastLen += rows;
  }
  cache.free();
  return outs;
}

for (const b of backends) {
  const register = b.name === 'cpu' ? test : gpuTests(test, b.available, gpu.reason);
  register(`budget ≥ context is the full method bit for bit (${b.name})`, async () => {
    const be = await b.make();
    const shape: KvGroupShape = { numKvHeads: 2, group: 3, headDim: 12 };
    const chunks = [7, 5, 1, 1, 1, 3, 1], total = 19;
    const q = randomArray(total * 6 * 12, 3, 1.5), k = randomArray(total * 2 * 12, 4, 1.5), v = randomArray(total * 2 * 12, 5);
    const locret: KvSettings = { ...BASE, locret: { budget: total, stabilizers: 2, heads: seededLocretHeads(1) } };
    try {
      const full = await outputs(be, fullMethod, shape, BASE, chunks, q, k, v);
      const kept = await outputs(be, locretMethod, shape, locret, chunks, q, k, v);
      full.forEach((o, i) => assert.equal(Array.from(kept[i]), Array.from(o), `chunk ${i}`));
    } finally { if (b.name === 'cpu') be.destroy(); }
  });
}

/**
 * Retaining heads scoring KV head h's token by silu(v_h[0]) (hidden = numKvHeads; fc1 row h picks
 * v_h[0], fc2 is the identity): increasing in v_h[0] ≥ 0, so the order of scores is known.
 */
function valueScoredHeads(shape: KvGroupShape): LocretHeads {
  const { numKvHeads: H, group, headDim: D } = shape, qd = H * group * D, inDim = qd + 2 * H * D;
  const fc1 = new Float32Array(H * inDim), fc2 = new Float32Array(H * H);
  for (let h = 0; h < H; h++) { fc1[h * inDim + qd + H * D + h * D] = 1; fc2[h * H + h] = 1; }
  return {
    head: () => ({ inDim, hidden: H, outDim: H, fc1, fc2 }),
    invFreq: (d) => Float32Array.from({ length: d / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / d)),
  };
}

test('eviction keeps the stabilizers and the top-scored older tokens, ties to the earlier position', async () => {
  const be = await createCpuBackend();
  const shape: KvGroupShape = { numKvHeads: 2, group: 2, headDim: 4 }, H = 2, D = 4, total = 12;
  // v_h[0] per position (the score's order); the rest of v random.
  const score0 = [
    [0.5, 3, 1, 2, 0.2, 2, 0.1, 2, 0.3, 0.4, 0.05, 0.6],
    [2.5, 0.1, 0.2, 0.3, 1.5, 0.1, 0.1, 0.1, 0.2, 0.9, 4, 0.7],
  ];
  const v = randomArray(total * H * D, 9);
  for (let p = 0; p < total; p++) for (let h = 0; h < H; h++) v[(p * H + h) * D] = score0[h][p];
  const k = randomArray(total * H * D, 8, 1.5), q = new Float32Array(total * H * 2 * D); // q = 0: uniform attention
  const settings: KvSettings = { ...BASE, locret: { budget: 5, stabilizers: 2, heads: valueScoredHeads(shape) } };
  try {
    const outs = await outputs(be, locretMethod, shape, settings, [10, 1, 1], q, k, v);
    // After the prefill of 0…9: head 0 keeps 8, 9 (stabilizers) and 1 (3), then 3 and 5 (2, tied with
    // 7: the earlier win); head 1 keeps 8, 9 and 0 (2.5), 4 (1.5), 3 (0.3).
    // Position 10 attends those and itself; its append then drops head 0's 8 (0.3 < 2) and keeps
    // 9, 10 as stabilizers; head 1 keeps 9, 10 and 0, 4, 3 (8 scores 0.2 < 0.3).
    const expectKept = [
      [[1, 3, 5, 8, 9, 10], [1, 3, 5, 9, 10, 11]],
      [[0, 3, 4, 8, 9, 10], [0, 3, 4, 9, 10, 11]],
    ];
    for (let step = 0; step < 2; step++) {
      const out = outs[1 + step];
      for (let h = 0; h < H; h++) {
        const seen = expectKept[h][step];
        for (let qh = h * 2; qh < h * 2 + 2; qh++) for (let d = 0; d < D; d++) {
          const mean = seen.reduce((s, p) => s + v[(p * H + h) * D + d], 0) / seen.length;
          assert.ok(Math.abs(out[qh * D + d] - mean) <= 1e-6, `step ${step} head ${h} dim ${d}: ${out[qh * D + d]} vs mean over [${seen}] ${mean}`);
        }
      }
    }
  } finally { be.destroy(); }
});

test('bad settings and mismatched retaining heads are refused by name', async () => {
  const be = await createCpuBackend();
  const shape: KvGroupShape = { numKvHeads: 2, group: 2, headDim: 4 };
  const heads = valueScoredHeads(shape);
  try {
    assert.throws(() => locretMethod.layout(shape, 8, BASE), /the locret method needs settings\.locret/);
    assert.throws(() => locretMethod.create(be, shape, 8, { ...BASE, locret: { budget: 0, stabilizers: 0, heads } }), /budget must be a positive integer \(got 0\)/);
    assert.throws(() => locretMethod.create(be, shape, 8, { ...BASE, locret: { budget: 4, stabilizers: 5, heads } }), /stabilizers must be an integer in \[0, budget = 4\] \(got 5\)/);
    // A group with fewer KV heads than the retaining head scores (part of a layer) cannot be scored
    // without the layer's chunk (test/locret-mixed.test.ts runs it with one).
    const part: KvGroupShape = { numKvHeads: 1, group: 2, headDim: 4 };
    const cache = locretMethod.create(be, part, 8, { ...BASE, locret: { budget: 4, stabilizers: 1, heads } });
    const t = be.upload(new Float32Array(8)), kv = be.upload(new Float32Array(4));
    let err: Error | null = null;
    await Promise.resolve(cache.append(kv, kv, 1, 0, t)).catch((e: Error) => { err = e; });
    assert.match(String(err), /layer 0's retaining head reads 32 values and scores 2 KV heads, but the layer has 1 KV heads × 2 query heads × headDim 4 \(inDim 16\); a group serving part of a layer scores from the whole layer's q, k, v/);
    cache.free();
  } finally { be.destroy(); }
});

const ckpt = await tempCheckpoint({ modelType: 'llama', hidden: 72, intermediate: 100, layers: 2, heads: 6, kvHeads: 2, headDim: 24, vocab: 301, dtype: 'F32', seed: 1 });
const PROMPT = [5, 17, 3, 99, 42, 7, 0, 11, 23, 64, 8, 1, 90];
const retaining = initRetainingHeads(retainingHeadShape(ckpt.config), ckpt.config.numLayers, 5);
const engineOn = (placement: 'cpu' | 'gpu', locret?: { budget: number; stabilizers: number }, extra: object = {}) =>
  Engine.create(ckpt.config, ckpt.weights, { device: placement, placement, acquireGpu: sharedGpu, ...(locret ? { locret: { ...locret, heads: retaining } } : {}), ...extra });

for (const placement of ['cpu', 'gpu'] as const) {
  const register = placement === 'cpu' ? test : gpuTests(test, gpu.gpu !== null, gpu.reason);
  register(`engine (${placement}): locret with budget ≥ context generates what full attention does; a small budget keeps budget positions per head`, async () => {
    const full = await engineOn(placement), roomy = await engineOn(placement, { budget: 64, stabilizers: 4 }), tight = await engineOn(placement, { budget: 8, stabilizers: 3 });
    try {
      const a = await full.generate(PROMPT, { maxTokens: 12, prefillChunk: 5 }), b = await roomy.generate(PROMPT, { maxTokens: 12, prefillChunk: 5 });
      assert.equal(b.tokens, a.tokens);
      assert.is(b.kv.byMethod.locret, 2 * 4 * 2 * 24 * 25 * 2, 'K and V, 2 KV heads × 24 × (13 + 12 positions) × 2 layers');
      const c = await tight.generate(PROMPT, { maxTokens: 12, prefillChunk: 5 });
      assert.is(c.tokens.length, 12);
      assert.is(c.kv.byMethod.locret, 2 * 4 * 2 * 24 * 8 * 2, 'budget 8 positions per KV head');
    } finally { full.dispose(); roomy.dispose(); tight.dispose(); }
  });
}

test('engine: the locret option is refused with streaming heads, mismatched retaining heads or a bad budget', async () => {
  const { numLayers: L, numKvHeads: H } = ckpt.config;
  const fails = (o: object) => Engine.create(ckpt.config, ckpt.weights, { device: 'cpu', placement: 'cpu', ...o }).then(() => null, (e: Error) => e.message);
  const locret = { budget: 8, stabilizers: 2, heads: retaining };
  const kinds = allHeads(L, H, true); kinds[1][0] = false;
  assert.match(await fails({ locret, kinds, window: { sink: 2, recent: 4 } }) ?? '', /^locret on every head cannot be combined with streaming heads/);
  assert.match(await fails({ locret: { ...locret, heads: { layers: retaining.layers.slice(1) } } }) ?? '', /^locret retaining heads have 1 layers, the model has 2/);
  const other = initRetainingHeads(retainingHeadShape({ ...ckpt.config, numKvHeads: 1 }), L, 1);
  assert.match(await fails({ locret: { ...locret, heads: other } }) ?? '', /^locret layer 0's retaining head reads 192 values and scores 1 KV heads; the model needs 240 and 2/);
  assert.match(await fails({ locret: { ...locret, stabilizers: 9 } }) ?? '', /^locret stabilizers must be an integer in \[0, budget = 8\] \(got 9\)/);
  assert.match(await fails({ locret, kvDtype: 'int8' }) ?? '', /^locret keeps its cache in f32; KV dtype int8 is not supported with it/);
});

test('duet generate --method locret --budget N [--stabilizers N] runs with the fixture\'s retaining heads; bad flags are refused', async () => {
  const write = { out: process.stdout.write, err: process.stderr.write };
  let printed = '';
  process.stdout.write = ((c: string) => { printed += c; return true; }) as typeof process.stdout.write;
  process.stderr.write = (() => true) as typeof process.stderr.write;
  const gen = (...flags: string[]) => main(['generate', '--model', 'fixtures/duet-passkey', '--prompt-ids', '1,5,9,13,17,21,25,29,33,37,41', '--max-tokens', '3', '--device', 'cpu', '--json', ...flags]);
  const refused = (...flags: string[]) => gen(...flags).then(() => '', (e: Error) => e.message);
  try {
    assert.is(await gen('--method', 'locret', '--budget', '6', '--stabilizers', '2', '--prefill-chunk', '4'), 0);
    assert.match(printed, /locret \(budget 6, stabilizers 2\)/);
    assert.match(await refused('--budget', '8'), /--budget and --stabilizers go with --method locret/);
    // With a pattern: its retrieval heads full, locret on the heads it streams.
    printed = '';
    assert.is(await gen('--method', 'locret', '--budget', '6', '--pattern', 'fixtures/duet-passkey-pattern', '--sparsity', '0.5'), 0);
    assert.match(printed, /6\/12 KV heads locret \(budget 6, stabilizers 1\), the rest full/);
    assert.match(await refused('--method', 'locret'), /--method locret needs --budget N/);
    assert.match(await refused('--method', 'locret', '--budget', '0'), /--budget must be an integer ≥ 1 \(got "0"\)/);
    assert.match(await refused('--method', 'locret', '--budget', '4', '--stabilizers', '5'), /--stabilizers must be at most --budget 4 \(got 5\)/);
    assert.match(await refused('--method', 'magicpig', '--budget', '4'), /--method must be one of duo, locret \(got "magicpig"\)/);
    assert.match(await refused('--method', 'locret', '--budget', '4', '--streaming-only'), /--method locret cannot be combined with --streaming-only or --compensation/);
    const bare = await main(['generate', '--model', ckpt.dir, '--prompt-ids', '1,2,3', '--device', 'cpu', '--method', 'locret', '--budget', '4']).then(() => '', (e: Error) => e.message);
    assert.match(bare, /needs the model's retaining heads: locret\.json: missing from/);
  } finally { process.stdout.write = write.out; process.stderr.write = write.err; }
});

test.run();
