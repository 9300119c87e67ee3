// `duet train`: trains the bundled long-context model (fixtures/duet-passkey) from a seed, with a
// progress bar (loss, step rate), checkpoints every --save-every steps and --resume.
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadCheckpointState, saveCheckpoint } from '../train/checkpoint-io.js';
import { assertOutputFolder } from '../node/output-folder.js';
import { GpuTrainer } from '../train/gpu-trainer.js';
import { parameterCount } from '../train/model.js';
import { Trainer, assertFiniteStep, planRopeTheta, type StepReport, type TrainPlan, type TrainerState } from '../train/trainer.js';
import { VOCAB_SIZE } from '../train/vocab.js';
import { TASK_KINDS, type TaskKind } from '../tasks/tasks.js';
import { intOption, numberOption, trainingDevice } from './options.js';
import { Progress } from './progress.js';
import { availableParallelism } from 'node:os';
import { startTrainingHelpers } from '../node/train-pool.js';

/**
 * The bundled model's recipe (see fixtures/duet-passkey/README.md), for `steps` (default 7,000)
 * scaled proportionally. Stage 1 (steps 0–3,000, one cosine schedule): 128–384 tokens, from 2,500 on
 * 256–1,024 with PoSE jumps to 2,560 positions. Stage 2 (3,000–4,000, a fresh, lower schedule):
 * 256–2,048 tokens, jumps to 4,096, a fifth of the needles right at the start or end of the haystack.
 * Stage 3 (4,000–6,000, two more restarts): the same lengths with half, then two thirds of the
 * sequences multi-key needles. Stage 4 (6,000–7,000): RoPE θ 10,000 → 500,000. Steps before a stage
 * get the same data and learning rate as in the shorter recipes that stopped there, so a run can
 * resume from a checkpoint of one of them.
 */
export function bundledPlan(overrides: Partial<TrainPlan> = {}): TrainPlan {
  const steps = overrides.steps ?? 7000;
  // Phase starts are written for the full 7,000 steps and scale with --steps.
  const at = (k: number) => Math.round((k * steps) / 7000);
  // Passkey and niah-single once each, multi-key n times (a kind listed n times is drawn n times as often).
  const multikeyMix = (n: number): TaskKind[] => ['passkey', 'niah-single', ...Array<TaskKind>(n).fill('niah-multikey')];
  // A schedule from step `from` to `to`: warm-up, then cosine to 10 % of lr.
  const restart = (lr: number, warmup: number, from: number, to: number) => ({ lr, warmup, steps: to - from, minLrFraction: 0.1 });
  // Stages 2–4 train on long contexts with position jumps and a fifth of the needles at the edges.
  const long = { lengths: [256, 2048] as [number, number], maxPosition: 4096, edgeDepths: 0.2 };
  const shortWarmup = Math.min(50, Math.ceil(steps / 80));
  return {
    model: { vocab: VOCAB_SIZE, hidden: 64, layers: 3, heads: 4, kvHeads: 4, headDim: 16, intermediate: 176, eps: 1e-5, ropeTheta: 10000, maxRows: 2048 },
    seed: 1, tokensPerStep: 8192,
    tasks: ['passkey', 'niah-single', 'niah-multikey'], answerWeight: 2, skipFraction: 0.5,
    phases: [
      // Stage 1: short, then medium lengths with position jumps.
      { from: 0, lengths: [128, 384], maxPosition: 0, schedule: restart(3e-3, Math.min(200, Math.ceil(steps / 20)), 0, at(3000)) },
      { from: at(2500), lengths: [256, 1024], maxPosition: 2560 },
      // Stage 2: long contexts, needles at the edges too.
      { from: at(3000), ...long, schedule: restart(1e-3, shortWarmup, at(3000), at(4000)) },
      // Stage 3: half, then two thirds of the sequences multi-key needles.
      { from: at(4000), ...long, tasks: multikeyMix(2), schedule: restart(2e-3, Math.min(100, Math.ceil(steps / 50)), at(4000), at(5000)) },
      { from: at(5000), ...long, tasks: multikeyMix(4), schedule: restart(1e-3, shortWarmup, at(5000), at(6000)) },
      // Stage 4: RoPE θ raised to 500,000 (Llama 3's), so that more rotation pairs turn slowly enough
      // for matching a key over 2,048 tokens; same data as the last phase.
      { from: at(6000), ...long, tasks: multikeyMix(4), ropeTheta: 500000, schedule: restart(1e-3, shortWarmup, at(6000), steps) },
    ],
    ...overrides, steps,
  };
}

