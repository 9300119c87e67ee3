// A loaded checkpoint as a frozen training model with gates, on the CPU (the WebAssembly arena) or
// a GPU, so the identification methods can run forward passes that keep attention probabilities
// and backward passes that reach the DuoAttention gates.
//
// A DHA checkpoint (decoupled key and value heads, src/dha/config.ts) can be expanded to the
// multi-head model it computes: query head h's key and value rows are those of its key head and
// value head, so every query head is its own KV head, the nominal shape its patterns have (one
// column per query head). Identification does that (`decoupled: 'expand'`); its gates then mark
// query heads, which the runtime resolves per key head (src/engine/layer-groups.ts).
import { DuetError } from '../errors.js';
import { refuseDha, ropeInvFreq, type ModelConfig } from '../model/config.js';
import { asPacked, matrixF32, type ModelWeights, type WeightMatrix } from '../model/weights.js';
import { gatherRows } from '../engine/head-split.js';
import type { GpuContext } from '../gpu/context.js';
import { GpuTrainKernels, type GpuSpan } from '../gpu/train-kernels.js';
import { Arena } from '../train/arena.js';
import { TrainModel, cpuTrainModel, type TrainConfig } from '../train/model.js';

/** What a frozen model does with a DHA checkpoint: expand it to its multi-head equivalent, or refuse it. */
export type DecoupledHeadsChoice = 'expand' | 'refuse';

function trainConfig(config: ModelConfig, maxRows: number, decoupled: DecoupledHeadsChoice): TrainConfig {
  if (decoupled === 'refuse') refuseDha(config, 'the training forward (Locret training)');
  // The nominal shape of a DHA checkpoint is multi-head: num_key_value_heads = num_attention_heads.
  if (config.dha && config.numKvHeads !== config.numHeads) throw new DuetError('model', `config.json: a DHA checkpoint has num_key_value_heads = num_attention_heads (got ${config.numKvHeads} for ${config.numHeads})`);
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
    const p = model.p.layers[l], d = config.dha?.layers[l];
    // A decoupled layer's K and V rows, one head's block per query head (its key head's, its value head's).
    const perQuery = (m: WeightMatrix, heads: number, map: number[] | undefined) =>
      f(map ? gatherRows(asPacked(m, heads * c.headDim, c.hidden), map, c.headDim) : m);
    k.write(p.inputNorm, w.inputNorm); k.write(p.wq, f(w.wq)); k.write(p.wo, f(w.wo));
    k.write(p.wk, perQuery(w.wk, d?.keyHeads ?? c.kvHeads, d?.queryToKey)); k.write(p.wv, perQuery(w.wv, d?.valueHeads ?? c.kvHeads, d?.queryToValue));
    k.write(p.postNorm, w.postNorm); k.write(p.wGate, f(w.wGate)); k.write(p.wUp, f(w.wUp)); k.write(p.wDown, f(w.wDown));
  });
  if (weights.layers.some((w) => w.bq || w.bk || w.bv)) {
    if (config.dha) throw new DuetError('model', 'config.json: a DHA checkpoint with q/k/v biases is not supported by the training forward');
    const bias = (b: Float32Array | null, n: number) => { const t = k.alloc(n); if (b) k.write(t, b); return t; };
    model.biases = weights.layers.map((w) => ({ bq: bias(w.bq, c.heads * c.headDim), bk: bias(w.bk, c.kvHeads * c.headDim), bv: bias(w.bv, c.kvHeads * c.headDim) }));
  }
  // RoPE scaling (llama3, linear) is folded into the frequencies, as in the inference engine.
  model.invFreq.set(ropeInvFreq(config));
  return model;
}

export async function frozenModel(config: ModelConfig, weights: ModelWeights, maxRows: number, decoupled: DecoupledHeadsChoice = 'refuse'): Promise<TrainModel<Float32Array>> {
  const c = trainConfig(config, maxRows, decoupled);
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
export function frozenGpuModel(ctx: GpuContext, config: ModelConfig, weights: ModelWeights, maxRows: number, decoupled: DecoupledHeadsChoice = 'refuse'): TrainModel<GpuSpan> {
  return load(new TrainModel(new GpuTrainKernels(ctx), trainConfig(config, maxRows, decoupled), { gated: true }), config, weights);
}
