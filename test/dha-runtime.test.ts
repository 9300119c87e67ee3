// DHA checkpoints in the engine: a random checkpoint with decoupled heads (a layer with more value
// heads than key heads, one with one key head, maps that are not contiguous groups, and a layer
// that kept every head) loaded through the real loader and run on the CPU, the GPU and the split
// placement, against the float64 reference (test/reference/model.ts with the DHA layout).
// Tolerance as test/engine.test.ts: |Δlogit| ≤ 2e-3·(1 + |ref|). The KV cache holds exactly
// Σ_l (key heads + value heads) rows per position, as measured by the session and projected by the
// memory plan and `duet memory`'s kvMemory. DuoAttention patterns on the decoupled layers (docs/dha.md):
// a layer split into a full and a streaming group with a value head in both, a marked-streaming head
// promoted to full, decoupled layers all streaming; measured bytes = projections = a hand count.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { kvMemory, projectModelKv } from '../src/api/memory.ts';
import { loadModel } from '../src/node.ts';
import { allHeads } from '../src/attention/pattern.ts';
import type { DhaConfig } from '../src/dha/config.ts';
import { Engine, type Placement } from '../src/engine/engine.ts';
import { planMemory } from '../src/engine/memory-plan.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { kvHeadsPerToken, parseModelConfig } from '../src/model/config.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { rewriteTensors } from './helpers/checkpoint.ts';
import { assertClose } from './helpers/conformance.ts';
import { writeDhaCheckpoint } from './helpers/dha-checkpoint.ts';
import { sharedGpu } from './helpers/engine.ts';
import { gpuTests } from './helpers/gpu-skip.ts';
import { referenceLogits } from './reference/model.ts';

const GPU = await sharedGpu();
const TOL = 2e-3;
const H = 5, D = 6;
const SPEC = { hidden: H * D, heads: H, intermediate: 44, vocab: 97, seed: 7 };
const LAYOUT: DhaConfig = {
  layers: [
    { keyHeads: 2, valueHeads: 3, queryToKey: [1, 0, 1, 1, 0], queryToValue: [2, 0, 1, 2, 1] },
    { keyHeads: 5, valueHeads: 5, queryToKey: [0, 1, 2, 3, 4], queryToValue: [0, 1, 2, 3, 4] },
    { keyHeads: 1, valueHeads: 2, queryToKey: [0, 0, 0, 0, 0], queryToValue: [1, 0, 0, 1, 1] },
  ],
};
/** Rows per position: 2+3, 5+5, 1+2. */
const CACHED_HEADS = 18;
const PROMPT = [5, 17, 3, 90, 42, 7, 0, 11, 23, 64, 8, 1, 33];
const DECODE = [31, 2, 77, 4];

async function dhaDir(spec = SPEC, layout = LAYOUT): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'duet-dha-'));
  await writeDhaCheckpoint(dir, spec, layout);
  return dir;
}

const test = suite('DHA runtime');
let ckpt: Awaited<ReturnType<typeof loadCheckpoint>>;
let reference: Float64Array[];
test.before(async () => {
  ckpt = await loadCheckpoint(nodeModelFiles(await dhaDir()));
  reference = referenceLogits(ckpt.config, ckpt.weights, [...PROMPT, ...DECODE], undefined, ckpt.config.dha!);
});

const engineOn = (placement: Placement, kinds?: boolean[][], window?: { sink: number; recent: number }) => Engine.create(ckpt.config, ckpt.weights, {
  device: placement === 'cpu' ? 'cpu' : 'gpu', placement, kinds, window, acquireGpu: sharedGpu,
});

test('the loader reads the per-layer layout and the tensors of its shapes', () => {
  assert.equal(ckpt.config.dha, LAYOUT);
  assert.is(ckpt.config.numKvHeads, H);
  assert.is(kvHeadsPerToken(ckpt.config), CACHED_HEADS);
  assert.equal(ckpt.weights.layers.map((l) => [(l.wk as Float32Array).length / (D * SPEC.hidden), (l.wv as Float32Array).length / (D * SPEC.hidden)]), [[2, 3], [5, 5], [1, 2]]);
});

