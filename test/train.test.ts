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
import { Trainer, checkPlan, phaseAt, planLearningRate, planRopeTheta, stepSequences, type TrainPlan } from '../src/train/trainer.ts';
import { bundledPlan } from '../src/node.ts';
import { loadState, saveModel, saveState } from '../src/node/checkpoint-io.ts';
import { parameterCount } from '../src/train/model.ts';
import { BOS, CHARS, EOS, VOCAB_SIZE, encodeChars, tokenizerFiles } from '../src/train/vocab.ts';
import { Random } from '../src/tasks/random.ts';
import type { TaskKind } from '../src/tasks/tasks.ts';
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
    seed: 3, steps: 30, tokensPerStep: 400, tasks: ['passkey'], answerWeight: 1, skipFraction: 0.5,
    phases: [
      { from: 0, lengths: [140, 160], maxPosition: 0, schedule: { lr: 1e-2, warmup: 3, steps: 30, minLrFraction: 0.1 } },
      { from: 10, lengths: [150, 199], maxPosition: 600 },
    ],
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
  saveModel(dir, t.model.c, t.model.params, 1024, {});
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

test('phases: data and learning rate follow the phase of each step; a schedule restarts the rate', async () => {
  const plan = bundledPlan();
  assert.is(plan.steps, 7000);
  assert.equal(plan.phases.map((p) => p.from), [0, 2500, 3000, 4000, 5000, 6000]);
  assert.equal(phaseAt(plan, 2499).lengths, [128, 384]);
  assert.equal(phaseAt(plan, 2500).lengths, [256, 1024]);
  assert.equal(phaseAt(plan, 3999).maxPosition, 4096);
  assert.is(phaseAt(plan, 3999).tasks, undefined);
  assert.equal(phaseAt(plan, 4000).tasks, ['passkey', 'niah-single', 'niah-multikey', 'niah-multikey']);
  assert.equal(phaseAt(plan, 5000).tasks, ['passkey', 'niah-single', 'niah-multikey', 'niah-multikey', 'niah-multikey', 'niah-multikey']);
  // Stage 1: warm-up to 3e-3, cosine to 10 % at step 3,000; stage 2 warms up again to 1e-3; stage 3
  // to 2e-3 (multi-key half the sequences), then to 1e-3 (two thirds).
  assert.ok(Math.abs(planLearningRate(plan, 199) - 3e-3) < 1e-12);
  assert.ok(Math.abs(planLearningRate(plan, 2999) - 3e-4) < 1e-6);
  assert.ok(Math.abs(planLearningRate(plan, 3000) - 1e-3 / 50) < 1e-12);
  assert.ok(Math.abs(planLearningRate(plan, 3049) - 1e-3) < 1e-12);
  assert.ok(planLearningRate(plan, 3999) < 1.01e-4);
  assert.ok(Math.abs(planLearningRate(plan, 4099) - 2e-3) < 1e-12);
  assert.ok(planLearningRate(plan, 4999) < 2.01e-4);
  assert.ok(Math.abs(planLearningRate(plan, 5049) - 1e-3) < 1e-12);
  assert.ok(planLearningRate(plan, 6999) < 1.01e-4);
  // Stage 4 raises RoPE θ; the steps before keep the model's.
  assert.equal([planRopeTheta(plan, 0), planRopeTheta(plan, 5999), planRopeTheta(plan, 6000), planRopeTheta(plan, 6999)], [10000, 10000, 500000, 500000]);
  // --steps scales the phases: a 70-step plan has its phases at steps 0, 25, 30, 40, 50, 60.
  assert.equal(bundledPlan({ steps: 70 }).phases.map((p) => p.from), [0, 25, 30, 40, 50, 60]);
  // Sequences of step k come from k's phase.
  const t = await Trainer.create({ ...tinyPlan(), phases: [{ ...tinyPlan().phases[0], lengths: [140, 150] }, { from: 5, lengths: [190, 199], maxPosition: 0 }] });
  // (a sequence is ~35 tokens shorter than its nominal length: the prompt is sized length − 40)
  const longest4 = Math.max(...t.sequencesFor(4).map((s) => s.ids.length));
  const shortest5 = Math.min(...t.sequencesFor(5).map((s) => s.ids.length));
  assert.ok(longest4 < shortest5, `step 4 (140–150) up to ${longest4} tokens, step 5 (190–199) from ${shortest5}`);
});

