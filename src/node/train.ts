// Training a model from a plan (Node: it writes checkpoints and runs replicas in worker threads):
// on the CPU with one data-parallel replica per thread, or on a GPU; checkpoints (an HF model
// folder plus the optimizer state) every saveEvery steps, atomically; resume from one.
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { chooseTrainingGpu, type TrainingDevice } from '../api/device.js';
import { DuetError } from '../errors.js';
import { loadCheckpointState, saveCheckpoint } from './checkpoint-io.js';
import { GpuTrainer } from '../train/gpu-trainer.js';
import { parameterCount } from '../train/model.js';
import { bundledPlan } from '../train/plan.js';
import { Trainer, assertFiniteStep, checkPlan, planRopeTheta, type StepReport, type TrainPlan, type TrainerState } from '../train/trainer.js';
import { createNodeGpu } from './gpu.js';
import { assertOutputFolder } from './output-folder.js';
import { startTrainingHelpers } from './train-pool.js';

export interface TrainOptions {
  /** The model folder written (HF layout, plus training/ with the optimizer state). */
  out: string;
  /** What to train (default: the bundled model's recipe, bundledPlan()); see trainingPlan(). */
  plan?: TrainPlan;
  /** Stop after this step (the plan, and so every step's data and schedule, stay the plan's). */
  until?: number;
  /** Steps between checkpoints (default 250; the last step is always saved). */
  saveEvery?: number;
  /** Continue the checkpoint in `out` (same model shape). */
  resume?: boolean;
  /** Replace whatever `out` holds. */
  force?: boolean;
  /** 'cpu' (default), 'gpu' or 'auto' (a hardware GPU, else the CPU). */
  device?: TrainingDevice;
  gpuBackend?: string;
  /** CPU replicas, one per thread (default every core). Runs agree bit for bit only at the same count. */
  threads?: number;
  notice?: (message: string) => void;
  /** Once placed (and restored): what trains, where. */
  onStart?: (info: { parameters: number; plan: TrainPlan; device: 'cpu' | 'gpu'; adapter: string | null; threads: number; resumedAt: number | null }) => void;
  /** Each step, with an exponential moving average of the loss. */
  onStep?: (report: StepReport, smoothedLoss: number) => void;
}

export interface TrainResult {
  out: string;
  /** The last step trained and saved. */
  step: number;
  resumedAt: number | null;
  /** The moving average of the loss at the end. */
  smoothedLoss: number;
}

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

export async function trainModel(o: TrainOptions): Promise<TrainResult> {
  const { out } = o;
  if (typeof out !== 'string' || out === '') throw new DuetError('out', 'must be a folder path');
  if (o.resume && o.force) throw new DuetError('resume', 'continues the checkpoint in out, force replaces it: set one');
  // A folder holding anything (a trained model above all) is only replaced when asked to.
  if (!o.resume) assertOutputFolder(out, { force: o.force, what: 'the trained model', hint: 'set resume to continue its training or force to replace it' });
  const plan = o.plan ?? bundledPlan();
  checkPlan(plan);
  const saveEvery = o.saveEvery ?? 250;
  if (!(Number.isInteger(saveEvery) && saveEvery >= 1)) throw new DuetError('saveEvery', `must be an integer ≥ 1 (got ${saveEvery})`);
  if (o.until !== undefined && !(Number.isInteger(o.until) && o.until >= 1)) throw new DuetError('until', `must be an integer ≥ 1 (got ${o.until})`);
  const until = Math.min(o.until ?? plan.steps, plan.steps);
  if (o.threads !== undefined && !(Number.isInteger(o.threads) && o.threads >= 1)) throw new DuetError('threads', `must be a positive integer (got ${o.threads})`);
  const gpu = await chooseTrainingGpu(o.device, () => createNodeGpu({ backend: o.gpuBackend }), o.notice ?? (() => {}));
  const threads = gpu ? 1 : Math.min(o.threads ?? availableParallelism(), availableParallelism());
  const run = gpu ? gpuRun(GpuTrainer.create(plan, gpu)) : await cpuRun(plan, threads);
  try {
    const nParams = parameterCount(plan.model);
    let resumedAt: number | null = null;
    if (o.resume) {
      const s = loadCheckpointState(out, nParams, plan.model);
      if (!s) throw new DuetError('resume', `is set but there is no ${join(out, 'training', 'training_state.json')}`);
      run.restore(s);
      resumedAt = s.step;
    }
    o.onStart?.({ parameters: nParams, plan, device: gpu ? 'gpu' : 'cpu', adapter: gpu?.adapterDescription ?? null, threads, resumedAt });
    let lastSaved: number | null = resumedAt;
    const save = async () => {
      const state = await run.state();
      const meta = { duet_steps: String(state.step), duet_seed: String(plan.seed) };
      // The saved config carries the RoPE base the last step trained with. One atomic file set;
      // non-finite parameters or moments are refused before anything is written.
      saveCheckpoint(out, { ...plan.model, ropeTheta: planRopeTheta(plan, Math.max(0, state.step - 1)) }, state, 4096, meta,
        { seed: plan.seed, steps: plan.steps, threads, device: gpu ? 'gpu' : 'cpu', plan });
      lastSaved = state.step;
    };
    let ema = 0;
    while (run.step() < until) {
      const r = await run.trainStep();
      assertFiniteStep(r, lastSaved);
      ema = ema ? 0.95 * ema + 0.05 * r.loss : r.loss;
      o.onStep?.(r, ema);
      if (r.step % saveEvery === 0 || r.step === until) await save();
    }
    return { out, step: run.step(), resumedAt, smoothedLoss: ema };
  } finally {
    await run.stop();
  }
}
