// Training machinery: the character tokenizer round-trips through @huggingface/tokenizers, training
// data is deterministic with the answer weighted, a short run on a tiny config lowers the loss, a
// resumed run continues exactly, and the saved directory loads as a checkpoint.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TextTokenizer } from '../src/model/tokenizer.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { makeSequence } from '../src/train/data.ts';
import { Trainer, type TrainPlan } from '../src/train/trainer.ts';
import { loadState, saveModel, saveState } from '../src/train/checkpoint-io.ts';
import { parameterCount } from '../src/train/model.ts';
import { BOS, EOS, VOCAB_SIZE, encodeChars, tokenizerFiles } from '../src/train/vocab.ts';
import { Random } from '../src/tasks/random.ts';
import { startTrainingHelpers } from '../src/node/train-pool.ts';

test('the character tokenizer.json round-trips task text', () => {
  const { tokenizer, tokenizerConfig } = tokenizerFiles();
  const tok = new TextTokenizer(tokenizer, tokenizerConfig as Record<string, unknown>);
  const text = 'the pass key is 48213. remember it. var abcd = efgh.\nwhat? a, b: c';
  const ids = tok.encode(text);
  assert.equal(ids, [BOS, ...encodeChars(text)]);
  assert.is(tok.decode(ids), text);
  assert.throws(() => encodeChars('Q'), /not in the bundled model's vocabulary/);
});

test('training sequences: deterministic, answer rows weighted, eos last, PoSE jump only forward', () => {
  const o = { tasks: ['passkey', 'vt'] as const, answerWeight: 1, lengths: [200, 400] as [number, number], maxPosition: 2000, skipFraction: 1 };
  const a = makeSequence(new Random(9), { ...o, tasks: [...o.tasks] });
  const b = makeSequence(new Random(9), { ...o, tasks: [...o.tasks] });
  assert.equal(a, b);
  const T = a.ids.length;
  assert.is(a.targets[T - 1], EOS);
  assert.is(a.ids[0], BOS);
  for (let t = 1; t < T; t++) assert.is(a.ids[t], a.targets[t - 1]);
  const total = a.weights.reduce((x, y) => x + y, 0);
  assert.ok(Math.abs(total - 2) < 1e-4, `weights sum to 1 (tokens) + 1 (answer): ${total}`);
  assert.ok(a.weights[T - 1] > a.weights[0] * 2, 'answer rows weigh more');
  let jumps = 0;
  for (let t = 1; t < T; t++) { const d = a.positions[t] - a.positions[t - 1]; assert.ok(d >= 1); if (d > 1) jumps++; }
  assert.is(jumps, 1);
  assert.ok(a.positions[T - 1] < 2000);
});

function tinyPlan(): TrainPlan {
  return {
    model: { vocab: VOCAB_SIZE, hidden: 16, layers: 1, heads: 2, kvHeads: 1, headDim: 8, intermediate: 24, eps: 1e-5, ropeTheta: 10000, maxRows: 200 },
    seed: 3, steps: 30, tokensPerStep: 400, schedule: { lr: 1e-2, warmup: 3, steps: 30, minLrFraction: 0.1 },
    tasks: ['passkey'], answerWeight: 1, curriculumSteps: 10, shortLengths: [140, 160], longLengths: [150, 199],
    maxPosition: 600, skipFraction: 0.5,
  };
}

test('a short training run lowers the loss; a resumed run continues exactly; the result loads', async () => {
  const plan = tinyPlan();
  const t = await Trainer.create(plan);
  const losses: number[] = [];
  for (let i = 0; i < 30; i++) losses.push(t.trainStep().loss);
  const first = (losses[0] + losses[1] + losses[2]) / 3, last = (losses[27] + losses[28] + losses[29]) / 3;
  assert.ok(last < first * 0.75, `loss ${first.toFixed(3)} → ${last.toFixed(3)}`);

  // Save at step 30, train 5 more; a fresh trainer restored from the save must match.
  const dir = mkdtempSync(join(tmpdir(), 'duet-train-'));
  saveState(dir, t.state(), {});
  saveModel(dir, t.model, 1024, {});
  plan.steps = 40;
  const more = [0, 1, 2, 3, 4].map(() => t.trainStep().loss);
  const u = await Trainer.create({ ...tinyPlan(), steps: 40 });
  u.restore(loadState(dir, parameterCount(plan.model))!);
  const again = [0, 1, 2, 3, 4].map(() => u.trainStep().loss);
  assert.equal(again, more);

  const ckpt = await loadCheckpoint(nodeModelFiles(dir));
  assert.is(ckpt.config.numLayers, 1);
  assert.is(ckpt.config.numKvHeads, 1);
  assert.ok(ckpt.tokenizer);
});

test('data-parallel training (a worker-thread replica) takes the same steps as one thread', async () => {
  const plan = { ...tinyPlan(), tokensPerStep: 800 };
  const single = await Trainer.create(plan);
  const parallel = await Trainer.create(plan);
  const pool = await startTrainingHelpers(plan, 1);
  try {
    for (let i = 0; i < 3; i++) {
      const a = single.trainStep();
      const b = await parallel.trainStepWith(pool.helpers);
      assert.ok(Math.abs(a.loss - b.loss) < 1e-5 * a.loss, `step ${i}: loss ${a.loss} vs ${b.loss}`);
      assert.is(a.tokens, b.tokens);
    }
    let worst = 0;
    single.model.params.forEach((x, i) => { worst = Math.max(worst, Math.abs(x - parallel.model.params[i])); });
    assert.ok(worst < 1e-4, `parameters differ by ${worst}`);
  } finally {
    await pool.stop();
  }
});

test('resume: a missing, mismatched or truncated training state is a clear error', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'duet-state-'));
  assert.is(loadState(dir, 10), null);
  const t = await Trainer.create(tinyPlan());
  saveState(dir, t.state(), {});
  const n = parameterCount(tinyPlan().model);
  assert.throws(() => loadState(dir, n + 1), /training_state\.json: \d+ parameters, the model being trained has/);
  const bin = join(dir, 'optimizer.bin');
  writeFileSync(bin, readFileSync(bin).subarray(0, 100));
  assert.throws(() => loadState(dir, n), /optimizer\.bin: 100 bytes, expected \d+ \(truncated\?\)/);
});

test.run();