for (const placement of ['cpu', 'gpu', 'split'] as const) {
  (placement === 'cpu' ? test : gpuTests(test, GPU.gpu !== null, GPU.reason))(`${placement}: chunked prefill through cache growth, then decode, match the reference; the cache holds Σ(nK+nV) heads`, async () => {
    const engine = await engineOn(placement);
    try {
      // Capacity 4 grows while prefilling in chunks of 5 rows.
      const session = engine.newSession(4, 5);
      assertClose(await session.forward(PROMPT), reference[PROMPT.length - 1], `${placement} prefill`, TOL);
      for (let i = 0; i < DECODE.length; i++) assertClose(await session.forward([DECODE[i]]), reference[PROMPT.length + i], `${placement} decode ${i}`, TOL);
      const capacity = (session as unknown as { capacity: number }).capacity;
      const m = session.kvMemory();
      assert.is(m.byMethod.full, CACHED_HEADS * capacity * D * 4);
      assert.is(m.byDevice[placement === 'cpu' ? 'cpu' : 'gpu'], CACHED_HEADS * capacity * D * 4);
      const shape = { config: ckpt.config, kinds: engine.model.kinds, window: { sink: 0, recent: 1 }, main: engine.model.main.kind, streaming: engine.model.streamingBackend.kind };
      assert.is(planMemory(shape, 0, capacity, 5)[engine.model.main.kind].kv, m.byMethod.full);
      session.dispose();
    } finally { engine.dispose(); }
  });
}

gpuTests(test, GPU.gpu !== null, GPU.reason)('split: streaming heads of the layer that kept every head run on the CPU, decoupled layers on the GPU', async () => {
  const kinds = [[true, true, true, true, true], [true, false, true, false, false], [true, true, true, true, true]];
  const window = { sink: 2, recent: 3 };
  const ref = referenceLogits(ckpt.config, ckpt.weights, [...PROMPT, ...DECODE], { kinds, ...window }, ckpt.config.dha!);
  const engine = await engineOn('split', kinds, window);
  try {
    const session = engine.newSession(32, 4);
    assertClose(await session.forward(PROMPT), ref[PROMPT.length - 1], 'split prefill', TOL);
    for (let i = 0; i < DECODE.length; i++) assertClose(await session.forward([DECODE[i]]), ref[PROMPT.length + i], `split decode ${i}`, TOL);
    const m = session.kvMemory();
    // Full: 2+3 and 1+2 heads of the decoupled layers plus 2 KV heads (K and V) of layer 1; rings: 3 KV heads × 5 slots.
    assert.is(m.byDevice.gpu, (5 + 3 + 2 * 2) * 32 * D * 4);
    assert.is(m.byDevice.cpu, 2 * 3 * 5 * D * 4);
    const shape = { config: ckpt.config, kinds, window, main: 'gpu' as const, streaming: 'cpu' as const };
    const plan = planMemory(shape, 0, 32, 4);
    assert.equal([plan.gpu.kv, plan.cpu.kv], [m.byDevice.gpu, m.byDevice.cpu]);
    session.dispose();
  } finally { engine.dispose(); }
});

// Layer 0 (2K+3V): query heads 1 and 4 (all the readers of key head 0) stream: the streaming group
// has key head 0 and value heads 0 and 1, the full group key head 1 and value heads 1 and 2 (value
// head 1 is read by query heads 2 and 4: a full cache and a ring). Layer 1 (identity maps): KV heads
// 1, 3, 4 stream. Layer 2 (1K+2V): heads 1 and 3 are marked but share the only key head with retrieval
// heads: promoted, the layer is all full.
const SPLIT_KINDS = [[true, false, true, true, false], [true, false, true, false, false], [true, false, true, false, true]];
// Decoupled layers all streaming (rings of every key and value head), the identity layer all full.
const STREAM_KINDS = [[false, false, false, false, false], [true, true, true, true, true], [false, false, false, false, false]];
const WINDOW = { sink: 2, recent: 3 };
/** Full rows per position and ring rows per slot of each pattern (hand count from the comments above). */
const HAND = {
  split: { full: (1 + 2) + 2 * 2 + (1 + 2), ring: (1 + 2) + 3 * 2 },
  stream: { full: 5 * 2, ring: (2 + 3) + (1 + 2) },
};

