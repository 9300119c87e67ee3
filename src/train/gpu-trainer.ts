// The training loop of trainer.ts on a WebGPU device: the same plan, data, schedule and model code,
// with tensors, passes and AdamW on the GPU (src/gpu/train-kernels.ts). One replica; the host only
// makes the data and reads back the loss and gradient norm once per step.
import { GpuAdamW, GpuTrainKernels, type GpuSpan } from '../gpu/train-kernels.js';
import type { GpuContext } from '../gpu/context.js';
import { decayMask } from './adamw.js';
import { TrainModel, parameterCount } from './model.js';
import { checkPlan, planLearningRate, planRopeTheta, stepReport, stepSequences, type StepReport, type TrainPlan, type TrainerState } from './trainer.js';

export class GpuTrainer {
  private constructor(readonly plan: TrainPlan, readonly model: TrainModel<GpuSpan>, readonly opt: GpuAdamW, readonly kernels: GpuTrainKernels) {}

  static create(plan: TrainPlan, ctx: GpuContext): GpuTrainer {
    checkPlan(plan);
    const k = new GpuTrainKernels(ctx);
    const model = new TrainModel(k, plan.model);
    model.initialise(plan.seed);
    const mask = Float32Array.from(decayMask(parameterCount(plan.model), model.named));
    return new GpuTrainer(plan, model, new GpuAdamW(k, model.params, mask), k);
  }

  restore(s: TrainerState): void {
    this.kernels.write(this.model.params, s.params);
    this.kernels.write(this.opt.m, s.m);
    this.kernels.write(this.opt.v, s.v);
    this.opt.step = s.step;
  }

  async state(): Promise<TrainerState> {
    const n = parameterCount(this.plan.model);
    return { step: this.opt.step, params: await this.kernels.read(this.model.params, n), m: await this.kernels.read(this.opt.m, n), v: await this.kernels.read(this.opt.v, n) };
  }

  /** One optimizer step over the step's sequences (the same data as the CPU trainer's step). */
  async trainStep(): Promise<StepReport> {
    const t0 = performance.now();
    const step = this.opt.step;
    const seqs = stepSequences(this.plan, step);
    const k = this.kernels, m = this.model;
    m.setRopeTheta(planRopeTheta(this.plan, step));
    k.zero(m.grads, parameterCount(this.plan.model));
    k.zero(m.loss, 1);
    for (const s of seqs) m.step(s.ids, s.positions, s.targets, s.weights);
    const lr = planLearningRate(this.plan, step);
    const gradNorm = await this.opt.update(m.grads, lr);
    const [loss] = await k.read(m.loss, 1);
    return stepReport(step, seqs, loss, lr, gradNorm, t0);
  }
}
