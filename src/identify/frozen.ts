// A loaded checkpoint as a frozen training model with gates, on the CPU (the WebAssembly arena) or
// a GPU, so the identification methods can run forward passes that keep attention probabilities
// and backward passes that reach the DuoAttention gates.
import { DuetError } from '../errors.js';
import { refuseDha, ropeInvFreq, type ModelConfig } from '../model/config.js';
import { matrixF32, type ModelWeights } from '../model/weights.js';
import type { GpuContext } from '../gpu/context.js';
import { GpuTrainKernels, type GpuSpan } from '../gpu/train-kernels.js';
import { Arena } from '../train/arena.js';
import { TrainModel, cpuTrainModel, type TrainConfig } from '../train/model.js';

function trainConfig(config: ModelConfig, maxRows: number): TrainConfig {
  refuseDha(config, 'the training forward (identification, Locret training)');
  // The training forward attends causally over the whole sequence; a model's own sliding window
  // would bind past its length and give other activations than the model's.
  if (config.slidingWindow !== null && maxRows > config.slidingWindow) {
    throw new DuetError('lengths', `are too long for this model: its config.json sliding_window ${config.slidingWindow} is shorter than the identification sequences (${maxRows} tokens), and identification does not apply sliding windows`);
  }
  return {
    vocab: config.vocabSize, hidden: config.hiddenSize, layers: config.numLayers, heads: config.numHeads, kvHeads: config.numKvHeads,
    headDim: config.headDim, intermediate: config.intermediateSize, eps: config.rmsNormEps, ropeTheta: config.ropeTheta, maxRows,
  };
}

/** Copies the checkpoint's weights (and qwen2 biases, RoPE scaling) into a gated training model. */
function load<T>(model: TrainModel<T>, config: ModelConfig, weights: ModelWeights): TrainModel<T> {
  const { k, c } = model;
  // Training runs in f32: packed weights are dequantized one matrix at a time into the model's arrays.
  const f = matrixF32;
  k.write(model.p.embed, f(weights.embed));
  k.write(model.p.finalNorm, weights.finalNorm);
  k.write(model.p.lmHead, f(weights.lmHead));
  weights.layers.forEach((w, l) => {
    const p = model.p.layers[l];
    k.write(p.inputNorm, w.inputNorm); k.write(p.wq, f(w.wq)); k.write(p.wk, f(w.wk)); k.write(p.wv, f(w.wv)); k.write(p.wo, f(w.wo));
    k.write(p.postNorm, w.postNorm); k.write(p.wGate, f(w.wGate)); k.write(p.wUp, f(w.wUp)); k.write(p.wDown, f(w.wDown));
  });
  if (weights.layers.some((w) => w.bq || w.bk || w.bv)) {
    const bias = (b: Float32Array | null, n: number) => { const t = k.alloc(n); if (b) k.write(t, b); return t; };
    model.biases = weights.layers.map((w) => ({ bq: bias(w.bq, c.heads * c.headDim), bk: bias(w.bk, c.kvHeads * c.headDim), bv: bias(w.bv, c.kvHeads * c.headDim) }));
  }
  // RoPE scaling (llama3, linear) is folded into the frequencies, as in the inference engine.
  model.invFreq.set(ropeInvFreq(config));
  return model;
}

export async function frozenModel(config: ModelConfig, weights: ModelWeights, maxRows: number): Promise<TrainModel<Float32Array>> {
  const c = trainConfig(config, maxRows);
  const biasFloats = weights.layers.some((w) => w.bq || w.bk || w.bv) ? config.numLayers * (c.heads + 2 * c.kvHeads) * c.headDim + 3 * config.numLayers * 4 : 0;
  const arena = await Arena.create((kernels) => {
    const bytes = TrainModel.arenaBytes(c, kernels, { gated: true }) + biasFloats * 4;
    if (bytes > 4 * 1024 ** 3 - (64 << 20)) {
      throw new DuetError('lengths', `are too long: identification needs about ${(bytes / 1024 ** 3).toFixed(1)} GiB of WebAssembly memory for ${maxRows}-token sequences; wasm32 allows 4 GiB`);
    }
    return bytes;
  });
  return load(cpuTrainModel(arena, c, { gated: true }), config, weights);
}

/** The same frozen model with its tensors and passes on a GPU. */
export function frozenGpuModel(ctx: GpuContext, config: ModelConfig, weights: ModelWeights, maxRows: number): TrainModel<GpuSpan> {
  return load(new TrainModel(new GpuTrainKernels(ctx), trainConfig(config, maxRows), { gated: true }), config, weights);
}
