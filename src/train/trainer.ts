// The training loop for the bundled model: steps of ~tokensPerStep tokens (whole sequences, gradients
// accumulated), AdamW with warm-up + cosine decay and clipping, a length curriculum then PoSE
// position skips, periodic checkpoints (an HF directory plus optimizer state) it can resume from.
import { AdamW, learningRate, type Schedule } from './adamw.js';
import { Arena } from './arena.js';
import { makeSequence, type DataOptions } from './data.js';
import { TrainModel, type TrainConfig } from './model.js';
import { Random } from '../tasks/random.js';
import type { TaskKind } from '../tasks/tasks.js';

export interface TrainPlan {
  model: TrainConfig;
  seed: number;
  steps: number;
  tokensPerStep: number;
  schedule: Schedule;
  tasks: TaskKind[];
  answerWeight: number;
  /** Curriculum: until this step, lengths shortLengths; after it, longLengths with PoSE skips. */
  curriculumSteps: number;
  shortLengths: [number, number];
  longLengths: [number, number];
  maxPosition: number;
  skipFraction: number;
}

export interface StepReport { step: number; loss: number; lr: number; gradNorm: number; tokens: number; ms: number }

export interface TrainerState { step: number; params: Float32Array; m: Float32Array; v: Float32Array }

export class Trainer {
  private constructor(readonly plan: TrainPlan, readonly model: TrainModel, readonly opt: AdamW) {}

  static async create(plan: TrainPlan): Promise<Trainer> {
    const c = plan.model;
    const acts = c.layers * (c.heads * c.maxRows * c.maxRows + c.maxRows * (6 * c.hidden + 3 * c.intermediate + 4 * c.heads * c.headDim)) +
      c.maxRows * (4 * c.maxRows + 10 * Math.max(c.hidden, c.intermediate, c.vocab, c.heads * c.headDim));
    const arena = await Arena.create((acts + 4 * 1024 * 1024) * 4 + 64 * 1024 * 1024);
    const model = new TrainModel(arena, c);
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

  dataFor(step: number): DataOptions {
    const p = this.plan;
    const long = step >= p.curriculumSteps;
    return {
      tasks: p.tasks, answerWeight: p.answerWeight,
      lengths: long ? p.longLengths : p.shortLengths,
      maxPosition: long ? p.maxPosition : 0, skipFraction: p.skipFraction,
    };
  }

  /** One optimizer step (data for step k is the same whatever the run was resumed from). */
  trainStep(): StepReport {
    const t0 = performance.now();
    const step = this.opt.step;
    const r = new Random(this.plan.seed * 7_919 + step);
    const data = this.dataFor(step);
    const m = this.model;
    m.grads.fill(0);
    let tokens = 0, loss = 0;
    const seqs = [];
    while (tokens < this.plan.tokensPerStep) {
      const s = makeSequence(r, { ...data, lengths: [data.lengths[0], Math.min(data.lengths[1], m.c.maxRows + 1)] });
      seqs.push(s);
      tokens += s.ids.length;
    }
    for (const s of seqs) {
      // Average over the step's sequences.
      for (let i = 0; i < s.weights.length; i++) s.weights[i] /= seqs.length;
      loss += m.step(s.ids, s.positions, s.targets, s.weights);
    }
    const lr = learningRate(step, this.plan.schedule);
    const gradNorm = this.opt.update(m.grads, lr);
    return { step: step + 1, loss, lr, gradNorm, tokens, ms: performance.now() - t0 };
  }
}