for (const [name, kinds, hand] of [['split', SPLIT_KINDS, HAND.split], ['all-streaming', STREAM_KINDS, HAND.stream]] as const) {
  for (const placement of ['cpu', 'gpu', 'split'] as const) {
    (placement === 'cpu' ? test : gpuTests(test, GPU.gpu !== null, GPU.reason))(`${placement}, ${name} decoupled layers: prefill in chunks past the window, decode; match the reference; bytes = plan = hand count`, async () => {
      const ref = referenceLogits(ckpt.config, ckpt.weights, [...PROMPT, ...DECODE], { kinds, ...WINDOW }, ckpt.config.dha!);
      const engine = await engineOn(placement, kinds, WINDOW);
      try {
        const session = engine.newSession(32, 4);
        assertClose(await session.forward(PROMPT), ref[PROMPT.length - 1], `${placement} prefill`, TOL);
        for (let i = 0; i < DECODE.length; i++) assertClose(await session.forward([DECODE[i]]), ref[PROMPT.length + i], `${placement} decode ${i}`, TOL);
        const m = session.kvMemory(), row = D * 4, slots = WINDOW.sink + WINDOW.recent;
        assert.is(m.byMethod.full, hand.full * 32 * row, 'full bytes');
        assert.is(m.byMethod.streaming, hand.ring * slots * row, 'ring bytes');
        const main = engine.model.main.kind, side = engine.model.streamingBackend.kind;
        const plan = planMemory({ config: ckpt.config, kinds, window: WINDOW, main, streaming: side }, 0, 32, 4);
        assert.equal([plan.gpu.kv, plan.cpu.kv], [m.byDevice.gpu, m.byDevice.cpu]);
        if (placement === 'split') assert.equal([m.byDevice.gpu, m.byDevice.cpu], [hand.full * 32 * row, hand.ring * slots * row]);
        const p = kvMemory(ckpt.config, { context: 32, pattern: { alphas: kinds.map((r) => r.map(Number)), sink: WINDOW.sink, recent: WINDOW.recent, config: {} } });
        assert.is(p.duo_bytes, m.byMethod.full + m.byMethod.streaming, 'kvMemory duo bytes');
        session.dispose();
      } finally { engine.dispose(); }
    });
  }
}

test('the pattern\'s promoted heads count as retrieval heads and are named', async () => {
  const alphas = SPLIT_KINDS.map((r) => r.map(Number));
  const p = kvMemory(ckpt.config, { context: 40, pattern: { alphas, sink: WINDOW.sink, recent: WINDOW.recent, config: {} } });
  // 7 query heads marked streaming, 2 of them (layer 2) promoted.
  assert.equal([p.retrieval_heads, p.streaming_heads], [10, 5]);
  assert.match(p.heads, /2 marked-streaming query heads of decoupled \(DHA\) layers attend in full, sharing a key head with a retrieval head \(layer 2: 1,3\)/);
  const model = await loadModel(await dhaDir(), { device: 'cpu', threads: 1, pattern: { alphas, sink: WINDOW.sink, recent: WINDOW.recent, config: {} } });
  try {
    assert.is(model.info.streamingHeads, 5);
    assert.match(model.info.heads, /2 marked-streaming query heads of decoupled \(DHA\) layers attend in full.*\(layer 2: 1,3\)/);
  } finally { await model.dispose(); }
  const engine = await engineOn('cpu', SPLIT_KINDS, WINDOW);
  try {
    const groups = engine.model.layers.map((l) => l.groups.map((g) => `${g.method.name} q${g.kvHeads.join(',')} k${g.numKvHeads} v${g.numValueHeads}`));
    assert.equal(groups, [['full q0,2,3 k1 v2', 'streaming q1,4 k1 v2'], ['full q0,2 k2 v2', 'streaming q1,3,4 k3 v3'], ['full q0,1,2,3,4 k1 v2']]);
  } finally { engine.dispose(); }
});

test('decoupled layers refuse methods that do not serve decoupled heads, and compensation, naming the layer', async () => {
  const methods = [['full', 'magicpig', 'full', 'full', 'full'], ['full', 'full', 'full', 'full', 'full'], ['full', 'full', 'full', 'full', 'full']];
  assert.throws(() => planMemory({ config: ckpt.config, kinds: allHeads(3, H, true), methods, window: WINDOW, main: 'cpu', streaming: 'cpu' }, 0, 8, 1),
    /layer 0 has decoupled key\/value heads \(duet_dha: 2 key heads, 3 value heads\), where heads are full or streaming; head 1 is given "magicpig"/);
  const error = await Engine.create(ckpt.config, ckpt.weights, { device: 'cpu', placement: 'cpu', kinds: SPLIT_KINDS, window: WINDOW, compensation: true }).then(() => null, (e: Error) => e);
  assert.match(error?.message ?? '', /streaming heads of layer 0: compensation \(RazorAttention\) is not supported with decoupled key\/value heads/);
});

