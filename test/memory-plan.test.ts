// Memory planned before allocating (src/engine/memory-plan.ts): the plan against what DeviceModel and
// Session really allocate, and each refusal (config sizes, weights, contextLength) with its message.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine } from '../src/engine/engine.ts';
import { CPU_PLAN_LIMIT, maxCpuContext, placedWeightBytes, planMemory, type PlacementShape } from '../src/engine/memory-plan.ts';
import { kvMemory, largestContext } from '../src/api/memory.ts';
import { formatBytes } from '../src/attention/memory.ts';
import { parseModelConfig } from '../src/model/config.ts';
import type { ModelWeights } from '../src/model/weights.ts';
import type { CpuBackend } from '../src/cpu/backend.ts';
import { loadModel } from '../src/node.ts';
import { writeCheckpoint } from './helpers/checkpoint.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { concatBytes } from '../src/model/gguf.ts';
import { ggufChunks } from '../src/model/gguf-write.ts';
import { encodeMatrix } from '../src/model/gguf-encode.ts';
import { tempCheckpoint } from './helpers/engine.ts';

const LLAMA3_8B = {
  model_type: 'llama', hidden_size: 4096, num_attention_heads: 32, num_key_value_heads: 8, intermediate_size: 14336,
  num_hidden_layers: 32, vocab_size: 128256, max_position_embeddings: 8192, tie_word_embeddings: true,
};

test('the plan is what DeviceModel and Session allocate (f32 and q8_0 weights, f32/f16/int8 KV, compensation, mixed heads, bias, untied, short and long capacity)', async () => {
  const ck = await tempCheckpoint({ layers: 3, hidden: 64, heads: 4, kvHeads: 2, intermediate: 96, vocab: 301, attentionBias: true, modelType: 'qwen2' });
  const kinds = [[true, false], [false, false], [true, true]];
  const window = { sink: 2, recent: 5 };
  for (const [weights, kvDtype, compensation] of [['f32', 'f32', false], ['q8_0', 'f32', false], ['f32', 'f16', false], ['q8_0', 'int8', false], ['f32', 'f16', true]] as const) {
    const engine = await Engine.create(ck.config, ck.weights, { device: 'cpu', kinds, window, weights, kvDtype, compensation, createCpu: undefined });
    try {
      const shape: PlacementShape = { config: ck.config, kinds, window, main: 'cpu', streaming: 'cpu', kvDtype, compensation };
      assert.is(placedWeightBytes(shape, weights, weights === 'f32' ? undefined : 4 * 301 * 64), engine.model.weightBytes, weights);
      const cpu = engine.cpu as unknown as CpuBackend;
      for (const [capacity, rows] of [[4, 3], [37, 11]]) {
        const before = cpu.memoryBytes;
        const session = engine.newSession(capacity, rows);
        const plan = planMemory(shape, engine.model.weightBytes, capacity, rows);
        const kv = session.kvMemory();
        assert.is(plan.cpu.kv, kv.retrievalBytes + kv.streamingBytes, `kv at ${capacity}`);
        // 3 retrieval KV heads of dim 16 in the dtype's rows (64, 32 or 16 + 4 bytes), K and V; the
        // 3 streaming KV heads' rings in the same rows.
        const row = { f32: 64, f16: 32, int8: 20 }[kvDtype];
        assert.is(kv.retrievalBytes, 3 * capacity * 2 * row, `${kvDtype} full caches at ${capacity}`);
        // With compensation, each streaming KV head also keeps a key sum and a value sum (f32).
        assert.is(kv.streamingBytes, 3 * Math.min(capacity, 7) * 2 * row + (compensation ? 3 * 2 * 64 : 0), `${kvDtype} rings at ${capacity}`);
        assert.is(plan.gpu.total, 0);
        // The heap grew by the session's buffers: activations + KV, each rounded up to 16 bytes (≤ 25 buffers here).
        const grown = cpu.memoryBytes - before;
        assert.ok(grown >= plan.cpu.kv + plan.cpu.activations && grown <= plan.cpu.kv + plan.cpu.activations + 16 * 25, `heap grew ${grown}, planned ${plan.cpu.kv + plan.cpu.activations}`);
        session.dispose();
      }
    } finally {
      engine.dispose();
    }
  }
});

