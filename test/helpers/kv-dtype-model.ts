// The bundled model with a KV dtype on some placement: passkey at 1,024 tokens (full attention and
// the pattern at 0.5), and the KV bytes of a 40 + 8 token generation exactly as the dtype's rows,
// the memory plan and `duet memory` say. Shared by kv-dtype-model.test.ts (CPU) and gpu-kv-dtype.test.ts.
import * as assert from 'uvu/assert';
import { evaluate, kvMemory, loadModel, loadPattern, nodeModelFiles, type NodeModelOptions } from '../../src/node.ts';
import { kvRowBytes, type KvDType } from '../../src/backend/kv-dtype.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
export const BUNDLED = `${ROOT}fixtures/duet-passkey`;
const PATTERN = `${ROOT}fixtures/duet-passkey-pattern`;

/** depths: the full-attention passkey's (the pattern's run at the first two, or the one). */
export async function checkBundledKv(kvDtype: KvDType, options: NodeModelOptions, main: 'cpu' | 'gpu', depths = [0, 0.5, 1]): Promise<void> {
  const model = await loadModel(BUNDLED, { ...options, kvDtype });
  try {
    assert.is(model.info.kvDtype, kvDtype);
    const full = await evaluate(model, { tasks: ['passkey'], lengths: [1024], depths, samples: 1 });
    assert.equal(full.rows.map((r) => r.accuracy), depths.map(() => 1), `${kvDtype}, full attention: ${JSON.stringify(full.rows)}`);
    await model.setHeads({ pattern: nodeModelFiles(PATTERN), sparsity: 0.5 });
    const duo = await evaluate(model, { tasks: ['passkey'], lengths: [1024], depths: depths.length > 1 ? [0.25, 0.75] : depths, samples: 1 });
    assert.equal(duo.rows.map((r) => r.accuracy), duo.rows.map(() => 1), `${kvDtype}, pattern at 0.5: ${JSON.stringify(duo.rows)}`);

    const prompt = Array.from({ length: 40 }, (_, i) => 2 + (i % 40));
    for await (const _ of model.generate(prompt, { maxTokens: 8 })) { /* run it */ }
    const kv = model.stats().last!.kv;
    const { config } = model.info;
    const pattern = await loadPattern(nodeModelFiles(PATTERN), config.numLayers, config.numKvHeads);
    const projected = kvMemory(config, { pattern, sparsity: 0.5, context: 48, kvDtype });
    const retrievalHeads = projected.retrieval_heads, ring = Math.min(48, pattern.sink + pattern.recent);
    assert.is(kv.retrieval, retrievalHeads * 48 * 2 * kvRowBytes(config.headDim, kvDtype), `${kvDtype} full caches`);
    assert.is(kv.streaming, projected.streaming_heads * ring * 2 * kvRowBytes(config.headDim, kvDtype), `${kvDtype} rings`);
    assert.equal([kv.retrieval, kv.streaming], [projected.gpu_bytes, projected.cpu_bytes], `${kvDtype}: runtime = duet memory's projection`);
    // The full caches live on the main device, the rings on the CPU (split) or with them (cpu).
    assert.equal([kv.gpu, kv.cpu], main === 'gpu' ? [kv.retrieval, kv.streaming] : [0, kv.retrieval + kv.streaming]);
  } finally {
    await model.dispose();
  }
}

