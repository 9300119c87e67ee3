// The training loop for the bundled model: steps of ~tokensPerStep tokens (whole sequences, gradients
// accumulated), AdamW with warm-up + cosine decay and clipping, phases of growing lengths with PoSE
// position skips and learning-rate restarts, periodic checkpoints (an HF directory plus optimizer
// state) it can resume from.
import { AdamW, learningRate, type Schedule } from './adamw.js';
import { Arena } from './arena.js';
import { MIN_LENGTH, makeSequence, type DataOptions, type Sequence } from './data.js';
import { TrainModel, cpuTrainModel, type TrainConfig } from './model.js';
import { Random } from '../tasks/random.js';
import type { TaskKind } from '../tasks/tasks.js';

/**
 * A stretch of training from step `from` until the next phase: sequences of `lengths` tokens, PoSE
 * position jumps up to `maxPosition` (0: none). A phase with a `schedule` restarts the learning rate
 * (its steps counted from `from`); one without continues the previous schedule.
 */
export interface Phase {
  from: number;
  lengths: [number, number];
  maxPosition: number;
  schedule?: Schedule;
  /** Fraction of sequences with the needle at depth 0 or 1 exactly (DataOptions.edgeDepths). */
  edgeDepths?: number;
  /** This phase's task mix instead of the plan's (drawn uniformly: a kind listed twice comes twice as often). */
  tasks?: TaskKind[];
  /** RoPE base from this phase on, instead of the model's (raising θ, as long-context fine-tuning does). */
  ropeTheta?: number;
}

export interface TrainPlan {
  model: TrainConfig;
  seed: number;
  steps: number;
  tokensPerStep: number;
  tasks: TaskKind[];
  answerWeight: number;
  /** In step order; the first starts at step 0 and has a schedule. */
  phases: Phase[];
  /** Fraction of sequences that get a position jump (in phases with maxPosition > 0). */
  skipFraction: number;
}

/** Throws unless the phases are in step order, start at 0 with a schedule, and every sequence fits the model's rows. */
export function checkPlan(p: TrainPlan): void {
  const [first] = p.phases;
  if (!first || first.from !== 0 || !first.schedule) throw new Error('training plan: the first phase must start at step 0 and have a learning-rate schedule');
  const checkTasks = (tasks: TaskKind[], where: string) => {
    if (tasks.length === 0) throw new Error(`training plan: ${where} has no tasks`);
    for (const t of tasks) {
      if (!(t in MIN_LENGTH)) throw new Error(`training plan: ${where}: unknown task "${t}"`);
      if (MIN_LENGTH[t] > p.model.maxRows) throw new Error(`training plan: ${t} sequences need ${MIN_LENGTH[t]} tokens, more than the model's ${p.model.maxRows} rows (model.maxRows)`);
    }
  };
  checkTasks(p.tasks, 'the plan');
  p.phases.forEach((ph, i) => {
    if (ph.tasks) checkTasks(ph.tasks, `phase ${i}`);
    if (ph.ropeTheta !== undefined && !(ph.ropeTheta > 1)) throw new Error(`training plan: phase ${i} ropeTheta ${ph.ropeTheta} must be a number > 1`);
    // Equal starts are allowed (the earlier phase is then empty: short runs of a scaled plan).
    if (i > 0 && ph.from < p.phases[i - 1].from) throw new Error(`training plan: phase ${i} starts at step ${ph.from}, before phase ${i - 1} (step ${p.phases[i - 1].from})`);
    if (ph.lengths[0] > ph.lengths[1] || ph.lengths[1] > p.model.maxRows) throw new Error(`training plan: phase ${i} lengths ${ph.lengths.join('–')} must be ordered and at most the model's ${p.model.maxRows} rows`);
  });
}

/** The phase step k falls in. */
export function phaseAt(p: TrainPlan, step: number): Phase {
  let found = p.phases[0];
  for (const ph of p.phases) if (ph.from <= step) found = ph;
  return found;
}

/** RoPE base of step k: the latest phase at or before k that sets one, else the model's. */
export function planRopeTheta(p: TrainPlan, step: number): number {
  let theta = p.model.ropeTheta;
  for (const ph of p.phases) if (ph.from <= step && ph.ropeTheta !== undefined) theta = ph.ropeTheta;
  return theta;
}

/** Learning rate of step k: the latest schedule started at or before k. */
export function planLearningRate(p: TrainPlan, step: number): number {
  let start = p.phases[0];
  for (const ph of p.phases) if (ph.from <= step && ph.schedule) start = ph;
  return learningRate(step - start.from, start.schedule!);
}

function dataFor(p: TrainPlan, step: number): DataOptions {
  const phase = phaseAt(p, step);
  return { tasks: phase.tasks ?? p.tasks, answerWeight: p.answerWeight, lengths: phase.lengths, maxPosition: phase.maxPosition, skipFraction: p.skipFraction, edgeDepths: phase.edgeDepths };
}

