// A GGUF file as a Duet checkpoint: metadata → ModelConfig, llama.cpp tensor names → Duet's
// weights, and the Q/K row permutation that llama.cpp's converter applies to llama-family
// attention undone (qwen2 is converted unpermuted: llama.cpp runs it with NEOX-style RoPE).
import { checkModelSize, type ModelConfig, type ModelType, type RopeScaling } from './config.js';
import type { ModelFiles } from './files.js';
import { readGgufHeader, TENSOR_TYPES, type GgufEntry, type GgufHeader, type GgufTensor } from './gguf.js';
import { decodeTensor } from './safetensors.js';
import type { PackedMatrix } from './quant.js';
import { checkHostBytes, convertMatrix, HeldBytes, loadedBytes, matrixBytes, matrixF32, type LayerWeights, type LoadProgress, type LoadWeights, type ModelWeights, type WeightMatrix } from './weights.js';

export const GGUF_ARCHITECTURES: readonly ModelType[] = ['llama', 'mistral', 'qwen2'];

/** llama.cpp permutes Q/K rows for these architectures (convert_hf_to_gguf's LlamaModel.permute). */
export const permutesQK = (t: ModelType): boolean => t === 'llama' || t === 'mistral';

type Meta = GgufHeader['metadata'];

function metaReader(file: string, meta: Meta) {
  const get = (key: string): GgufEntry | undefined => meta.get(key);
  const fail = (key: string, why: string): never => { throw new Error(`${file}: metadata "${key}" ${why}`); };
  const num = (key: string, opts: { fallback?: number; int?: boolean } = {}): number => {
    const e = get(key);
    if (e === undefined) return opts.fallback !== undefined ? opts.fallback : fail(key, 'is missing');
    const v = e.value;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || (opts.int && !Number.isInteger(v))) {
      return fail(key, `must be a positive ${opts.int ? 'integer' : 'number'} (got ${JSON.stringify(typeof v === 'bigint' ? String(v) : v)})`);
    }
    return v;
  };
  const str = (key: string): string | undefined => {
    const e = get(key);
    if (e === undefined) return undefined;
    if (typeof e.value !== 'string') fail(key, 'must be a string');
    return e.value as string;
  };
  const optInt = (key: string): number | null => {
    const e = get(key);
    if (e === undefined) return null;
    if (typeof e.value !== 'number' || !Number.isInteger(e.value) || e.value < 0) fail(key, `must be a non-negative integer (got ${JSON.stringify(e.value)})`);
    return e.value as number;
  };
  return { get, fail, num, str, optInt };
}

