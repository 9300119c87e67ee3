// Exact shapes of real models (their Hugging Face config.json fields), so `duet bench --shape NAME`
// measures the right matrix and cache sizes without downloading anything. Weights are random
// (random-weights.ts). The CPU backend holds at most 4 GiB (see WASM_BUDGET), so f32 copies of
// whole models rarely fit: a bench may keep only the first layers (`--layers N`); times are then
// per that layer count.
import { rowBytes, type WeightDType } from '../model/quant.js';
import { DuetError } from '../errors.js';
import { parseModelConfig, type ModelConfig } from '../model/config.js';

export interface ShapeSpec {
  /** Where the numbers come from. */
  source: string;
  config: Record<string, unknown>;
}

export const SHAPES: Record<string, ShapeSpec> = {
  'llama-3.2-1b': {
    source: 'meta-llama/Llama-3.2-1B config.json',
    config: {
      architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 2048, intermediate_size: 8192,
      num_hidden_layers: 16, num_attention_heads: 32, num_key_value_heads: 8, head_dim: 64, vocab_size: 128256,
      max_position_embeddings: 131072, rms_norm_eps: 1e-5, rope_theta: 500000,
      rope_scaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
      tie_word_embeddings: true, bos_token_id: 128000, eos_token_id: 128001,
    },
  },
  'llama-3-8b': {
    source: 'meta-llama/Meta-Llama-3-8B config.json',
    config: {
      architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 4096, intermediate_size: 14336,
      num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, vocab_size: 128256,
      max_position_embeddings: 8192, rms_norm_eps: 1e-5, rope_theta: 500000, tie_word_embeddings: false,
      bos_token_id: 128000, eos_token_id: 128001,
    },
  },
  'llama-2-7b': {
    source: 'meta-llama/Llama-2-7b-hf config.json (MHA: 32 KV heads)',
    config: {
      architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 4096, intermediate_size: 11008,
      num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 32, vocab_size: 32000,
      max_position_embeddings: 4096, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
      bos_token_id: 1, eos_token_id: 2,
    },
  },
  'qwen2.5-0.5b': {
    source: 'Qwen/Qwen2.5-0.5B config.json',
    config: {
      architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', hidden_size: 896, intermediate_size: 4864,
      num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, vocab_size: 151936,
      max_position_embeddings: 32768, rms_norm_eps: 1e-6, rope_theta: 1000000, tie_word_embeddings: true,
      bos_token_id: 151643, eos_token_id: 151643,
    },
  },
  /** Not a real model: a few-MB shape for smoke tests. */
  tiny: {
    source: 'a tiny test shape (not a real model)',
    config: {
      architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 64, intermediate_size: 128,
      num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 256,
      max_position_embeddings: 4096, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
    },
  },
};

/** "1 layer", "2 layers". */
export function layersText(n: number): string {
  return `${n} layer${n === 1 ? '' : 's'}`;
}

export function shapeNames(): string[] {
  return Object.keys(SHAPES);
}

export function shapeSpec(name: string): ShapeSpec {
  const s = SHAPES[name];
  if (!s) throw new DuetError('shape', `unknown shape "${name}" (known: ${shapeNames().join(', ')})`);
  return s;
}

/** Bytes of a rows × cols matmul weight stored as `dtype` (rows padded to whole blocks, as the engine stores them). */
function matrix(rows: number, cols: number, dtype: WeightDType): number {
  return rows * rowBytes(dtype, cols);
}

/** Bytes of one layer's attention projections (q, k, v, o as `dtype`; their biases f32). */
export function attentionWeightBytes(c: ModelConfig, dtype: WeightDType = 'f32'): number {
  const q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim, h = c.hiddenSize;
  return matrix(q, h, dtype) + 2 * matrix(kv, h, dtype) + matrix(h, q, dtype) + (c.attentionBias ? q + 2 * kv : 0) * 4;
}