/** The sequences of step k (deterministic; loss weights already averaged over the step). */
export function stepSequences(p: TrainPlan, step: number): Sequence[] {
  const r = new Random(p.seed * 7_919 + step);
  const data = dataFor(p, step);
  const seqs: Sequence[] = [];
  let tokens = 0;
  while (tokens < p.tokensPerStep) {
    const s = makeSequence(r, data);
    seqs.push(s);
    tokens += s.ids.length;
  }
  for (const s of seqs) for (let i = 0; i < s.weights.length; i++) s.weights[i] /= seqs.length;
  return seqs;
}

export interface StepReport { step: number; loss: number; lr: number; gradNorm: number; tokens: number; ms: number }

/** A step whose loss or gradient norm is NaN/Inf has ruined the weights: stop before anything is saved. */
export function assertFiniteStep(r: StepReport, lastSaved: number | null): void {
  if (Number.isFinite(r.loss) && Number.isFinite(r.gradNorm)) return;
  const kept = lastSaved === null ? 'nothing was saved' : `the checkpoint of step ${lastSaved} is kept`;
  throw new Error(`training diverged at step ${r.step}: loss ${r.loss}, gradient norm ${r.gradNorm} (learning rate ${r.lr.toExponential(2)}); stopped without saving, ${kept}`);
}

export interface TrainerState { step: number; params: Float32Array; m: Float32Array; v: Float32Array }

export class Trainer {
  private constructor(readonly plan: TrainPlan, readonly model: TrainModel, readonly opt: AdamW) {}

  static async create(plan: TrainPlan): Promise<Trainer> {
    checkPlan(plan);
    const c = plan.model;
    const model = cpuTrainModel(await Arena.create((k) => TrainModel.arenaBytes(c, k)), c);
    model.initialise(plan.seed);
    return new Trainer(plan, model, new AdamW(model.params, model.named));
  }

  /** Restores parameters and optimizer state saved by state(). */
  restore(s: TrainerState): void {
    this.model.params.set(s.params);
    this.opt.m.set(s.m);
    this.opt.v.set(s.v);
    this.opt.step = s.step;
  }

  state(): TrainerState { return { step: this.opt.step, params: this.model.params, m: this.opt.m, v: this.opt.v }; }

  /** Step k's sequences, with the model set to k's RoPE base. */
  sequencesFor(step: number): Sequence[] {
    this.model.setRopeTheta(planRopeTheta(this.plan, step));
    return stepSequences(this.plan, step);
  }

  /** Adds the gradients of the given sequences to model.grads; returns their loss. */
  accumulate(seqs: Sequence[], indices: number[]): number {
    const loss = this.model.loss;
    loss[0] = 0;
    for (const i of indices) this.model.step(seqs[i].ids, seqs[i].positions, seqs[i].targets, seqs[i].weights);
    return loss[0];
  }

  /** One optimizer step, single-threaded (data for step k is the same whatever the run was resumed from). */
  trainStep(): StepReport {
    const t0 = performance.now();
    const step = this.opt.step;
    const seqs = this.sequencesFor(step);
    this.model.grads.fill(0);
    const loss = this.accumulate(seqs, seqs.map((_, i) => i));
    return this.update(step, seqs, loss, t0);
  }

  /**
   * One optimizer step with helpers (other threads holding a replica): the step's sequences are dealt
   * round-robin, every replica starts from the current parameters, the gradients are summed in a
   * fixed order (so the run is deterministic for a given number of helpers). Two replicas on the
   * 2-vCPU VM: 1.7× the tokens/s of one.
   */
  async trainStepWith(helpers: GradientHelper[]): Promise<StepReport> {
    const t0 = performance.now();
    const step = this.opt.step;
    const seqs = this.sequencesFor(step);
    const parts = helpers.length + 1;
    const share = (k: number) => seqs.map((_, i) => i).filter((i) => i % parts === k);
    const pending = helpers.map((h, k) => h.gradients(this.model.params, step, share(k + 1)));
    this.model.grads.fill(0);
    let loss = this.accumulate(seqs, share(0));
    for (const r of await Promise.all(pending)) {
      const g = this.model.grads;
      for (let i = 0; i < g.length; i++) g[i] += r.grads[i];
      loss += r.loss;
    }
    return this.update(step, seqs, loss, t0);
  }

  private update(step: number, seqs: Sequence[], loss: number, t0: number): StepReport {
    const lr = planLearningRate(this.plan, step);
    const gradNorm = this.opt.update(this.model.grads, lr);
    return stepReport(step, seqs, loss, lr, gradNorm, t0);
  }
}

export function stepReport(step: number, seqs: Sequence[], loss: number, lr: number, gradNorm: number, t0: number): StepReport {
  const tokens = seqs.reduce((a, s) => a + s.ids.length, 0);
  return { step: step + 1, loss, lr, gradNorm, tokens, ms: performance.now() - t0 };
}

/** Another thread's replica: gradients of some of step k's sequences at the given parameters. */
export interface GradientHelper {
  gradients(params: Float32Array, step: number, indices: number[]): Promise<{ grads: Float32Array; loss: number }>;
}
