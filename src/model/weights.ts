// Loads and shape-checks the tensors of a Llama-family checkpoint as f32.
import type { ModelConfig } from './config.js';
import type { ModelFiles } from './files.js';
import { readCheckpointIndex, readTensor, type TensorInfo } from './safetensors.js';

export interface LayerWeights {
  inputNorm: Float32Array;
  wq: Float32Array; wk: Float32Array; wv: Float32Array; wo: Float32Array;
  bq: Float32Array | null; bk: Float32Array | null; bv: Float32Array | null;
  postNorm: Float32Array;
  wGate: Float32Array; wUp: Float32Array; wDown: Float32Array;
}

export interface ModelWeights {
  embed: Float32Array;
  layers: LayerWeights[];
  finalNorm: Float32Array;
  /** The same array as `embed` when the embeddings are tied. */
  lmHead: Float32Array;
}

export type LoadProgress = (loadedBytes: number, totalBytes: number, tensor: string) => void;

/** Buffers some exports carry that Hugging Face recomputes (RoPE frequencies): not weights. */
const IGNORED = /^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/;

/** num_hidden_layers against the layers the checkpoint has tensors for, before anything is sized by it. */
function checkLayerCount(index: Map<string, TensorInfo>, numLayers: number, where: string): void {
  let layers = 0;
  for (const name of index.keys()) {
    const m = /^model\.layers\.(\d+)\./.exec(name);
    if (m) layers = Math.max(layers, Number(m[1]) + 1);
  }
  if (numLayers > layers) throw new Error(`config.json: num_hidden_layers is ${numLayers}, but the checkpoint in ${where} has tensors for ${layers} layers`);
  if (numLayers < layers) throw new Error(`config.json: num_hidden_layers is ${numLayers}, but the checkpoint in ${where} has tensors for ${layers} layers (layers ${numLayers}–${layers - 1} would be silently skipped)`);
}

export async function loadWeights(files: ModelFiles, config: ModelConfig, onProgress?: LoadProgress): Promise<ModelWeights> {
  const index = await readCheckpointIndex(files);
  checkLayerCount(index, config.numLayers, files.name);
  const { hiddenSize: H, intermediateSize: I, numHeads, numKvHeads, headDim: D, vocabSize: V } = config;
  const expected = new Map<string, number[]>();
  expected.set('model.embed_tokens.weight', [V, H]);
  for (let l = 0; l < config.numLayers; l++) {
    const p = `model.layers.${l}.`;
    expected.set(`${p}input_layernorm.weight`, [H]);
    expected.set(`${p}self_attn.q_proj.weight`, [numHeads * D, H]);
    expected.set(`${p}self_attn.k_proj.weight`, [numKvHeads * D, H]);
    expected.set(`${p}self_attn.v_proj.weight`, [numKvHeads * D, H]);
    expected.set(`${p}self_attn.o_proj.weight`, [H, numHeads * D]);
    if (config.attentionBias) {
      expected.set(`${p}self_attn.q_proj.bias`, [numHeads * D]);
      expected.set(`${p}self_attn.k_proj.bias`, [numKvHeads * D]);
      expected.set(`${p}self_attn.v_proj.bias`, [numKvHeads * D]);
    }
    expected.set(`${p}post_attention_layernorm.weight`, [H]);
    expected.set(`${p}mlp.gate_proj.weight`, [I, H]);
    expected.set(`${p}mlp.up_proj.weight`, [I, H]);
    expected.set(`${p}mlp.down_proj.weight`, [H, I]);
  }
  expected.set('model.norm.weight', [H]);
  const tied = config.tieWordEmbeddings;
  if (!tied) expected.set('lm_head.weight', [V, H]);

  // A tensor the architecture does not use (a bias without attention_bias, an MLP bias, …) would
  // change the output of the network it came from: refused, not skipped.
  for (const [name, t] of index) {
    if (expected.has(name) || IGNORED.test(name) || (tied && name === 'lm_head.weight')) continue;
    throw new Error(`${t.file}: tensor "${name}" is not used by a ${config.modelType} model with this config.json (attention_bias ${config.attentionBias}); Duet refuses to run without it rather than give a different result`);
  }

  const infos = new Map<string, TensorInfo>();
  let total = 0;
  for (const [name, shape] of expected) {
    const t = index.get(name);
    if (!t) throw new Error(`${files.name}: tensor "${name}" is missing from the checkpoint${name === 'lm_head.weight' ? ' (config.json says the embeddings are not tied)' : ''}`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new Error(`${t.file}: tensor "${name}" has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}] from config.json`);
    }
    infos.set(name, t);
    total += t.byteLength;
  }
  let loaded = 0;
  const read = async (name: string): Promise<Float32Array> => {
    const t = infos.get(name)!;
    const data = await readTensor(files, t);
    loaded += t.byteLength;
    onProgress?.(loaded, total, name);
    return data;
  };
  const embed = await read('model.embed_tokens.weight');
  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const p = `model.layers.${l}.`;
    layers.push({
      inputNorm: await read(`${p}input_layernorm.weight`),
      wq: await read(`${p}self_attn.q_proj.weight`), wk: await read(`${p}self_attn.k_proj.weight`),
      wv: await read(`${p}self_attn.v_proj.weight`), wo: await read(`${p}self_attn.o_proj.weight`),
      bq: config.attentionBias ? await read(`${p}self_attn.q_proj.bias`) : null,
      bk: config.attentionBias ? await read(`${p}self_attn.k_proj.bias`) : null,
      bv: config.attentionBias ? await read(`${p}self_attn.v_proj.bias`) : null,
      postNorm: await read(`${p}post_attention_layernorm.weight`),
      wGate: await read(`${p}mlp.gate_proj.weight`), wUp: await read(`${p}mlp.up_proj.weight`), wDown: await read(`${p}mlp.down_proj.weight`),
    });
  }
  const finalNorm = await read('model.norm.weight');
  const lmHead = tied ? embed : await read('lm_head.weight');
  return { embed, layers, finalNorm, lmHead };
}
