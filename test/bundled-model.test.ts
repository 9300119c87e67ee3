// The bundled model (fixtures/duet-passkey) does what its model card says: full attention recalls
// pass keys up to 2,048 tokens at every depth, its committed pattern keeps that with half of the KV
// heads streaming, streaming-only attention cannot, it finds the first of several multi-key needles, and
// it has ≥ 12 KV heads to identify.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { evaluate, loadModel, loadPattern, nodeModelFiles, type EvalConfig } from '../src/node.ts';

const DIR = new URL('../fixtures/duet-passkey', import.meta.url).pathname;

type Heads = (layers: number, kvHeads: number) => EvalConfig | Promise<EvalConfig>;

/** Evaluation rows of the bundled model (the public evaluate()), one head configuration after another on the same prompts. */
async function evaluateBundled(heads: Heads[], tasks: Array<'passkey' | 'niah-multikey'>, lengths: number[], depths: number[], samples: number, seed: number) {
  const model = await loadModel(DIR, { device: 'cpu' });
  try {
    const { config } = model.info;
    const configs = await Promise.all(heads.map((h) => h(config.numLayers, config.numKvHeads)));
    const { rows } = await evaluate(model, { configs, tasks, lengths, depths, samples, seed, restoreHeads: false });
    return { rows, config };
  } finally {
    await model.dispose();
  }
}

const fullAttention: Heads = () => ({ name: 'full' });

const meanAccuracy = (rows: Array<{ accuracy: number }>) => rows.reduce((a, r) => a + r.accuracy, 0) / rows.length;

async function needleAccuracy(heads: Heads, lengths: number[], depths: number[], samples = 2, seed = 7, task: 'passkey' | 'niah-multikey' = 'passkey') {
  const { rows, config } = await evaluateBundled([heads], [task], lengths, depths, samples, seed);
  return { rows, mean: meanAccuracy(rows), config };
}

/** The committed pattern at sparsity 0.5, with its own sink and recent window. */
async function bundledPatternAtHalf(L: number, H: number): Promise<EvalConfig> {
  const pattern = await loadPattern(nodeModelFiles(new URL('../fixtures/duet-passkey-pattern', import.meta.url).pathname), L, H);
  return { name: 'pattern@0.5', pattern, sparsity: 0.5 };
}

const cells = (rows: Array<{ length: number; depth: number; accuracy: number }>) => JSON.stringify(rows.map((r) => [r.length, r.depth, r.accuracy]));

// Issue 4's bar, ≥ 95% exact match up to 2,048 tokens at every depth, on the model card's grid
// (`duet eval` defaults: seed 0, depths 0–1 by 0.25, 4 samples; 60 prompts, at most 3 misses).
// The model's rate is ~97–98% (440 prompts, 10 per cell: every length ≥ 97%); on other 36-prompt
// grids it lands between 94% and 100%.
test('bundled model, full attention: ≥ 95% passkey exact match at 512, 1024, 2048 tokens, 5 depths', async () => {
  const { rows, mean, config } = await needleAccuracy(fullAttention, [512, 1024, 2048], [0, 0.25, 0.5, 0.75, 1], 4, 0);
  assert.ok(config.numLayers * config.numKvHeads >= 12, 'the bundled model needs at least 12 KV heads');
  assert.ok(mean >= 0.95, `full-attention passkey accuracy ${(mean * 100).toFixed(0)}%: ${cells(rows)}`);
});

test('bundled model, its pattern at 50% streaming (split runtime on the CPU): ≥ 90% passkey at 1024 and 2048 tokens', async () => {
  const { rows, mean } = await needleAccuracy(bundledPatternAtHalf, [1024, 2048], [0.25, 0.5, 0.75], 2);
  assert.ok(mean >= 0.9, `pattern@0.5 passkey accuracy ${(mean * 100).toFixed(0)}%: ${cells(rows)}`);
});

test('bundled model, every head streaming (sink 16, recent 64): ≤ 20% when the needle is outside the window', async () => {
  const window = { sink: 16, recent: 64 };
  const { mean } = await needleAccuracy(() => ({ name: 'streaming-only', streamingOnly: true, window }), [1024], [0.25, 0.5, 0.75]);
  assert.ok(mean <= 0.2, `streaming-only passkey accuracy ${(mean * 100).toFixed(0)}%: the model should need its retrieval heads`);
});

// The model card's multi-key result: at 2,048 tokens the model finds the asked one of four magic
// numbers when its needle comes first in the haystack (70% of 20 prompts, seed 11).
test('bundled model, multi-key needles at 2048 tokens: ≥ 50% when the asked needle comes first', async () => {
  const { rows, mean } = await needleAccuracy(fullAttention, [2048], [0], 20, 11, 'niah-multikey');
  assert.ok(mean >= 0.5, `multi-key accuracy at depth 0 ${(mean * 100).toFixed(0)}%: ${cells(rows)}`);
});

// Issue 5's acceptance, as in the README: at the longest evaluated context (2,048 tokens), the
// committed DuoAttention pattern with half of the KV heads streaming keeps ≥ 95% of full attention's
// passkey and multi-key accuracy, on the same 100 prompts per task (20 samples × 5 depths, seed 11).
test('bundled model, its pattern at 50% streaming keeps ≥ 95% of full attention\'s passkey and multi-key accuracy at 2048 tokens', async () => {
  const { rows } = await evaluateBundled([fullAttention, bundledPatternAtHalf],
    ['passkey', 'niah-multikey'], [2048], [0, 0.25, 0.5, 0.75, 1], 20, 11);
  const mean = (config: string, task: string) => meanAccuracy(rows.filter((r) => r.config === config && r.task === task));
  for (const task of ['passkey', 'niah-multikey']) {
    const full = mean('full', task), duo = mean('pattern@0.5', task);
    assert.ok(full > 0.2 && duo >= 0.95 * full, `${task}: duo@0.5 ${(duo * 100).toFixed(0)}% vs full ${(full * 100).toFixed(0)}%`);
  }
});

test.run();