/** Bytes of one decoder layer's weights (projections as `dtype`, biases and norms f32). */
export function layerWeightBytes(c: ModelConfig, dtype: WeightDType = 'f32'): number {
  const h = c.hiddenSize, i = c.intermediateSize;
  return attentionWeightBytes(c, dtype) + 2 * matrix(i, h, dtype) + matrix(h, i, dtype) + 2 * h * 4;
}

/**
 * f32 bytes of the weights outside the layers. The bench keeps one vocabulary matrix even for
 * untied models (the LM head shares the embedding's memory: each decode step reads the same bytes).
 */
export function outerWeightBytes(c: ModelConfig, dtype: WeightDType = 'f32'): number {
  return matrix(c.vocabSize, c.hiddenSize, dtype) + (c.hiddenSize + c.headDim / 2) * 4;
}

/** Bytes of weights one decode step reads (matmul weights as `dtype`): every layer plus the LM head. */
export function decodeWeightBytes(c: ModelConfig, layers = c.numLayers, dtype: WeightDType = 'f32'): number {
  return layers * layerWeightBytes(c, dtype) + matrix(c.vocabSize, c.hiddenSize, dtype);
}

/** f32 KV bytes of one layer with every head full, at `positions` tokens. */
export function layerKvBytes(c: ModelConfig, positions: number): number {
  return 2 * c.numKvHeads * positions * c.headDim * 4;
}

/** How many engines and full-cache equivalents a bench holds at once. */
export interface Residency {
  /** Engines alive together (e2e: full attention and one DuoAttention configuration): each has its own attention weights. */
  engines: number;
  /** Live sessions' KV in units of one full-attention cache (e2e: 1 + the largest 1 − sparsity). */
  kvFactor: number;
}

/**
 * Bytes one WASM memory needs to run everything on the CPU with `layers` layers: the shared weights
 * once, the attention projections and workspaces per engine, the caches of every live session.
 */
export function cpuFootprint(c: ModelConfig, layers: number, positions: number, chunk: number,
  r: Residency = { engines: 1, kvFactor: 1 }, dtype: WeightDType = 'f32'): number {
  const workspace = chunk * (3 * c.hiddenSize + 2 * c.intermediateSize + 4 * c.numHeads * c.headDim) * 4 + c.vocabSize * 4;
  const perLayer = layerWeightBytes(c, dtype) + (r.engines - 1) * attentionWeightBytes(c, dtype) + r.kvFactor * layerKvBytes(c, positions);
  return outerWeightBytes(c, dtype) + layers * perLayer + r.engines * workspace;
}

/** What the CPU side may use: wasm32's 4 GiB, less a margin for allocator gaps and scratch. */
export const CPU_ADDRESSABLE = 4 * 1024 ** 3 - 64 * 1024 ** 2;
export const WASM_BUDGET = CPU_ADDRESSABLE - 128 * 1024 ** 2;

/** The most layers (≤ the model's) whose f32 weights and full caches fit the WASM budget, or 0. */
export function layersThatFit(c: ModelConfig, positions: number, chunk: number, r?: Residency, budget = WASM_BUDGET, dtype: WeightDType = 'f32'): number {
  let n = 0;
  while (n < c.numLayers && cpuFootprint(c, n + 1, positions, chunk, r, dtype) <= budget) n++;
  return n;
}

/** f32 bytes of host weights the bench builds for `layers` layers (one vocabulary matrix). */
export function hostWeightBytes(c: ModelConfig, layers: number): number {
  return outerWeightBytes(c) + layers * layerWeightBytes(c);
}

/** The most layers (≤ the model's) whose f32 host weights fit `budget` bytes. */
export function layersThatFitHost(c: ModelConfig, budget: number): number {
  let n = 0;
  while (n < c.numLayers && hostWeightBytes(c, n + 1) <= budget) n++;
  return n;
}

export interface BenchShapeOptions {
  /** Layers to keep (default: as many as fit). */
  layers?: number;
  positions: number;
  chunk: number;
  residency?: Residency;
  /**
   * Set when no configuration runs on the CPU placement: the CPU backend then holds no weights, so
   * the layer count is bounded by this many bytes of host memory instead of the WASM budget.
   */
  hostBudget?: number;
  /** How the matmul weights are stored (default f32): what fits depends on it. */
  weights?: WeightDType;
}

