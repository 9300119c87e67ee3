// Loads and shape-checks the tensors of a Llama-family checkpoint. Matmul weights (and the
// embeddings) are stored as they will run: f32 arrays, or packed matrices (quant.ts) converted one
// tensor at a time as they are read, so no f32 copy of a quantized model is ever held.
import { formatBytes } from '../attention/memory.js';
import { layerKvHeads, type ModelConfig } from './config.js';
import type { ModelFiles } from './files.js';
import { dequantizeMatrix, packedBytes, quantizeMatrix, rowBytes, type PackedMatrix, type WeightDType } from './quant.js';
import { readCheckpointIndex, readTensor, type TensorInfo } from './safetensors.js';

/** A [rows, cols] weight matrix: f32 values row-major, or packed storage (quant.ts). */
export type WeightMatrix = Float32Array | PackedMatrix;

export interface LayerWeights {
  inputNorm: Float32Array;
  wq: WeightMatrix; wk: WeightMatrix; wv: WeightMatrix; wo: WeightMatrix;
  bq: Float32Array | null; bk: Float32Array | null; bv: Float32Array | null;
  postNorm: Float32Array;
  wGate: WeightMatrix; wUp: WeightMatrix; wDown: WeightMatrix;
}

export interface ModelWeights {
  embed: WeightMatrix;
  layers: LayerWeights[];
  finalNorm: Float32Array;
  /** The same object as `embed` when the embeddings are tied. */
  lmHead: WeightMatrix;
}

export type LoadProgress = (loadedBytes: number, totalBytes: number, tensor: string) => void;

/**
 * How the loader stores matmul weights: a format (every matrix converted to it as it is read), or
 * 'keep' (each tensor in the file's own format; safetensors F32/F16/BF16 then load as f32).
 */
export type LoadWeights = WeightDType | 'keep';

export interface LoadOptions {
  onProgress?: LoadProgress;
  /** Storage of the matmul weights and embeddings; a function gets the parsed config first. Default 'keep'. */
  weights?: LoadWeights | ((config: ModelConfig) => LoadWeights);
  /**
   * Most host memory the loaded weights may hold (the Node entry passes the machine's total memory):
   * a checkpoint whose weights would need more is refused before any tensor is read.
   */
  hostBytes?: number;
}

/** Host bytes the loader held: `held` at the end (the weights it returns), `peak` at its highest (held + the tensor being converted). */
export interface LoadStats { heldBytes: number; peakBytes: number }

export function isPacked(m: WeightMatrix): m is PackedMatrix {
  return !(m instanceof Float32Array);
}

/** Whether any matmul weight of `w` is stored in a packed (non-f32) format. */
export function weightsArePacked(w: ModelWeights): boolean {
  const packed = (m: WeightMatrix) => matrixDType(m) !== 'f32';
  return packed(w.lmHead) || w.layers.some((l) => [l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown].some(packed));
}

/** Bytes a weight matrix occupies. */
export function matrixBytes(m: WeightMatrix): number {
  return isPacked(m) ? (m.dtype === 'f32' ? m.data.byteLength : packedBytes(m)) : m.byteLength;
}

/** Storage format of a weight matrix. */
export function matrixDType(m: WeightMatrix): WeightDType {
  return isPacked(m) ? m.dtype : 'f32';
}

/** A matrix's f32 values (the array itself when it is f32; otherwise dequantized: a new array). */
export function matrixF32(m: WeightMatrix): Float32Array {
  if (!isPacked(m)) return m;
  return m.dtype === 'f32' ? m.data as Float32Array : dequantizeMatrix(m);
}

/** `m` as a PackedMatrix of [rows, cols] (a view of an f32 array, no copy). */
export function asPacked(m: WeightMatrix, rows: number, cols: number): PackedMatrix {
  return isPacked(m) ? m : { dtype: 'f32', rows, cols, data: m };
}

/**
 * `m` stored as `dtype` ('keep': unchanged). f32 results are plain arrays. A conversion between two
 * packed formats goes through one transient f32 copy of this matrix only.
 */
export function convertMatrix(m: WeightMatrix, rows: number, cols: number, dtype: LoadWeights, what?: string): WeightMatrix {
  if (dtype === 'keep' || matrixDType(m) === dtype) return isPacked(m) && m.dtype === 'f32' ? m.data as Float32Array : m;
  const f = matrixF32(m);
  return dtype === 'f32' ? f : quantizeMatrix(dtype, f, rows, cols, what);
}

/** Tracks the host bytes a loader holds, for LoadStats. */
export class HeldBytes {
  held = 0;
  peak = 0;
  /** A transient buffer of `bytes` exists next to what is held. */
  transient(bytes: number): void { this.peak = Math.max(this.peak, this.held + bytes); }
  keep(bytes: number): void { this.held += bytes; this.peak = Math.max(this.peak, this.held); }
  stats(): LoadStats { return { heldBytes: this.held, peakBytes: this.peak }; }
}

/**
 * Host bytes a tensor of `shape` holds once loaded: f32 for vectors and for matrices read as f32,
 * the target format's bytes for converted matrices, `keptBytes` (its bytes as stored) when kept packed.
 */
export function loadedBytes(shape: number[], dtype: LoadWeights, keptBytes?: number): number {
  const n = shape.reduce((a, b) => a * b, 1);
  if (shape.length < 2) return 4 * n;
  if (dtype === 'keep') return keptBytes ?? 4 * n;
  return shape[0] * rowBytes(dtype, shape[1]);
}

