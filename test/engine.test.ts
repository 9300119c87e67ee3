// The engine's logits against the float64 reference forward, on the CPU and the GPU, on checkpoints
// that hit the edge cases: odd sizes, head_dim ≠ hidden/heads, GQA groups 1/2/3, qwen2 biases, tied
// embeddings, llama3 rope scaling, F16/BF16, sharded files.
// Tolerance: |Δlogit| ≤ 2e-3·(1+|ref|) (f32 kernels through 2–3 layers vs float64).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { referenceLogits } from './reference/model.ts';
import { assertClose } from './helpers/conformance.ts';
import { makeEngine, sharedGpu, tempCheckpoint } from './helpers/engine.ts';
import { gpuTests } from './helpers/gpu-skip.ts';

const GPU = await sharedGpu();
import type { CheckpointSpec } from './helpers/checkpoint.ts';

const TOL = 2e-3;

const CASES: Array<[string, Partial<CheckpointSpec>]> = [
  ['llama F32, hidden 72, head_dim 24 ≠ 72/6, GQA 6/2, vocab 301', { modelType: 'llama', hidden: 72, intermediate: 100, layers: 2, heads: 6, kvHeads: 2, headDim: 24, vocab: 301, dtype: 'F32', seed: 1 }],
  ['qwen2 BF16 sharded, biases, tied embeddings, GQA 4/2', { modelType: 'qwen2', hidden: 64, intermediate: 96, layers: 2, heads: 4, kvHeads: 2, vocab: 257, dtype: 'BF16', shards: 3, tieEmbeddings: true, attentionBias: true, seed: 2 }],
  ['llama F16, llama3 rope scaling, MHA 4/4, 3 layers', { modelType: 'llama', hidden: 48, intermediate: 80, layers: 3, heads: 4, kvHeads: 4, vocab: 199, dtype: 'F16', seed: 3,
    ropeTheta: 500000, ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 } }],
  ['mistral F32, GQA 8/1', { modelType: 'mistral', hidden: 64, intermediate: 64, layers: 2, heads: 8, kvHeads: 1, vocab: 128, dtype: 'F32', seed: 4 }],
];

const PROMPT = [5, 17, 3, 99, 42, 7, 0, 11, 23, 64, 8, 1, 90];

for (const [label, spec] of CASES) {
  const test = suite(`engine vs reference: ${label}`);
  let ckpt: Awaited<ReturnType<typeof tempCheckpoint>>;
  let reference: Float64Array[];
  const decodeIds = [31, 2, 77, 4];
  test.before(async () => {
    ckpt = await tempCheckpoint(spec);
    reference = referenceLogits(ckpt.config, ckpt.weights, [...PROMPT, ...decodeIds]);
  });

  for (const device of ['cpu', 'gpu'] as const) {
    (device === 'gpu' ? gpuTests(test, GPU.gpu !== null, GPU.reason) : test)(`${device}: prefill logits, then decode steps`, async () => {
      const engine = await makeEngine(ckpt, device === 'cpu' ? 'cpu' : 'split');
      try {
        const session = engine.newSession(64, 64);
        assertClose(await session.forward(PROMPT), reference[PROMPT.length - 1], 'prefill', TOL);
        for (let i = 0; i < decodeIds.length; i++) {
          assertClose(await session.forward([decodeIds[i]]), reference[PROMPT.length + i], `decode step ${i}`, TOL);
        }
        session.dispose();
        // A prefill of n tokens gives the same last logits as n single-token steps.
        const stepwise = engine.newSession(64, 1);
        let logits: Float32Array | null = null;
        for (const id of PROMPT) logits = await stepwise.forward([id]);
        assertClose(logits!, reference[PROMPT.length - 1], 'one token at a time', TOL);
        stepwise.dispose();
      } finally {
        engine.dispose();
      }
    });
  }
  test.run();
}

const gen = suite('greedy generation');
/** Greedy tokens of CASES[0]'s checkpoint on `placement`. */
async function greedyTokens(ckpt: Awaited<ReturnType<typeof tempCheckpoint>>, placement: 'cpu' | 'split'): Promise<number[]> {
  const engine = await makeEngine(ckpt, placement);
  try {
    const r = await engine.generate(PROMPT, { maxTokens: 24 });
    assert.is(r.tokens.length, 24);
    assert.is(r.stopReason, 'max_tokens');
    return r.tokens;
  } finally { engine.dispose(); }
}

gen('is deterministic and follows the reference argmax (f32 weights, cpu)', async () => {
  const ckpt = await tempCheckpoint(CASES[0][1]);
  const outputs = [await greedyTokens(ckpt, 'cpu'), await greedyTokens(ckpt, 'cpu')];
  assert.equal(outputs[1], outputs[0]);
  // Greedy really follows the reference's argmax at every step.
  const ref = referenceLogits(ckpt.config, ckpt.weights, [...PROMPT, ...outputs[0].slice(0, -1)]);
  outputs[0].forEach((id, i) => {
    const row = ref[PROMPT.length - 1 + i];
    const best = row.indexOf(Math.max(...row));
    const margin = row[best] - row[id];
    assert.ok(id === best || margin < 1e-3, `step ${i}: token ${id}, reference argmax ${best}`);
  });
});

gpuTests(gen, GPU.gpu !== null, GPU.reason)('is identical on the split placement and the CPU (f32 weights)', async () => {
  const ckpt = await tempCheckpoint(CASES[0][1]);
  assert.equal(await greedyTokens(ckpt, 'split'), await greedyTokens(ckpt, 'cpu'));
});

gen('stops on eos and samples reproducibly with a seed', async () => {
  const ckpt = await tempCheckpoint(CASES[0][1]);
  const engine = await makeEngine(ckpt, 'cpu');
  try {
    const greedy = await engine.generate(PROMPT, { maxTokens: 8 });
    const eos = greedy.tokens[3];
    const stopped = await engine.generate(PROMPT, { maxTokens: 8, stopIds: [eos] });
    assert.is(stopped.stopReason, 'eos');
    assert.equal(stopped.tokens, greedy.tokens.slice(0, greedy.tokens.indexOf(eos) + 1));
    const a = await engine.generate(PROMPT, { maxTokens: 12, temperature: 1.5, topK: 50, topP: 0.95, seed: 7 });
    const b = await engine.generate(PROMPT, { maxTokens: 12, temperature: 1.5, topK: 50, topP: 0.95, seed: 7 });
    const c = await engine.generate(PROMPT, { maxTokens: 12, temperature: 1.5, topK: 50, topP: 0.95, seed: 8 });
    assert.equal(a.tokens, b.tokens);
    assert.not.equal(a.tokens, c.tokens);
    const tooLong = new Array(ckpt.config.maxPositionEmbeddings + 1).fill(1);
    const err = await engine.generate(tooLong).then(() => null, (e: Error) => e);
    assert.match(err?.message ?? '', /^prompt has \d+ tokens, more than the model allows \(max_position_embeddings \d+\)/);
  } finally { engine.dispose(); }
});
gen.run();
