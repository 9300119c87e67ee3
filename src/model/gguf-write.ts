// A checkpoint written as GGUF the way llama.cpp's convert_hf_to_gguf + llama-quantize lay it out:
// the architecture's metadata keys, llama.cpp tensor names, Q/K rows permuted for the llama family,
// 1-D tensors in F32, matrices in the requested type (or a fallback when their rows do not fill
// the type's blocks, as llama-quantize does), data aligned to 32 bytes.
import type { ModelConfig } from './config.js';
import { refuseDha, ropeInvFreq } from './config.js';
import { encodeGguf, ValueType, type GgufWriteTensor, type GgufWriteValue } from './gguf.js';
import { ggufTensorPlan, permuteRows, permutesQK } from './gguf-model.js';
import { matrixF32, type ModelWeights, type WeightMatrix } from './weights.js';
import { blockSize, GGML_TYPE, type WeightDType } from './quant.js';

/** Tensor types `duet quantize` writes: every packed weight type of quant.ts. */
export type WriteType = WeightDType;

/** llama.cpp's general.file_type per requested type (LLAMA_FTYPE_ALL_F32, MOSTLY_F16, Q8_0, Q4_0, Q4_K_S). */
const FILE_TYPE: Record<WriteType, number> = { f32: 0, f16: 1, q8_0: 7, q4_0: 2, q4_k: 14 };

/** llama-quantize's fallback when a row does not fill whole blocks (Q5_0 is not in Duet: Q4_0 instead), then F16. */
export function fallbackType(type: WriteType, cols: number): WriteType {
  if (cols % blockSize(type) === 0) return type;
  if (type === 'q4_k' && cols % 32 === 0) return 'q4_0';
  return 'f16';
}

/** Encodes one [rows, cols] matrix as `type`; `name` (the GGUF tensor name) is for its errors. */
export type MatrixEncoder = (type: WriteType, values: Float32Array, rows: number, cols: number, name: string) => Uint8Array;

export interface GgufWriteOptions {
  name: string;
  type: WriteType;
  encode: MatrixEncoder;
  /** tokenizer.ggml.* and tokenizer.chat_template entries. */
  tokenizer?: Array<[string, GgufWriteValue]>;
  /** Called once per tensor that falls back to another type. */
  onFallback?: (tensor: string, from: WriteType, to: WriteType, cols: number) => void;
}

/** llama3 rope scaling as the per-frequency divisors llama.cpp reads from rope_freqs.weight. */
export function llama3RopeFactors(config: ModelConfig): Float32Array {
  const plain = ropeInvFreq({ ...config, ropeScaling: null });
  const scaled = ropeInvFreq(config);
  return plain.map((p, i) => p / scaled[i]);
}