/** Refuses weights that would need more host memory than `limit` before anything is read. */
export function checkHostBytes(bytes: number, limit: number | undefined, file: string, dtype: LoadWeights): void {
  if (limit === undefined || bytes <= limit) return;
  const as = dtype === 'keep' ? 'as stored' : `as ${dtype}`;
  throw new Error(`${file}: its weights need ${formatBytes(bytes)} (${bytes} bytes) of host memory loaded ${as}, more than the ${formatBytes(limit)} this machine has; store them smaller (weights 'q4_0' or 'q4_k')`);
}

export function resolveLoadWeights(option: LoadOptions['weights'], config: ModelConfig): LoadWeights {
  return typeof option === 'function' ? option(config) : option ?? 'keep';
}

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

/** The checkpoint's weights, each matmul weight stored as `dtype` as soon as its tensor is read. */
export async function loadWeights(files: ModelFiles, config: ModelConfig, options: { onProgress?: LoadProgress; weights?: LoadWeights; stats?: HeldBytes; hostBytes?: number } = {}): Promise<ModelWeights> {
  const { onProgress } = options;
  const dtype = options.weights ?? 'keep';
  const held = options.stats ?? new HeldBytes();
  const index = await readCheckpointIndex(files);
  checkLayerCount(index, config.numLayers, files.name);
  const { hiddenSize: H, intermediateSize: I, numHeads, headDim: D, vocabSize: V } = config;
  const expected = new Map<string, number[]>();
  // Where a K/V tensor's expected rows come from (a DHA layer's own head counts), for the shape error.
  const origin = new Map<string, string>();
  expected.set('model.embed_tokens.weight', [V, H]);
  for (let l = 0; l < config.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const { keyHeads, valueHeads } = layerKvHeads(config, l);
    expected.set(`${p}input_layernorm.weight`, [H]);
    expected.set(`${p}self_attn.q_proj.weight`, [numHeads * D, H]);
    expected.set(`${p}self_attn.k_proj.weight`, [keyHeads * D, H]);
    expected.set(`${p}self_attn.v_proj.weight`, [valueHeads * D, H]);
    expected.set(`${p}self_attn.o_proj.weight`, [H, numHeads * D]);
    if (config.attentionBias) {
      expected.set(`${p}self_attn.q_proj.bias`, [numHeads * D]);
      expected.set(`${p}self_attn.k_proj.bias`, [keyHeads * D]);
      expected.set(`${p}self_attn.v_proj.bias`, [valueHeads * D]);
    }
    if (config.dha) {
      for (const part of ['weight', 'bias']) {
        origin.set(`${p}self_attn.k_proj.${part}`, `duet_dha.layers[${l}].key_heads ${keyHeads} × head_dim ${D} rows`);
        origin.set(`${p}self_attn.v_proj.${part}`, `duet_dha.layers[${l}].value_heads ${valueHeads} × head_dim ${D} rows`);
      }
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
  let total = 0, planned = 0;
  for (const [name, shape] of expected) {
    const t = index.get(name);
    if (!t) throw new Error(`${files.name}: tensor "${name}" is missing from the checkpoint${name === 'lm_head.weight' ? ' (config.json says the embeddings are not tied)' : ''}`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      const from = origin.get(name);
      throw new Error(`${t.file}: tensor "${name}" has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}] from config.json${from ? ` (${from})` : ''}`);
    }
    infos.set(name, t);
    total += t.byteLength;
    planned += loadedBytes(shape, dtype);
  }
  checkHostBytes(planned, options.hostBytes, files.name, dtype);
  let loaded = 0;
  const read = async (name: string): Promise<Float32Array> => {
    const t = infos.get(name)!;
    // The file's bytes and their f32 decoding exist together for a moment.
    held.transient(t.byteLength + 4 * t.shape.reduce((a, b) => a * b, 1));
    const data = await readTensor(files, t);
    loaded += t.byteLength;
    onProgress?.(loaded, total, name);
    return data;
  };
  const vector = async (name: string): Promise<Float32Array> => {
    const v = await read(name);
    held.keep(v.byteLength);
    return v;
  };
  const matrix = async (name: string): Promise<WeightMatrix> => {
    const [rows, cols] = expected.get(name)!;
    const f = await read(name);
    const m = convertMatrix(f, rows, cols, dtype, `${infos.get(name)!.file}: tensor "${name}"`);
    if (m !== f) held.transient(f.byteLength + matrixBytes(m)); // f is dropped once packed
    held.keep(matrixBytes(m));
    return m;
  };
  const embed = await matrix('model.embed_tokens.weight');
  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const p = `model.layers.${l}.`;
    layers.push({
      inputNorm: await vector(`${p}input_layernorm.weight`),
      wq: await matrix(`${p}self_attn.q_proj.weight`), wk: await matrix(`${p}self_attn.k_proj.weight`),
      wv: await matrix(`${p}self_attn.v_proj.weight`), wo: await matrix(`${p}self_attn.o_proj.weight`),
      bq: config.attentionBias ? await vector(`${p}self_attn.q_proj.bias`) : null,
      bk: config.attentionBias ? await vector(`${p}self_attn.k_proj.bias`) : null,
      bv: config.attentionBias ? await vector(`${p}self_attn.v_proj.bias`) : null,
      postNorm: await vector(`${p}post_attention_layernorm.weight`),
      wGate: await matrix(`${p}mlp.gate_proj.weight`), wUp: await matrix(`${p}mlp.up_proj.weight`), wDown: await matrix(`${p}mlp.down_proj.weight`),
    });
  }
  const finalNorm = await vector('model.norm.weight');
  const lmHead = tied ? embed : await matrix('lm_head.weight');
  return { embed, layers, finalNorm, lmHead };
}
