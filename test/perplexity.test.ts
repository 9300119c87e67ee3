// DuetModel.perplexity against the float64 reference (full attention, and streaming heads whose ring
// wraps), its input errors, evaluate()'s perplexity rows, and the bundled model's accuracy per
// weight format with the bars measured on it (docs/weights.md "Accuracy per format").
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuetError, evaluate, loadModel } from '../src/node.ts';
import { negativeLogLikelihood } from '../src/api/model.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { fillerStyleFor, heldOutText } from '../src/eval/evaluate.ts';
import { referenceLogits } from './reference/model.ts';
import { writeCheckpoint } from './helpers/checkpoint.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const BUNDLED = `${ROOT}fixtures/duet-passkey`, PATTERN = `${ROOT}fixtures/duet-passkey-pattern`;

test('negativeLogLikelihood is -log softmax, also for large logits', () => {
  assert.ok(Math.abs(negativeLogLikelihood([0, 0, 0, 0], 2) - Math.log(4)) < 1e-12);
  // exp(1000) overflows without the max shift.
  const nll = negativeLogLikelihood([1000, 999, 0], 1);
  assert.ok(Math.abs(nll - (Math.log(1 + Math.exp(-1) + Math.exp(-1000)) + 1)) < 1e-12, String(nll));
});

test('perplexity matches the float64 reference: full attention, and streaming heads with a wrapped ring (GQA, 37 tokens)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'duet-ppl-'));
  await writeCheckpoint(dir, { seed: 7 });
  const ckpt = await loadCheckpoint(nodeModelFiles(dir));
  const ids = Array.from({ length: 37 }, (_, i) => (i * 89 + 5) % ckpt.config.vocabSize);
  const window = { sink: 2, recent: 5 };
  const { numLayers: L, numKvHeads: H } = ckpt.config;
  // Layer 0: one KV head of each kind; layer 1: all streaming.
  const kinds = [Array.from({ length: H }, (_, h) => h === 0), Array.from({ length: H }, () => false)].slice(0, L);
  const pattern = { alphas: kinds.map((row) => row.map((r) => (r ? 1 : 0))), ...window, config: {} };
  for (const heads of [{}, { pattern, window }] as const) {
    const model = await loadModel(dir, { device: 'cpu', threads: 1, ...heads });
    try {
      const r = await model.perplexity(ids);
      const logits = referenceLogits(ckpt.config, ckpt.weights, ids, 'pattern' in heads ? { kinds, ...window } : undefined);
      let nll = 0;
      for (let i = 0; i + 1 < ids.length; i++) nll += negativeLogLikelihood(logits[i], ids[i + 1]);
      const expected = nll / (ids.length - 1);
      assert.is(r.tokens, ids.length - 1);
      // f32 engine against float64: 1e-4 relative on the mean NLL.
      assert.ok(Math.abs(r.meanNll - expected) <= 1e-4 * Math.abs(expected), `${JSON.stringify(heads)}: ${r.meanNll} vs ${expected}`);
      assert.ok(Math.abs(r.perplexity - Math.exp(r.meanNll)) < 1e-12);
    } finally {
      await model.dispose();
    }
  }
});

test('perplexity refuses texts it cannot score, naming the field and the limit', async () => {
  const model = await loadModel(BUNDLED, { device: 'cpu', threads: 1, contextLength: 64 });
  try {
    const err = (p: Promise<unknown>) => p.then(() => 'no error', (e: DuetError) => `${e.field}: ${e.message}`);
    assert.match(await err(model.perplexity([5])), /^text: .*at least 2 tokens to score \(got 1\)/);
    assert.match(await err(model.perplexity(Array.from({ length: 65 }, () => 5))), /^text: .*65 tokens, more than the context length 64/);
    assert.match(await err(evaluate(model, { lengths: [32], depths: [0], samples: 1, perplexity: { length: 65 } })), /^perplexity\.length: .*from 2 to the context length 64 \(got 65\)/);
    const abort = new AbortController();
    abort.abort();
    assert.match(await err(model.perplexity(Array.from({ length: 8 }, () => 5), { signal: abort.signal })), /aborted/);
  } finally {
    await model.dispose();
  }
});

test("evaluate's perplexity rows are the model's perplexity on the held-out texts, per configuration", async () => {
  const model = await loadModel(BUNDLED, { device: 'cpu', threads: 1 });
  try {
    const r = await evaluate(model, { lengths: [128], depths: [0.5], samples: 1, perplexity: { length: 96, texts: 2 }, seed: 3 });
    assert.is(r.perplexity.length, 1);
    const row = r.perplexity[0];
    assert.equal([row.config, row.texts, row.length, row.tokens], ['current', 2, 96, 2 * 95]);
    const style = fillerStyleFor(model.tokenizer!);
    let nll = 0;
    for (let k = 0; k < 2; k++) {
      const ids = heldOutText(model.tokenizer!, 96, 0x7e57_0000 + 3 * 101 + k, style);
      assert.is(ids.length, 96);
      nll += (await model.perplexity(ids)).meanNll * 95;
    }
    assert.ok(Math.abs(row.meanNll - nll / 190) < 1e-12, `${row.meanNll} vs ${nll / 190}`);
  } finally {
    await model.dispose();
  }
});

// Measured on the bundled model (2026-12-04, docs/weights.md): held-out perplexity on 1,023 tokens,
// full / duo@0.5: f32 1.5981 / 1.6030, f16 1.5981 / 1.6030, q8_0 1.5979 / 1.6030, q4_0 1.6197 / 1.6222,
// q4_k 1.6039 / 1.6075; passkey 100% at 2,048 tokens for every format. The bars leave room for
// rounding differences between machines, not for a broken kernel (a wrong block scale costs far more).
const BARS = { f16: 1.001, q8_0: 1.001, q4_0: 1.02, q4_k: 1.01 } as const;

test('the bundled model per weight format: perplexity within the measured bar of f32, pass keys still recalled at 1,024 tokens', async () => {
  const perplexityOf = async (weights: 'f32' | keyof typeof BARS) => {
    const model = await loadModel(BUNDLED, { device: 'cpu', threads: 1, weights, pattern: PATTERN, sparsity: 0.5 });
    try {
      assert.is(model.info.weights.dtype, weights);
      const r = await evaluate(model, { tasks: ['passkey'], lengths: [1024], depths: [0, 0.5, 1], samples: 1, perplexity: { length: 512, texts: 1 } });
      assert.equal(r.rows.map((x) => x.accuracy), [1, 1, 1], `${weights}: passkey ${JSON.stringify(r.rows)}`);
      return r.perplexity[0].perplexity;
    } finally {
      await model.dispose();
    }
  };
  const base = await perplexityOf('f32');
  assert.ok(base > 1 && base < 1.7, `f32 perplexity ${base}`);
  for (const [format, bar] of Object.entries(BARS) as Array<[keyof typeof BARS, number]>) {
    const p = await perplexityOf(format);
    assert.ok(p <= base * bar, `${format}: perplexity ${p} vs f32 ${base} (bar ×${bar})`);
  }
});

test.run();
