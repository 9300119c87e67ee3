// The bundled model with f16 and int8 full KV caches on the CPU: it still recalls the pass key at
// 1,024 tokens, and the KV bytes the generation reports are exactly the dtype's rows (the memory
// plan's, and `duet memory`'s projection, at the same context). The GPU runs the same in
// gpu-kv-dtype.test.ts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { evaluate, kvMemory, loadModel, loadPattern, nodeModelFiles, type NodeModelOptions } from '../src/node.ts';
import { kvRowBytes, type KvDType } from '../src/engine/kv-dtype.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const BUNDLED = `${ROOT}fixtures/duet-passkey`, PATTERN = `${ROOT}fixtures/duet-passkey-pattern`;

/** Passkey at 1,024 tokens (3 depths) and the KV bytes of a 40 + 8 token generation, with the pattern at 0.5. */
export async function checkBundledKv(kvDtype: KvDType, options: NodeModelOptions): Promise<void> {
  const model = await loadModel(BUNDLED, { ...options, kvDtype });
  try {
    assert.is(model.info.kvDtype, kvDtype);
    const full = await evaluate(model, { tasks: ['passkey'], lengths: [1024], depths: [0, 0.5, 1], samples: 1 });
    assert.equal(full.rows.map((r) => r.accuracy), [1, 1, 1], `${kvDtype}, full attention: ${JSON.stringify(full.rows)}`);
    await model.setHeads({ pattern: nodeModelFiles(PATTERN), sparsity: 0.5 });
    const duo = await evaluate(model, { tasks: ['passkey'], lengths: [1024], depths: [0.25, 0.75], samples: 1 });
    assert.equal(duo.rows.map((r) => r.accuracy), [1, 1], `${kvDtype}, pattern at 0.5: ${JSON.stringify(duo.rows)}`);

    const prompt = Array.from({ length: 40 }, (_, i) => 2 + (i % 40));
    for await (const _ of model.generate(prompt, { maxTokens: 8 })) { /* run it */ }
    const kv = model.stats().last!.kv;
    const { config } = model.info;
    const pattern = await loadPattern(nodeModelFiles(PATTERN), config.numLayers, config.numKvHeads);
    const projected = kvMemory(config, { pattern, sparsity: 0.5, context: 48, kvDtype });
    const retrievalHeads = projected.retrieval_heads, ring = Math.min(48, pattern.sink + pattern.recent);
    assert.is(kv.retrieval, retrievalHeads * 48 * 2 * kvRowBytes(config.headDim, kvDtype), `${kvDtype} full caches`);
    assert.is(kv.streaming, projected.streaming_heads * ring * 2 * 4 * config.headDim, 'f32 rings');
    assert.equal([kv.retrieval, kv.streaming], [projected.gpu_bytes, projected.cpu_bytes], `${kvDtype}: runtime = duet memory's projection`);
  } finally {
    await model.dispose();
  }
}

for (const kvDtype of ['f16', 'int8'] as const) {
  test(`bundled model on the CPU with ${kvDtype} full KV caches: passkey at 1,024 tokens, exact KV bytes`, async () => {
    await checkBundledKv(kvDtype, { device: 'cpu', threads: 1 });
  });
}

test('a bad kvDtype is refused before loading, naming the option', async () => {
  const error = await loadModel(BUNDLED, { device: 'cpu', kvDtype: 'q4_0' as KvDType }).then(() => null, (e: Error & { field?: string }) => e);
  assert.is(error?.field, 'kvDtype');
  assert.match(String(error?.message), /kvDtype must be one of f32, f16, int8 \(got "q4_0"\)/);
});

test.run();
