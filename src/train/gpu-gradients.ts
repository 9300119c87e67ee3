// A step's gradients on a WebGPU device for parameters the host holds: the GradientHelper that
// `duet dha --device gpu` hands every step's sequences to. DHA's conversion keeps its fusion
// weights, multipliers and optimizer on the host (src/dha/fusion.ts maps its parameters to a
// model-shaped vector each step and the gradients back), so the device does what dominates a step,
// the model's forward and backward over the step's sequences, with the training kernels the GPU
// trainer uses (src/gpu/train-kernels.ts). Gradients and loss come back summed over the sequences,
// as the CPU model's step accumulates them.
import type { GpuContext } from '../gpu/context.js';
import { GpuTrainKernels, type GpuSpan } from '../gpu/train-kernels.js';
import { parameterCount, TrainModel } from './model.js';
import { checkPlan, stepSequences, type GradientHelper, type TrainPlan } from './trainer.js';

export class GpuGradients implements GradientHelper {
  private constructor(private readonly plan: TrainPlan, private readonly kernels: GpuTrainKernels, private readonly model: TrainModel<GpuSpan>,
    private readonly n: number) {}

  /** The plan's model on `ctx` (its parameters come with every call). */
  static create(plan: TrainPlan, ctx: GpuContext): GpuGradients {
    checkPlan(plan);
    const kernels = new GpuTrainKernels(ctx);
    return new GpuGradients(plan, kernels, new TrainModel(kernels, plan.model), parameterCount(plan.model));
  }

  async gradients(params: Float32Array, step: number, indices: number[]): Promise<{ grads: Float32Array; loss: number }> {
    if (params.length !== this.n) throw new RangeError(`GPU gradients: ${params.length} parameters given, the plan's model has ${this.n}`);
    const k = this.kernels, m = this.model, seqs = stepSequences(this.plan, step);
    k.write(m.params, params);
    k.zero(m.grads, this.n);
    k.zero(m.loss, 1);
    for (const i of indices) m.step(seqs[i].ids, seqs[i].positions, seqs[i].targets, seqs[i].weights);
    const [grads, loss] = await Promise.all([k.read(m.grads, this.n), k.read(m.loss, 1)]);
    return { grads, loss: loss[0] };
  }
}