/** The model config a GGUF header describes. */
export function ggufConfig(h: GgufHeader): ModelConfig {
  const m = metaReader(h.file, h.metadata);
  const arch = m.str('general.architecture');
  if (arch === undefined) m.fail('general.architecture', 'is missing');
  if (!GGUF_ARCHITECTURES.includes(arch as ModelType)) {
    throw new Error(`${h.file}: unsupported architecture "${arch}" (metadata "general.architecture"); Duet runs ${GGUF_ARCHITECTURES.join(', ')}`);
  }
  const modelType = arch as ModelType;
  const k = (s: string) => `${arch}.${s}`;
  const hiddenSize = m.num(k('embedding_length'), { int: true });
  const numHeads = m.num(k('attention.head_count'), { int: true });
  const numKvHeads = m.num(k('attention.head_count_kv'), { int: true, fallback: numHeads });
  if (numHeads % numKvHeads !== 0) m.fail(k('attention.head_count_kv'), `(${numKvHeads}) must divide ${k('attention.head_count')} (${numHeads})`);
  if (!h.metadata.has(k('attention.key_length')) && hiddenSize % numHeads !== 0) {
    m.fail(k('embedding_length'), `(${hiddenSize}) must be divisible by the head count (${numHeads}) when ${k('attention.key_length')} is absent`);
  }
  const headDim = m.num(k('attention.key_length'), { int: true, fallback: hiddenSize / numHeads });
  const vLen = m.num(k('attention.value_length'), { int: true, fallback: headDim });
  if (vLen !== headDim) m.fail(k('attention.value_length'), `(${vLen}) differs from the key length (${headDim}); Duet needs them equal`);
  if (headDim % 2 !== 0) m.fail(k('attention.key_length'), `(${headDim}) must be even for rotary embeddings`);
  const ropeDims = m.num(k('rope.dimension_count'), { int: true, fallback: headDim });
  if (ropeDims !== headDim) m.fail(k('rope.dimension_count'), `(${ropeDims}) differs from the head dimension (${headDim}); partial rotary embeddings are not supported`);

  let ropeScaling: RopeScaling | null = null;
  const scalingType = m.str(k('rope.scaling.type')) ?? (h.metadata.has(k('rope.scale_linear')) ? 'linear' : 'none');
  if (scalingType === 'linear') {
    ropeScaling = { type: 'linear', factor: m.num(k('rope.scaling.factor'), { fallback: h.metadata.has(k('rope.scale_linear')) ? m.num(k('rope.scale_linear')) : undefined }) };
  } else if (scalingType !== 'none') {
    m.fail(k('rope.scaling.type'), `is "${scalingType}"; Duet supports none, linear and llama3 (rope_freqs)`);
  }
  const freqs = h.tensors.get('rope_freqs.weight');
  if (freqs) {
    if (ropeScaling) throw new Error(`${h.file}: both rope_freqs.weight and ${k('rope.scaling.type')} = linear are given`);
    if (freqs.dims.length !== 1 || freqs.dims[0] !== headDim / 2 || freqs.type !== 0) {
      throw new Error(`${h.file}: tensor "rope_freqs.weight" must be F32 [${headDim / 2}] (got ${TENSOR_TYPES[freqs.type].name} [${freqs.dims.join(', ')}])`);
    }
    ropeScaling = { type: 'factors', factors: new Float32Array(headDim / 2) }; // filled by loadGgufWeights
  }
  const embed = h.tensors.get('token_embd.weight');
  const tokens = h.metadata.get('tokenizer.ggml.tokens');
  const vocabSize = m.num(k('vocab_size'), {
    int: true,
    fallback: Array.isArray(tokens?.value) ? tokens.value.length : embed?.dims[1],
  });
  const numLayers = m.num(k('block_count'), { int: true });
  // Checked against the file's tensors before anything is sized by it (a huge block_count would
  // otherwise build a tensor plan of billions of entries before failing).
  let layersInFile = 0;
  for (const name of h.tensors.keys()) {
    const b = /^blk\.(\d+)\./.exec(name);
    if (b) layersInFile = Math.max(layersInFile, Number(b[1]) + 1);
  }
  if (numLayers !== layersInFile) {
    m.fail(k('block_count'), `is ${numLayers}, but the file has tensors for ${layersInFile} layers${numLayers < layersInFile ? ` (layers ${numLayers}–${layersInFile - 1} would be silently skipped)` : ''}`);
  }
  const eos = m.optInt('tokenizer.ggml.eos_token_id');
  const eot = m.optInt('tokenizer.ggml.eot_token_id');
  return checkModelSize({
    modelType,
    hiddenSize,
    intermediateSize: m.num(k('feed_forward_length'), { int: true }),
    numLayers,
    numHeads, numKvHeads, headDim,
    rmsNormEps: m.num(k('attention.layer_norm_rms_epsilon')),
    ropeTheta: m.num(k('rope.freq_base'), { fallback: 10000 }),
    ropeScaling,
    maxPositionEmbeddings: m.num(k('context_length'), { int: true }),
    vocabSize,
    tieWordEmbeddings: !h.tensors.has('output.weight'),
    attentionBias: modelType === 'qwen2' || h.tensors.has('blk.0.attn_q.bias'),
    slidingWindow: m.optInt(k('attention.sliding_window')),
    bosTokenId: m.optInt('tokenizer.ggml.bos_token_id'),
    eosTokenIds: [...new Set([eos, eot].filter((x): x is number => x !== null))],
  }, h.file);
}