test('config sizes no host could hold are refused when config.json is parsed (no billion-layer tables)', () => {
  const base = { model_type: 'llama', hidden_size: 64, num_attention_heads: 4, intermediate_size: 128, num_hidden_layers: 2, vocab_size: 100 };
  assert.throws(() => parseModelConfig({ ...base, num_hidden_layers: 1e9 }),
    (e: Error) => e.message === 'config.json: num_hidden_layers × num_key_value_heads is 1000000000 × 4 = 4000000000 KV heads, more than Duet\'s limit of 1048576');
  assert.throws(() => parseModelConfig({ ...base, hidden_size: 4_000_000, num_attention_heads: 1 }, 'm/config.json'),
    (e: Error) => e.message === 'm/config.json: the model it describes has 1.28e+14 weights (num_hidden_layers 2, hidden_size 4000000, intermediate_size 128, vocab_size 100): 65.5 TiB even at 4.5 bits per weight, more than Duet\'s limit of 1 TiB');
  assert.throws(() => parseModelConfig({ ...base, vocab_size: 5e12 }), /config\.json: the model it describes has 6\.40e\+14 weights .*vocab_size 5000000000000\): 327\.4 TiB/);
  // `duet memory`'s path (config only, no weights): an error, not a heap exhausted building head tables.
  assert.throws(() => kvMemory(parseModelConfig({ ...base, num_hidden_layers: 1e9 }), { context: 100 }), /KV heads, more than Duet's limit/);
  // A real large model stays accepted.
  assert.is(parseModelConfig({ ...LLAMA3_8B, tie_word_embeddings: false, max_position_embeddings: 131072 }).numLayers, 32);
});

test('weights that cannot fit the CPU backend\'s WebAssembly memory are refused before any is placed', async () => {
  const config = parseModelConfig(LLAMA3_8B);
  const v = new Float32Array(1);
  // Never read: the plan refuses first (placing them would fail on the layer count instead).
  const weights: ModelWeights = { embed: v, lmHead: v, layers: [], finalNorm: v };
  let err: Error | null = null;
  try { await Engine.create(config, weights, { device: 'cpu', weights: 'f32' }); } catch (e) { err = e as Error; }
  assert.is(err?.message, "weights f32: the model needs 27.96 GiB (weights 27.96 GiB, KV cache 0.00 GiB, activations 0.00 GiB) of the CPU backend's WebAssembly memory, more than wasm32's 4 GiB allows (64 MiB kept for the kernels); store them smaller (weights 'q4_0' or 'q4_k') or run the model on a GPU");
  assert.is((err as { field?: string }).field, 'weights');
});

test('contextLength: refused when asked for and its KV cache cannot fit; the default is lowered to what fits, with a notice', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'duet-plan-'));
  // 2 layers × 2 KV heads × 16 dims: 512 bytes of f32 KV per token, so about 8M tokens fit in 4 GiB.
  await writeCheckpoint(dir, { layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 96, vocab: 301, maxPositions: 2 ** 24 });
  let err: Error | null = null;
  try { await loadModel(dir, { device: 'cpu', threads: 1, contextLength: 2 ** 24 }); } catch (e) { err = e as Error; }
  assert.is(err?.message, "contextLength 16777216: the model needs 8.00 GiB (weights 0.00 GiB, KV cache 8.00 GiB, activations 0.00 GiB) of the CPU backend's WebAssembly memory, more than wasm32's 4 GiB allows (64 MiB kept for the kernels); at most 8254958 tokens fit");

  const notices: string[] = [];
  const model = await loadModel(dir, { device: 'cpu', threads: 1, notice: (m) => notices.push(m) });
  try {
    const n = model.info.contextLength;
    assert.is(n, 8254958);
    assert.equal(notices.filter((m) => m.startsWith('context length')), [
      "context length 8254958 tokens, not the model's max_position_embeddings 16777216: a KV cache for all of them would need 8.00 GiB (weights 0.00 GiB, KV cache 8.00 GiB, activations 0.00 GiB) of WebAssembly memory (4 GiB); choose with the contextLength option",
    ]);
    // It is the largest context whose plan fits.
    const config = model.info.config;
    const shape: PlacementShape = { config, kinds: [[true, true], [true, true]], window: { sink: 0, recent: 1 }, main: 'cpu', streaming: 'cpu' };
    const weightBytes = model.info.weights.bytes;
    assert.ok(planMemory(shape, weightBytes, n, 512).cpu.total <= CPU_PLAN_LIMIT);
    assert.ok(planMemory(shape, weightBytes, n + 1, 512).cpu.total > CPU_PLAN_LIMIT);
    assert.is(maxCpuContext(shape, weightBytes, 2 ** 24, 512), n);
    // It still generates (the session is sized by the prompt, not the context length).
    const out = await model.generate([1, 2, 3], { maxTokens: 2 }).result();
    assert.is(out.tokens.length, 2);
  } finally {
    model.dispose();
  }
  // Streaming heads hold rings, not full caches: the full default context fits then.
  const streaming = await loadModel(dir, { device: 'cpu', threads: 1, streamingOnly: true, window: { sink: 4, recent: 60 } });
  try { assert.is(streaming.info.contextLength, 2 ** 24); } finally { streaming.dispose(); }
});