test('duet memory (kvMemory) projects Σ_l (nK + nV) heads exactly, and the session measures the same', async () => {
  const context = 37;
  for (const kvDtype of ['f32', 'f16', 'int8'] as const) {
    const p = kvMemory(ckpt.config, { context, kvDtype });
    const row = { f32: D * 4, f16: (D / 2) * 4, int8: (Math.ceil(D / 4) + 1) * 4 }[kvDtype];
    assert.is(p.full_bytes, CACHED_HEADS * context * row, kvDtype);
    assert.is(p.duo_bytes, p.full_bytes, kvDtype);
    const engine = await Engine.create(ckpt.config, ckpt.weights, { device: 'cpu', placement: 'cpu', kvDtype });
    try {
      const session = engine.newSession(context, 8);
      await session.forward(PROMPT);
      assert.is(session.kvMemory().byMethod.full, p.full_bytes, kvDtype);
      session.dispose();
    } finally { engine.dispose(); }
  }
  // The same projection serves duet eval's kv_bytes and generation's full-attention bytes.
  assert.is(projectModelKv(ckpt.config, allHeads(3, H, true), context, { sink: 0, recent: 1 }, 'f32').full_bytes, CACHED_HEADS * context * D * 4);
  // With streaming heads on the layer that kept every head.
  const alphas = [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]];
  const p = kvMemory(ckpt.config, { context, pattern: { alphas, sink: 2, recent: 4, config: {} } });
  assert.is(p.full_bytes, CACHED_HEADS * context * D * 4);
  assert.is(p.duo_bytes, (5 + 3 + 2 * 3) * context * D * 4 + 2 * 2 * 6 * D * 4);
});

test('docs/dha.md\'s KV bytes table: the bundled model and its 50% DHA layout, alone and with the bundled pattern at sparsity 0.5', () => {
  const load = (file: string) => parseModelConfig(JSON.parse(readFileSync(file, 'utf8')), file);
  const mha = load('fixtures/duet-passkey/config.json'), dha = load('docs/dha/passkey-dha-0.5.config.json');
  const alphas = readFileSync('fixtures/duet-passkey-pattern/full_attention_heads.tsv', 'utf8').trim().split('\n').map((r) => r.split('\t').map(Number));
  const pattern = { alphas, sink: 16, recent: 64, config: {} };
  const rows = (config: typeof mha, context: number) => {
    const p = kvMemory(config, { context, pattern, sparsity: 0.5 });
    return [p.full_bytes, p.duo_bytes];
  };
  assert.equal(rows(mha, 4096), [6291456, 3207168]);
  assert.equal(rows(mha, 32768), [50331648, 25227264]);
  assert.equal(rows(dha, 4096), [3145728, 2122752]);
  assert.equal(rows(dha, 32768), [25165824, 16802816]);
  assert.match(kvMemory(dha, { context: 8, pattern, sparsity: 0.5 }).heads, /3 marked-streaming query heads .* \(layer 0: 0; layer 1: 3; layer 2: 2\)/);
});

test('bad DHA inputs: maps out of range, tensors that disagree with the counts, a nominal KV count that is not multi-head', async () => {
  const dir = await dhaDir();
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  const bad = structuredClone(config);
  bad.duet_dha.layers[2].query_to_value[3] = 2;
  assert.throws(() => parseModelConfig(bad, 'x/config.json'), /x\/config\.json: field "duet_dha\.layers\[2\]\.query_to_value\[3\]" must be an integer from 0 to 1 \(got 2\)/);
  assert.throws(() => parseModelConfig({ ...config, num_key_value_heads: 1 }, 'x/config.json'), /x\/config\.json: field "num_key_value_heads" \(1\) must equal num_attention_heads \(5\) in a checkpoint with duet_dha/);
  // config.json says 3 value heads in layer 0, the tensor keeps 2.
  await rewriteTensors(dir, (t) => {
    const v = t['model.layers.0.self_attn.v_proj.weight'];
    v.data = (v.data as Float32Array).slice(0, 2 * D * SPEC.hidden);
    v.shape = [2 * D, SPEC.hidden];
  });
  const error = await loadCheckpoint(nodeModelFiles(dir)).then(() => null, (e: Error) => e);
  assert.match(error?.message ?? '', /model\.safetensors: tensor "model\.layers\.0\.self_attn\.v_proj\.weight" has shape \[12, 30\], expected \[18, 30\] from config\.json \(duet_dha\.layers\[0\]\.value_heads 3 × head_dim 6 rows\)/);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
});

test.run();