/**
 * Undoes llama.cpp's Q/K permutation on whole rows of any encoding: within each head of `D` rows,
 * GGUF row 2i+half holds Hugging Face row half·D/2 + i.
 */
export function unpermuteRows(src: Uint8Array, rows: number, heads: number): Uint8Array {
  const rowBytes = src.length / rows, D = rows / heads, half = D / 2;
  const out = new Uint8Array(src.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let s = 0; s < 2; s++) {
        const from = (h * D + 2 * i + s) * rowBytes, to = (h * D + s * half + i) * rowBytes;
        out.set(src.subarray(from, from + rowBytes), to);
      }
    }
  }
  return out;
}

/** The inverse of unpermuteRows: what the converter writes. */
export function permuteRows(src: Uint8Array, rows: number, heads: number): Uint8Array {
  const rowBytes = src.length / rows, D = rows / heads, half = D / 2;
  const out = new Uint8Array(src.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let s = 0; s < 2; s++) {
        const from = (h * D + s * half + i) * rowBytes, to = (h * D + 2 * i + s) * rowBytes;
        out.set(src.subarray(from, from + rowBytes), to);
      }
    }
  }
  return out;
}

/** Duet's weight name → the llama.cpp tensor name and expected HF shape [rows, cols] or [n]. */
export function ggufTensorPlan(config: ModelConfig): Array<{ gguf: string; shape: number[]; permuteHeads: number }> {
  const { hiddenSize: H, intermediateSize: I, numHeads, numKvHeads, headDim: D, vocabSize: V } = config;
  const perm = permutesQK(config.modelType);
  const plan: Array<{ gguf: string; shape: number[]; permuteHeads: number }> = [];
  const add = (gguf: string, shape: number[], permuteHeads = 0) => plan.push({ gguf, shape, permuteHeads });
  add('token_embd.weight', [V, H]);
  for (let l = 0; l < config.numLayers; l++) {
    const p = `blk.${l}.`;
    add(`${p}attn_norm.weight`, [H]);
    add(`${p}attn_q.weight`, [numHeads * D, H], perm ? numHeads : 0);
    add(`${p}attn_k.weight`, [numKvHeads * D, H], perm ? numKvHeads : 0);
    add(`${p}attn_v.weight`, [numKvHeads * D, H]);
    add(`${p}attn_output.weight`, [H, numHeads * D]);
    if (config.attentionBias) {
      add(`${p}attn_q.bias`, [numHeads * D], perm ? numHeads : 0);
      add(`${p}attn_k.bias`, [numKvHeads * D], perm ? numKvHeads : 0);
      add(`${p}attn_v.bias`, [numKvHeads * D]);
    }
    add(`${p}ffn_norm.weight`, [H]);
    add(`${p}ffn_gate.weight`, [I, H]);
    add(`${p}ffn_up.weight`, [I, H]);
    add(`${p}ffn_down.weight`, [H, I]);
  }
  add('output_norm.weight', [H]);
  if (!config.tieWordEmbeddings) add('output.weight', [V, H]);
  return plan;
}

/** One tensor's (unpermuted) bytes as a packed matrix of the tensor's own type (no conversion). */
export type GgufDecoder = (t: GgufTensor, bytes: Uint8Array, rows: number, cols: number) => PackedMatrix;

/**
 * Reads, shape-checks and unpermutes every weight of `config` from the GGUF file. Matrices stay in
 * their file type (`weights` 'keep': the same bytes, never dequantized) or are converted one tensor
 * at a time; 1-D tensors (norms, biases) load as f32.
 */
