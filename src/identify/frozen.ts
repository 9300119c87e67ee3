// A loaded checkpoint as a frozen training model (the arena-backed TrainModel with gates), so the
// identification methods can run forward passes that keep attention probabilities and backward
// passes that reach the DuoAttention gates.
import { ropeInvFreq, type ModelConfig } from '../model/config.js';
import type { ModelWeights } from '../model/weights.js';
import { Arena } from '../train/arena.js';
import { TrainModel, type TrainConfig } from '../train/model.js';

export async function frozenModel(config: ModelConfig, weights: ModelWeights, maxRows: number): Promise<TrainModel> {
  const c: TrainConfig = {
    vocab: config.vocabSize, hidden: config.hiddenSize, layers: config.numLayers, heads: config.numHeads, kvHeads: config.numKvHeads,
    headDim: config.headDim, intermediate: config.intermediateSize, eps: config.rmsNormEps, ropeTheta: config.ropeTheta, maxRows,
  };
  const arena = await Arena.create((kernels) => {
    const bytes = TrainModel.arenaBytes(c, kernels, { gated: true });
    if (bytes > 4 * 1024 ** 3 - (64 << 20)) {
      throw new Error(`identification needs about ${(bytes / 1024 ** 3).toFixed(1)} GiB of WebAssembly memory for ${maxRows}-token sequences; wasm32 allows 4 GiB (use shorter --lengths)`);
    }
    return bytes;
  });
  const model = new TrainModel(arena, c, { gated: true });
  model.p.embed.set(weights.embed);
  model.p.finalNorm.set(weights.finalNorm);
  model.p.lmHead.set(weights.lmHead);
  weights.layers.forEach((w, l) => {
    const p = model.p.layers[l];
    p.inputNorm.set(w.inputNorm); p.wq.set(w.wq); p.wk.set(w.wk); p.wv.set(w.wv); p.wo.set(w.wo);
    p.postNorm.set(w.postNorm); p.wGate.set(w.wGate); p.wUp.set(w.wUp); p.wDown.set(w.wDown);
  });
  if (weights.layers.some((w) => w.bq || w.bk || w.bv)) {
    const zeros = (n: number) => new Float32Array(n);
    model.biases = weights.layers.map((w) => ({
      bq: w.bq ?? zeros(c.heads * c.headDim), bk: w.bk ?? zeros(c.kvHeads * c.headDim), bv: w.bv ?? zeros(c.kvHeads * c.headDim),
    }));
  }
  // RoPE scaling (llama3, linear) is folded into the frequencies, as in the inference engine.
  model.invFreq.set(ropeInvFreq(config));
  return model;
}