export function ggufChunks(config: ModelConfig, weights: ModelWeights, opts: GgufWriteOptions): Uint8Array[] {
  refuseDha(config, 'GGUF export (GGUF has one KV head count per model)');
  // llama.cpp has no "mistral" architecture: its converter writes Mistral checkpoints as llama.
  const arch = config.modelType === 'qwen2' ? 'qwen2' : 'llama';
  const k = (s: string) => `${arch}.${s}`;
  const u32 = (value: number): GgufWriteValue => ({ type: ValueType.U32, value });
  const f32 = (value: number): GgufWriteValue => ({ type: ValueType.F32, value });
  const meta: Array<[string, GgufWriteValue]> = [
    ['general.architecture', { type: ValueType.STRING, value: arch }],
    ['general.name', { type: ValueType.STRING, value: opts.name }],
    ['general.file_type', u32(FILE_TYPE[opts.type])],
    ['general.quantization_version', u32(2)],
    [k('vocab_size'), u32(config.vocabSize)],
    [k('context_length'), u32(config.maxPositionEmbeddings)],
    [k('embedding_length'), u32(config.hiddenSize)],
    [k('block_count'), u32(config.numLayers)],
    [k('feed_forward_length'), u32(config.intermediateSize)],
    [k('rope.dimension_count'), u32(config.headDim)],
    [k('attention.head_count'), u32(config.numHeads)],
    [k('attention.head_count_kv'), u32(config.numKvHeads)],
    [k('attention.layer_norm_rms_epsilon'), f32(config.rmsNormEps)],
    [k('rope.freq_base'), f32(config.ropeTheta)],
  ];
  if (config.headDim * config.numHeads !== config.hiddenSize) {
    meta.push([k('attention.key_length'), u32(config.headDim)], [k('attention.value_length'), u32(config.headDim)]);
  }
  if (config.ropeScaling?.type === 'linear') {
    meta.push([k('rope.scaling.type'), { type: ValueType.STRING, value: 'linear' }], [k('rope.scaling.factor'), f32(config.ropeScaling.factor)]);
  }
  if (config.slidingWindow !== null) throw new Error(`${opts.name}: sliding_window ${config.slidingWindow} cannot be written (llama.cpp's llama/qwen2 GGUF has no such key and Duet does not apply it)`);
  meta.push(...(opts.tokenizer ?? []));

  const byName = ggufSources(config, weights);
  const tensors: GgufWriteTensor[] = [];
  if (config.ropeScaling?.type === 'llama3' || config.ropeScaling?.type === 'factors') {
    const f = config.ropeScaling.type === 'factors' ? config.ropeScaling.factors : llama3RopeFactors(config);
    tensors.push({ name: 'rope_freqs.weight', dims: [f.length], type: 0, data: bytesOf(Float32Array.from(f)) });
  }
  const perm = permutesQK(config.modelType);
  for (const { gguf, shape, permuteHeads } of ggufTensorPlan(config)) {
    const source = byName.get(gguf)!;
    let values = typeof source === 'function' ? source() : source;
    const rows = shape[0], cols = shape[1] ?? 1;
    if (perm && permuteHeads) values = new Float32Array(permuteRows(bytesOf(values), rows, permuteHeads).buffer);
    if (shape.length === 1) {
      tensors.push({ name: gguf, dims: [rows], type: 0, data: bytesOf(values) });
      continue;
    }
    const type = fallbackType(opts.type, cols);
    if (type !== opts.type) opts.onFallback?.(gguf, opts.type, type, cols);
    tensors.push({ name: gguf, dims: [cols, rows], type: GGML_TYPE[type], data: opts.encode(type, values, rows, cols, gguf) });
  }
  return encodeGguf(meta, tensors);
}

function bytesOf(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Each tensor's f32 values (packed matrices are dequantized one at a time, as they are written). */
function ggufSources(config: ModelConfig, w: ModelWeights): Map<string, Float32Array | (() => Float32Array)> {
  const m = new Map<string, Float32Array | (() => Float32Array)>();
  const lazy = (x: WeightMatrix) => () => matrixF32(x);
  m.set('token_embd.weight', lazy(w.embed));
  w.layers.forEach((l, i) => {
    const p = `blk.${i}.`;
    m.set(`${p}attn_norm.weight`, l.inputNorm);
    m.set(`${p}attn_q.weight`, lazy(l.wq)); m.set(`${p}attn_k.weight`, lazy(l.wk)); m.set(`${p}attn_v.weight`, lazy(l.wv));
    m.set(`${p}attn_output.weight`, lazy(l.wo));
    if (config.attentionBias) { m.set(`${p}attn_q.bias`, l.bq!); m.set(`${p}attn_k.bias`, l.bk!); m.set(`${p}attn_v.bias`, l.bv!); }
    m.set(`${p}ffn_norm.weight`, l.postNorm);
    m.set(`${p}ffn_gate.weight`, lazy(l.wGate)); m.set(`${p}ffn_up.weight`, lazy(l.wUp)); m.set(`${p}ffn_down.weight`, lazy(l.wDown));
  });
  m.set('output_norm.weight', w.finalNorm);
  if (!config.tieWordEmbeddings) m.set('output.weight', lazy(w.lmHead));
  return m;
}