const options = {
  out: { type: 'string' }, steps: { type: 'string' }, seed: { type: 'string' }, resume: { type: 'boolean' }, force: { type: 'boolean' },
  'save-every': { type: 'string' }, 'tokens-per-step': { type: 'string' }, 'max-len': { type: 'string' },
  tasks: { type: 'string' }, lr: { type: 'string' }, layers: { type: 'string' }, hidden: { type: 'string' }, heads: { type: 'string' },
  'answer-weight': { type: 'string' },
  threads: { type: 'string' }, until: { type: 'string' }, device: { type: 'string' },
} as const;

/** A training run on one device, as the loop below drives it. */
interface TrainRun {
  step(): number;
  trainStep(): Promise<StepReport>;
  state(): Promise<TrainerState>;
  restore(s: TrainerState): void;
  stop(): Promise<void>;
}

async function cpuRun(plan: TrainPlan, threads: number): Promise<TrainRun> {
  const trainer = await Trainer.create(plan);
  const pool = threads > 1 ? await startTrainingHelpers(plan, threads - 1) : null;
  return {
    step: () => trainer.opt.step,
    trainStep: async () => (pool ? trainer.trainStepWith(pool.helpers) : trainer.trainStep()),
    state: async () => trainer.state(),
    restore: (s) => trainer.restore(s),
    stop: async () => { await pool?.stop(); },
  };
}

function gpuRun(trainer: GpuTrainer): TrainRun {
  return {
    step: () => trainer.opt.step,
    trainStep: () => trainer.trainStep(),
    state: () => trainer.state(),
    restore: (s) => trainer.restore(s),
    stop: async () => { trainer.kernels.ctx.destroy(); },
  };
}