test('a phase with its own task mix draws its sequences from that mix', () => {
  const text = (s: { ids: Int32Array }) => Array.from(s.ids.subarray(1), (id) => CHARS[id - 2] ?? '').join('');
  const plan: TrainPlan = {
    ...tinyPlan(), model: { ...tinyPlan().model, maxRows: 600 }, tokensPerStep: 4000, tasks: ['passkey'],
    phases: [{ ...tinyPlan().phases[0] }, { from: 5, lengths: [400, 600], maxPosition: 0, tasks: ['passkey', 'niah-multikey'] }],
  };
  const kinds = (step: number) => stepSequences(plan, step).map((s) => (text(s).includes('the pass key is') ? 'passkey' : (text(s).match(/the magic number for \w+ is \d+\./g) ?? []).length >= 4 ? 'niah-multikey' : 'other'));
  assert.ok(kinds(4).every((k) => k === 'passkey'), `step 4: ${kinds(4)}`);
  const mixed = [5, 6, 7].flatMap(kinds);
  assert.ok(mixed.includes('passkey') && mixed.includes('niah-multikey') && !mixed.includes('other'), `steps 5–7: ${mixed}`);
});

test('a phase that raises RoPE θ trains its steps exactly as a model built with that θ', async () => {
  const base = tinyPlan();
  const raised: TrainPlan = { ...base, phases: [base.phases[0], { ...base.phases[1], ropeTheta: 1e5 }] };
  const built: TrainPlan = { ...base, model: { ...base.model, ropeTheta: 1e5 } };
  const lossAt = async (plan: TrainPlan, step: number) => {
    const t = await Trainer.create(plan);
    const seqs = t.sequencesFor(step);
    t.model.grads.fill(0);
    return t.accumulate(seqs, seqs.map((_, i) => i));
  };
  // Step 12 lies in the raised phase, step 3 before it; the same initial weights in every trainer.
  assert.is(await lossAt(raised, 12), await lossAt(built, 12));
  assert.is(await lossAt(raised, 3), await lossAt(base, 3));
  assert.not.equal(await lossAt(raised, 12), await lossAt(base, 12));
  // A trainer that steps back before the phase returns to the model's θ.
  const t = await Trainer.create(raised);
  t.sequencesFor(12);
  t.sequencesFor(3);
  assert.is(t.model.invFreq[t.model.invFreq.length - 1], Math.fround(1 / 10000 ** ((2 * (base.model.headDim / 2 - 1)) / base.model.headDim)));
});

test('a malformed training plan is a clear error', () => {
  const bad = (phases: TrainPlan['phases']) => () => checkPlan({ ...tinyPlan(), phases });
  const s = tinyPlan().phases[0].schedule;
  assert.throws(bad([{ from: 1, lengths: [140, 160], maxPosition: 0, schedule: s }]), /first phase must start at step 0 and have a learning-rate schedule/);
  assert.throws(bad([{ from: 0, lengths: [140, 160], maxPosition: 0 }]), /first phase must start at step 0/);
  assert.throws(bad([{ from: 0, lengths: [140, 160], maxPosition: 0, schedule: s }, { from: 5, lengths: [140, 160], maxPosition: 0 }, { from: 4, lengths: [140, 160], maxPosition: 0 }]), /phase 2 starts at step 4, before phase 1 \(step 5\)/);
  assert.throws(bad([{ from: 0, lengths: [140, 300], maxPosition: 0, schedule: s }]), /phase 0 lengths 140–300 must be ordered and at most the model's 200 rows/);
  assert.throws(bad([{ from: 0, lengths: [140, 160], maxPosition: 0, schedule: s, tasks: ['niah-multikey'] }]), /niah-multikey sequences need 340 tokens, more than the model's 200 rows/);
  assert.throws(bad([{ from: 0, lengths: [140, 160], maxPosition: 0, schedule: s, tasks: [] }]), /phase 0 has no tasks/);
  assert.throws(bad([{ from: 0, lengths: [140, 160], maxPosition: 0, schedule: s, tasks: ['haystack' as TaskKind] }]), /phase 0: unknown task "haystack"/);
  assert.throws(bad([{ from: 0, lengths: [140, 160], maxPosition: 0, schedule: s, ropeTheta: 0 }]), /phase 0 ropeTheta 0 must be a number > 1/);
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
