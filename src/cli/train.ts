// `duet train`: trains the bundled long-context model (fixtures/duet-passkey) from a seed, with a
// progress bar (loss, step rate), checkpoints every --save-every steps and --resume.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadState, saveModel, saveState } from '../train/checkpoint-io.js';
import { parameterCount } from '../train/model.js';
import { Trainer, type TrainPlan } from '../train/trainer.js';
import { VOCAB_SIZE } from '../train/vocab.js';
import { TASK_KINDS, type TaskKind } from '../tasks/tasks.js';
import { intOption, numberOption } from './options.js';
import { Progress } from './progress.js';
import { availableParallelism } from 'node:os';
import { startTrainingHelpers } from '../node/train-pool.js';

/** The bundled model's recipe (see fixtures/duet-passkey/README.md). */
export function bundledPlan(overrides: Partial<TrainPlan> = {}): TrainPlan {
  const steps = overrides.steps ?? 3000;
  return {
    model: { vocab: VOCAB_SIZE, hidden: 64, layers: 3, heads: 4, kvHeads: 4, headDim: 16, intermediate: 176, eps: 1e-5, ropeTheta: 10000, maxRows: 1024 },
    seed: 1, steps, tokensPerStep: 8192,
    schedule: { lr: 3e-3, warmup: Math.min(200, Math.ceil(steps / 10)), steps, minLrFraction: 0.1 },
    tasks: ['passkey', 'niah-single', 'niah-multikey'], answerWeight: 2,
    curriculumSteps: Math.round((steps * 5) / 6), shortLengths: [128, 384], longLengths: [256, 1024],
    maxPosition: 2560, skipFraction: 0.5,
    ...overrides,
  };
}

const options = {
  out: { type: 'string' }, steps: { type: 'string' }, seed: { type: 'string' }, resume: { type: 'boolean' },
  'save-every': { type: 'string' }, 'tokens-per-step': { type: 'string' }, 'max-len': { type: 'string' },
  tasks: { type: 'string' }, lr: { type: 'string' }, layers: { type: 'string' }, hidden: { type: 'string' }, heads: { type: 'string' },
  'answer-weight': { type: 'string' },
  threads: { type: 'string' },
} as const;

export async function trainCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: argv, options, strict: true });
  if (!v.out) throw new Error('--out DIR is required');
  const base = bundledPlan({ steps: intOption(v.steps, '--steps', 1) });
  const tasks = v.tasks ? v.tasks.split(',') as TaskKind[] : base.tasks;
  for (const t of tasks) if (!TASK_KINDS.includes(t)) throw new Error(`--tasks: unknown task "${t}"`);
  const maxLen = intOption(v['max-len'], '--max-len', 64) ?? base.model.maxRows;
  const hidden = intOption(v.hidden, '--hidden', 8) ?? base.model.hidden;
  const heads = intOption(v.heads, '--heads', 1) ?? base.model.heads;
  if (hidden % heads !== 0 || (hidden / heads) % 2 !== 0) throw new Error(`--heads ${heads}: the head size hidden/heads must be an even integer (hidden ${hidden})`);
  const plan: TrainPlan = {
    ...base, tasks,
    seed: intOption(v.seed, '--seed') ?? base.seed,
    tokensPerStep: intOption(v['tokens-per-step'], '--tokens-per-step', 1) ?? base.tokensPerStep,
    schedule: { ...base.schedule, lr: numberOption(v.lr, '--lr') ?? base.schedule.lr },
    model: { ...base.model, layers: intOption(v.layers, '--layers', 1) ?? base.model.layers, hidden, heads, kvHeads: heads, headDim: hidden / heads, maxRows: maxLen },
    answerWeight: numberOption(v['answer-weight'], '--answer-weight') ?? base.answerWeight,
    shortLengths: [Math.min(base.shortLengths[0], maxLen), Math.min(base.shortLengths[1], maxLen)], longLengths: [Math.min(base.longLengths[0], maxLen), maxLen],
  };
  const saveEvery = intOption(v['save-every'], '--save-every', 1) ?? 250;
  const trainer = await Trainer.create(plan);
  const nParams = parameterCount(plan.model);
  const stateDir = join(v.out, 'training');
  if (v.resume) {
    const s = loadState(stateDir, nParams);
    if (!s) throw new Error(`--resume: no ${join(stateDir, 'training_state.json')}`);
    trainer.restore(s);
    process.stderr.write(`duet: resumed at step ${s.step}\n`);
  }
  process.stderr.write(`duet: training ${nParams} parameters (${plan.model.layers} layers × ${plan.model.kvHeads} KV heads, d ${plan.model.hidden}) for ${plan.steps} steps of ~${plan.tokensPerStep} tokens\n`);
  const progress = new Progress('train');
  const save = () => {
    const meta = { duet_steps: String(trainer.opt.step), duet_seed: String(plan.seed) };
    saveModel(v.out!, trainer.model, 4096, meta);
    mkdirSync(stateDir, { recursive: true });
    saveState(stateDir, trainer.state(), { seed: plan.seed, steps: plan.steps, plan });
  };
  // Default one thread: on the 2-vCPU machines measured so far, two replicas ran slower than one
  // (the SIMD kernels contend for the same core resources); --threads N opts in.
  const threads = Math.min(intOption(v.threads, '--threads', 1) ?? 1, availableParallelism());
  const pool = threads > 1 ? await startTrainingHelpers(plan, threads - 1) : null;
  if (pool) process.stderr.write(`duet: ${threads} threads (data-parallel replicas)\n`);
  let ema = 0;
  const startStep = trainer.opt.step;
  while (trainer.opt.step < plan.steps) {
    const r = pool ? await trainer.trainStepWith(pool.helpers) : trainer.trainStep();
    ema = ema ? 0.95 * ema + 0.05 * r.loss : r.loss;
    progress.update(r.step - startStep, plan.steps - startStep, `step ${r.step}/${plan.steps} loss ${ema.toFixed(3)} lr ${r.lr.toExponential(1)} |g| ${r.gradNorm.toFixed(2)} ${(r.tokens / r.ms * 1000).toFixed(0)} tok/s`);
    if (r.step % saveEvery === 0 || r.step === plan.steps) save();
  }
  await pool?.stop();
  process.stderr.write(`duet: saved ${v.out} (final loss ${ema.toFixed(4)})\n`);
  return 0;
}