export interface BenchShape {
  name: string;
  source: string;
  /** The config with the bench's layer count (and positions lifted to the contexts asked for). */
  config: ModelConfig;
  /** The real model's config. */
  full: ModelConfig;
  notes: string[];
}

/**
 * The config of shape `name` with `layers` layers (default: as many as fit with every configuration's
 * engine and cache at `positions` alive at once, or, for GPU placements only, as many as the host
 * budget holds) and max_position_embeddings at least `positions`.
 */
export function benchShape(name: string, options: BenchShapeOptions): BenchShape {
  const spec = shapeSpec(name);
  const full = parseModelConfig(spec.config, `${name} shape`);
  const notes: string[] = [];
  const dtype = options.weights ?? 'f32';
  let layers = options.layers;
  if (options.hostBudget !== undefined) {
    // GPU placements only: the CPU side holds the streaming rings, not the weights; the host holds one f32 copy.
    const fit = layersThatFitHost(full, options.hostBudget);
    if (layers === undefined) {
      layers = fit;
      if (layers === 0) throw new DuetError('shape', `${name}: not even one layer's f32 weights fit in ${(options.hostBudget / 2 ** 30).toFixed(1)} GiB of host memory next to the vocabulary`);
    } else if (layers > fit) {
      notes.push(`${name}: ${layersText(layers)} of f32 weights need ${(hostWeightBytes(full, layers) / 2 ** 30).toFixed(2)} GiB of host memory, more than the ${(options.hostBudget / 2 ** 30).toFixed(1)} GiB budget: the run may fail`);
    }
  } else if (layers === undefined) {
    layers = layersThatFit(full, options.positions, options.chunk, options.residency, WASM_BUDGET, dtype);
    if (layers === 0) {
      throw new DuetError('shape', `${name}: not even one layer fits the CPU backend's ${WASM_BUDGET / 2 ** 30} GiB next to the f32 vocabulary (${(outerWeightBytes(full) / 2 ** 30).toFixed(2)} GiB) with caches for ${options.positions} tokens; use smaller contexts, or set layers to 1 and run GPU placements only`);
    }
  } else if (cpuFootprint(full, layers, options.positions, options.chunk, options.residency, dtype) > WASM_BUDGET) {
    notes.push(`${name}: ${layersText(layers)} with caches for ${options.positions} tokens need about ${(cpuFootprint(full, layers, options.positions, options.chunk, options.residency, dtype) / 2 ** 30).toFixed(2)} GiB on the CPU side, more than the CPU backend's ${(WASM_BUDGET / 2 ** 30).toFixed(2)} GiB: CPU rows may fail`);
  }
  if (!(Number.isInteger(layers) && layers >= 1 && layers <= full.numLayers)) {
    throw new DuetError('layers', `must be an integer in 1..${full.numLayers} for ${name} (got ${layers})`);
  }
  if (layers < full.numLayers) {
    const why = options.hostBudget !== undefined ? 'in host memory' : "in the CPU backend's memory";
    notes.push(`${name}: ${layers} of ${full.numLayers} layers (f32 weights of the whole model do not fit ${options.layers === undefined ? why : 'when --layers cuts it'}); times are for ${layersText(layers)} plus the embedding and LM head`);
  }
  if (!full.tieWordEmbeddings) notes.push(`${name}: the LM head shares the embedding's memory in the bench (same bytes read per token, half the memory)`);
  const json: Record<string, unknown> = { ...spec.config, num_hidden_layers: layers };
  if (full.maxPositionEmbeddings < options.positions) {
    json.max_position_embeddings = options.positions;
    notes.push(`${name}: max_position_embeddings raised from ${full.maxPositionEmbeddings} to ${options.positions} for the longest context (shapes, not quality, are measured)`);
  }
  return { name, source: spec.source, config: parseModelConfig(json, `${name} shape`), full, notes };
}