test('host memory: a checkpoint whose loaded weights exceed hostBytes is refused before any tensor is read (safetensors and GGUF)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'duet-host-'));
  await writeCheckpoint(dir, { layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 96, vocab: 301, dtype: 'F16' });
  const gguf = join(dir, 'model.gguf');
  const hf = await loadCheckpoint(nodeModelFiles(dir));
  writeFileSync(gguf, concatBytes(ggufChunks(hf.config, hf.weights, { name: 't', type: 'q8_0', encode: encodeMatrix })));
  for (const [files, weights] of [[nodeModelFiles(dir), 'keep'], [nodeModelFiles(dir), 'q4_0'], [nodeModelFiles(gguf), 'keep'], [nodeModelFiles(gguf), 'f16']] as const) {
    // The plan is exactly what the loader ends up holding: that many bytes load, one fewer is refused.
    const held = (await loadCheckpoint(files, { weights })).loadStats.heldBytes;
    assert.is((await loadCheckpoint(files, { weights, hostBytes: held })).loadStats.heldBytes, held);
    let err: Error | null = null;
    try { await loadCheckpoint(files, { weights, hostBytes: held - 1 }); } catch (e) { err = e as Error; }
    const as = weights === 'keep' ? 'as stored' : `as ${weights}`;
    const name = files.gguf === undefined ? dir : gguf;
    assert.is(err?.message, `${name}: its weights need ${formatBytes(held)} (${held} bytes) of host memory loaded ${as}, more than the ${formatBytes(held - 1)} this machine has; store them smaller (weights 'q4_0' or 'q4_k')`);
  }
});

test('largestContext: the largest context whose GPU KV bytes fit the budget, exact, and what stops it', () => {
  const c = parseModelConfig(LLAMA3_8B);
  const GiB = 2 ** 30;
  // llama-3-8b: 32 layers × 8 KV heads × 128 × 2 (K, V) × 2 bytes (f16) = 128 KiB per token.
  const f16 = largestContext(c, { kvDtype: 'f16' }, 16 * GiB, 2 ** 20);
  assert.equal(f16.full, { tokens: 131072, gpuBytes: 16 * GiB, cpuBytes: 0, limit: 'GPU budget (16.00 GiB)' });
  assert.equal(f16.configured, f16.full, 'no heads given: full attention');
  // Against kvMemory itself, on budgets that fall between token boundaries and with streaming heads on the CPU.
  const kinds = Array.from({ length: 32 }, (_, l) => Array.from({ length: 8 }, (_, h) => (l + h) % 3 !== 0));
  for (const budget of [1, 3 * 2 ** 20 + 17, 5 * GiB + 12345]) {
    for (const o of [{}, { methods: kinds.map((row) => row.map((s) => (s ? 'streaming' : 'full'))), window: { sink: 4, recent: 60 } }]) {
      const fit = largestContext(c, o, budget, 2 ** 20).configured;
      const gpu = (context: number) => kvMemory(c, { ...o, context }).gpu_bytes;
      if (fit.tokens > 0) assert.ok(gpu(fit.tokens) <= budget && fit.gpuBytes === gpu(fit.tokens), `fits at ${fit.tokens}`);
      assert.ok(gpu(fit.tokens + 1) > budget, `${budget}: ${fit.tokens + 1} tokens must not fit`);
      assert.match(fit.limit, /^GPU budget/);
    }
  }
  // Nothing on the GPU (every head streaming, split): the search cap stops it.
  const rings = largestContext(c, { streamingOnly: true, window: { sink: 4, recent: 60 } }, GiB, 2 ** 20).configured;
  assert.equal([rings.tokens, rings.gpuBytes, rings.limit], [2 ** 20, 0, 'max context (1048576)']);
  // MagicPIG offload: the GPU holds nothing of the offloaded heads; a layer's host store (one
  // WebAssembly memory) stops it, and the refusal says so.
  const off = largestContext(c, { offload: true }, 16 * GiB, 2 ** 20).configured;
  assert.ok(off.tokens > 65536 && off.tokens < 2 ** 20, `offload: ${off.tokens}`);
  assert.not.throws(() => kvMemory(c, { offload: true, context: off.tokens }));
  assert.throws(() => kvMemory(c, { offload: true, context: off.tokens + 1 }), /offloaded store/);
  assert.match(off.limit, /^magicpig: layer 0's offloaded store .* more than one WebAssembly memory holds/);
  assert.throws(() => largestContext(c, {}, 0, 10), /gpuBudget must be a positive number of bytes \(got 0\)/);
  assert.throws(() => largestContext(c, {}, GiB, 0), /maxContext must be a positive integer \(got 0\)/);
});

test.run();