export async function trainCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: argv, options, strict: true });
  if (!v.out) throw new Error('--out DIR is required');
  if (v.resume && v.force) throw new Error('--resume continues the checkpoint in --out, --force replaces it: give one');
  // A folder holding anything (a trained model above all) is only replaced when asked to.
  if (!v.resume) assertOutputFolder(v.out, { force: v.force, what: 'the trained model', hint: 'add --resume to continue its training or --force to replace it' });
  const base = bundledPlan({ steps: intOption(v.steps, '--steps', 1) });
  const tasks = v.tasks ? v.tasks.split(',') as TaskKind[] : base.tasks;
  for (const t of tasks) if (!TASK_KINDS.includes(t)) throw new Error(`--tasks: unknown task "${t}"`);
  const maxLen = intOption(v['max-len'], '--max-len', 64) ?? base.model.maxRows;
  const hidden = intOption(v.hidden, '--hidden', 8) ?? base.model.hidden;
  const heads = intOption(v.heads, '--heads', 1) ?? base.model.heads;
  if (hidden % heads !== 0 || (hidden / heads) % 2 !== 0) throw new Error(`--heads ${heads}: the head size hidden/heads must be an even integer (hidden ${hidden})`);
  const lr = numberOption(v.lr, '--lr');
  const plan: TrainPlan = {
    ...base, tasks,
    seed: intOption(v.seed, '--seed') ?? base.seed,
    tokensPerStep: intOption(v['tokens-per-step'], '--tokens-per-step', 1) ?? base.tokensPerStep,
    model: { ...base.model, layers: intOption(v.layers, '--layers', 1) ?? base.model.layers, hidden, heads, kvHeads: heads, headDim: hidden / heads, maxRows: maxLen },
    answerWeight: numberOption(v['answer-weight'], '--answer-weight') ?? base.answerWeight,
    // --tasks replaces every phase's mix; --max-len caps every phase's lengths; --lr scales every
    // schedule's peak alike.
    phases: base.phases.map((ph) => ({
      ...ph, tasks: v.tasks ? undefined : ph.tasks, lengths: [Math.min(ph.lengths[0], maxLen), Math.min(ph.lengths[1], maxLen)],
      schedule: ph.schedule && lr !== undefined ? { ...ph.schedule, lr: (ph.schedule.lr * lr) / base.phases[0].schedule!.lr } : ph.schedule,
    })),
  };
  const saveEvery = intOption(v['save-every'], '--save-every', 1) ?? 250;
  // --until stops early (the plan, and so the data and schedule of every step, stay those of --steps).
  const until = Math.min(intOption(v.until, '--until', 1) ?? plan.steps, plan.steps);
  const gpu = await trainingDevice(v.device, (m) => process.stderr.write(`duet: ${m}\n`));
  // Data-parallel replicas on the CPU, one per thread (default every core). The gradient sum's order
  // depends on the count, so runs agree bit for bit only at the same --threads.
  const threads = gpu ? 1 : Math.min(intOption(v.threads, '--threads', 1) ?? availableParallelism(), availableParallelism());
  const run = gpu ? gpuRun(GpuTrainer.create(plan, gpu)) : await cpuRun(plan, threads);
  const nParams = parameterCount(plan.model);
  let resumedAt: number | null = null;
  if (v.resume) {
    const s = loadCheckpointState(v.out, nParams, plan.model);
    if (!s) throw new Error(`--resume: no ${join(v.out, 'training', 'training_state.json')}`);
    run.restore(s);
    resumedAt = s.step;
    process.stderr.write(`duet: resumed at step ${s.step}\n`);
  }
  process.stderr.write(`duet: training ${nParams} parameters (${plan.model.layers} layers × ${plan.model.kvHeads} KV heads, d ${plan.model.hidden}) for ${plan.steps} steps of ~${plan.tokensPerStep} tokens\n`);
  process.stderr.write(gpu ? `duet: on the GPU (${gpu.adapterDescription})\n` : `duet: on the CPU, ${threads} thread${threads > 1 ? 's (data-parallel replicas)' : ''}\n`);
  const progress = new Progress('train');
  let lastSaved: number | null = resumedAt;
  const save = async () => {
    const state = await run.state();
    const meta = { duet_steps: String(state.step), duet_seed: String(plan.seed) };
    // The saved config carries the RoPE base the last step trained with. One atomic file set;
    // non-finite parameters or moments are refused before anything is written.
    saveCheckpoint(v.out!, { ...plan.model, ropeTheta: planRopeTheta(plan, Math.max(0, state.step - 1)) }, state, 4096, meta,
      { seed: plan.seed, steps: plan.steps, threads, device: gpu ? 'gpu' : 'cpu', plan });
    lastSaved = state.step;
  };
  let ema = 0;
  const startStep = run.step();
  try {
    while (run.step() < until) {
      const r = await run.trainStep();
      assertFiniteStep(r, lastSaved);
      ema = ema ? 0.95 * ema + 0.05 * r.loss : r.loss;
      progress.update(r.step - startStep, until - startStep, `step ${r.step}/${plan.steps} loss ${ema.toFixed(3)} lr ${r.lr.toExponential(1)} |g| ${r.gradNorm.toFixed(2)} ${(r.tokens / r.ms * 1000).toFixed(0)} tok/s`);
      if (r.step % saveEvery === 0 || r.step === until) await save();
    }
  } finally {
    await run.stop();
  }
  process.stderr.write(`duet: saved ${v.out} (final loss ${ema.toFixed(4)})\n`);
  return 0;
}