export async function loadGgufWeights(files: ModelFiles, path: string, h: GgufHeader, config: ModelConfig,
  decode: GgufDecoder, options: { onProgress?: LoadProgress; weights?: LoadWeights; stats?: HeldBytes; hostBytes?: number } = {}): Promise<ModelWeights> {
  const { onProgress } = options;
  const target = options.weights ?? 'keep';
  const held = options.stats ?? new HeldBytes();
  const plan = ggufTensorPlan(config);
  let total = 0, planned = 0;
  for (const { gguf, shape } of plan) {
    const t = h.tensors.get(gguf);
    if (!t) throw new Error(`${h.file}: tensor "${gguf}" is missing`);
    const dims = [...shape].reverse(); // ggml order
    if (t.dims.length !== dims.length || t.dims.some((d, i) => d !== dims[i])) {
      throw new Error(`${h.file}: tensor "${gguf}" has dims [${t.dims.join(', ')}], expected [${dims.join(', ')}] from the metadata`);
    }
    total += t.byteLength;
    planned += loadedBytes(shape, target, t.byteLength);
  }
  checkHostBytes(planned, options.hostBytes, h.file, target);
  let loaded = 0;
  const byName = new Map<string, WeightMatrix>();
  for (const { gguf, shape, permuteHeads } of plan) {
    const t = h.tensors.get(gguf)!;
    let bytes = await files.readBytes(path, t.offset, t.byteLength);
    const rows = shape[0], cols = shape[1] ?? 1;
    held.transient(2 * t.byteLength); // the read and its unpermuted or decoded copy
    if (permuteHeads) bytes = unpermuteRows(bytes, rows, permuteHeads);
    let data: WeightMatrix;
    try {
      const packed = decode(t, bytes, rows, cols);
      data = shape.length === 1 ? matrixF32(packed) : convertMatrix(packed, rows, cols, target, `tensor "${gguf}"`);
      // A conversion holds the tensor's bytes, its f32 values and the result for a moment.
      if (data !== packed && data !== packed.data) held.transient(t.byteLength + 4 * rows * cols + matrixBytes(data));
    } catch (e) { throw new Error(`${h.file}: ${(e as Error).message}`); }
    held.keep(matrixBytes(data));
    byName.set(gguf, data);
    loaded += t.byteLength;
    onProgress?.(loaded, total, gguf);
  }
  if (config.ropeScaling?.type === 'factors') {
    const t = h.tensors.get('rope_freqs.weight')!;
    const f = decodeTensor(await files.readBytes(path, t.offset, t.byteLength), 'F32');
    for (let i = 0; i < f.length; i++) {
      if (!(f[i] > 0) || !Number.isFinite(f[i])) throw new Error(`${h.file}: tensor "rope_freqs.weight"[${i}] is ${f[i]}; factors must be positive`);
    }
    config.ropeScaling.factors.set(f);
  }
  const w = (n: string) => byName.get(n)!;
  const v = (n: string) => byName.get(n) as Float32Array;
  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const p = `blk.${l}.`;
    layers.push({
      inputNorm: v(`${p}attn_norm.weight`),
      wq: w(`${p}attn_q.weight`), wk: w(`${p}attn_k.weight`), wv: w(`${p}attn_v.weight`), wo: w(`${p}attn_output.weight`),
      bq: config.attentionBias ? v(`${p}attn_q.bias`) : null,
      bk: config.attentionBias ? v(`${p}attn_k.bias`) : null,
      bv: config.attentionBias ? v(`${p}attn_v.bias`) : null,
      postNorm: v(`${p}ffn_norm.weight`),
      wGate: w(`${p}ffn_gate.weight`), wUp: w(`${p}ffn_up.weight`), wDown: w(`${p}ffn_down.weight`),
    });
  }
  const embed = w('token_embd.weight');
  return { embed, layers, finalNorm: v('output_norm.weight'), lmHead: config.tieWordEmbeddings ? embed : w('output.weight') };
}

export { readGgufHeader };
