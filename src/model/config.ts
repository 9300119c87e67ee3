// config.json of Llama-family checkpoints (llama, mistral, qwen2), validated with errors that name
// the file and the field.
import { DHA_KEY, dhaCacheHeads, hasDha, parseDhaConfig, type DhaConfig } from '../dha/config.js';

export type ModelType = 'llama' | 'mistral' | 'qwen2';

export type RopeScaling =
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number }
  | { type: 'linear'; factor: number }
  /** Per-frequency divisors, as GGUF stores llama3 scaling (the rope_freqs tensor). */
  | { type: 'factors'; factors: Float32Array };

export interface ModelConfig {
  modelType: ModelType;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
  vocabSize: number;
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias (qwen2 always; llama with attention_bias). */
  attentionBias: boolean;
  /**
   * Mistral's sliding window W: a query at position i attends keys j with i − W < j ≤ i (W keys,
   * itself included), as Hugging Face's masks do; null = none. Applied by the engine as a streaming
   * window with no sinks (src/attention/sliding-window.ts).
   */
  slidingWindow: number | null;
  bosTokenId: number | null;
  eosTokenIds: number[];
  /**
   * Decoupled-head attention (config.json's `duet_dha`, src/dha/config.ts): per layer its own key
   * and value head counts and query→key / query→value maps; numKvHeads is then numHeads, the
   * nominal multi-head shape. Absent or null for every other checkpoint.
   */
  dha?: DhaConfig | null;
}

/** Key and value heads of layer l: numKvHeads each, unless the model has a DHA layout. */
export function layerKvHeads(config: ModelConfig, l: number): { keyHeads: number; valueHeads: number } {
  const d = config.dha?.layers[l];
  return d ? { keyHeads: d.keyHeads, valueHeads: d.valueHeads } : { keyHeads: config.numKvHeads, valueHeads: config.numKvHeads };
}

/** Cached heads per token, Σ_l (key heads + value heads) (2 · layers · numKvHeads without DHA). */
export function kvHeadsPerToken(config: ModelConfig): number {
  return config.dha ? dhaCacheHeads(config.dha) : 2 * config.numLayers * config.numKvHeads;
}

/**
 * Refuses a DHA checkpoint in a tool that assumes one key/value head count per model (the trainer,
 * GGUF export); `what` names the tool.
 */
export function refuseDha(config: ModelConfig, what: string, file = 'config.json'): void {
  if (!config.dha) return;
  const counts = config.dha.layers.map((l) => `${l.keyHeads}K+${l.valueHeads}V`).join(', ');
  throw new Error(`${file}: has decoupled key/value heads per layer (${DHA_KEY}: ${counts}); ${what} supports only models with one KV head count (see docs/dha.md)`);
}

const ARCHITECTURES: Record<string, ModelType> = {
  LlamaForCausalLM: 'llama', MistralForCausalLM: 'mistral', Qwen2ForCausalLM: 'qwen2',
};

export function parseModelConfig(json: unknown, file = 'config.json'): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${file}: expected a JSON object`);
  const c = json as Record<string, unknown>;
  const fail = (field: string, why: string): never => { throw new Error(`${file}: field "${field}" ${why}`); };
  const int = (field: string, fallback?: number): number => {
    const v = c[field];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      return fail(field, 'is missing');
    }
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) return fail(field, `must be a positive integer (got ${JSON.stringify(v)})`);
    return v;
  };
  const num = (field: string, fallback: number, obj = c, prefix = ''): number => {
    const v = obj[field];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) return fail(prefix + field, `must be a positive number (got ${JSON.stringify(v)})`);
    return v;
  };

  let modelType = c.model_type as string | undefined;
  if (modelType === undefined && Array.isArray(c.architectures)) modelType = ARCHITECTURES[c.architectures[0] as string];
  if (modelType !== 'llama' && modelType !== 'mistral' && modelType !== 'qwen2') {
    const arch = Array.isArray(c.architectures) ? ` (architectures ${JSON.stringify(c.architectures)})` : '';
    throw new Error(`${file}: unsupported model_type ${JSON.stringify(c.model_type)}${arch}; Duet runs llama, mistral and qwen2`);
  }
  const hiddenSize = int('hidden_size');
  const numHeads = int('num_attention_heads');
  const numKvHeads = int('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) fail('num_key_value_heads', `(${numKvHeads}) must divide num_attention_heads (${numHeads})`);
  if (c.head_dim === undefined && hiddenSize % numHeads !== 0) fail('hidden_size', `(${hiddenSize}) must be divisible by num_attention_heads (${numHeads}) when head_dim is not given`);
  const headDim = int('head_dim', hiddenSize / numHeads);
  if (headDim % 2 !== 0) fail('head_dim', `(${headDim}) must be even for rotary embeddings`);

  let ropeScaling: RopeScaling | null = null;
  const rs = c.rope_scaling;
  if (rs !== undefined && rs !== null) {
    if (typeof rs !== 'object' || Array.isArray(rs)) fail('rope_scaling', 'must be an object or null');
    const r = rs as Record<string, unknown>;
    const kind = r.rope_type ?? r.type;
    if (kind === 'llama3') {
      ropeScaling = {
        type: 'llama3', factor: num('factor', NaN, r, 'rope_scaling.'),
        lowFreqFactor: num('low_freq_factor', NaN, r, 'rope_scaling.'), highFreqFactor: num('high_freq_factor', NaN, r, 'rope_scaling.'),
        originalMaxPositions: num('original_max_position_embeddings', NaN, r, 'rope_scaling.'),
      };
      for (const [k, v] of Object.entries(ropeScaling)) if (Number.isNaN(v)) fail(`rope_scaling.${k.replace(/[A-Z]/g, (m) => `_${m.toLowerCase()}`)}`, 'is missing');
    } else if (kind === 'linear') {
      ropeScaling = { type: 'linear', factor: num('factor', NaN, r, 'rope_scaling.') };
      if (Number.isNaN(ropeScaling.factor)) fail('rope_scaling.factor', 'is missing');
    } else if (kind !== 'default') {
      fail('rope_scaling', `has unsupported rope_type ${JSON.stringify(kind)} (supported: llama3, linear)`);
    }
  }
  // Features these architectures can switch on that Duet does not implement: refused, never ignored.
  const act = c.hidden_act ?? c.hidden_activation;
  if (act !== undefined && act !== 'silu' && act !== 'swish') fail('hidden_act', `is ${JSON.stringify(act)}; Duet implements only silu (SwiGLU MLP)`);
  if (c.mlp_bias !== undefined && c.mlp_bias !== false) fail('mlp_bias', `is ${JSON.stringify(c.mlp_bias)}; Duet's MLP has no biases (only false is supported)`);
  if (c.attention_bias !== undefined && typeof c.attention_bias !== 'boolean') fail('attention_bias', 'must be true or false');
  let slidingWindow: number | null = null;
  if (modelType === 'mistral' && c.sliding_window !== undefined && c.sliding_window !== null) slidingWindow = int('sliding_window');
  if (modelType === 'qwen2' && c.use_sliding_window === true) {
    fail('use_sliding_window', 'is true: sliding windows on some layers (max_window_layers) are not implemented; Duet runs qwen2 with full attention only');
  }
  const eos = c.eos_token_id;
  const eosTokenIds = typeof eos === 'number' ? [eos] : Array.isArray(eos) ? eos.filter((e): e is number => typeof e === 'number') : [];
  const tie = c.tie_word_embeddings;
  if (tie !== undefined && typeof tie !== 'boolean') fail('tie_word_embeddings', 'must be true or false');
  const numLayers = int('num_hidden_layers');
  let dha: DhaConfig | null = null;
  if (hasDha(c)) {
    // The nominal shape stays multi-head; the real head counts are per layer in duet_dha.
    if (numKvHeads !== numHeads) fail('num_key_value_heads', `(${numKvHeads}) must equal num_attention_heads (${numHeads}) in a checkpoint with ${DHA_KEY}, whose layers give their own key and value head counts`);
    if (slidingWindow !== null) fail('sliding_window', `is not supported together with ${DHA_KEY}`);
    dha = parseDhaConfig(c[DHA_KEY], numLayers, numHeads, file);
  }
  return checkModelSize({
    modelType,
    hiddenSize,
    intermediateSize: int('intermediate_size'),
    numLayers,
    numHeads, numKvHeads, headDim,
    rmsNormEps: num('rms_norm_eps', 1e-6),
    ropeTheta: num('rope_theta', 10000),
    ropeScaling,
    maxPositionEmbeddings: int('max_position_embeddings', 2048),
    vocabSize: int('vocab_size'),
    tieWordEmbeddings: (tie as boolean | undefined) ?? false,
    attentionBias: modelType === 'qwen2' ? true : c.attention_bias === true,
    slidingWindow,
    bosTokenId: typeof c.bos_token_id === 'number' ? c.bos_token_id : null,
    eosTokenIds,
    dha,
  }, file);
}

/** Weights (parameters) of the model `config` describes: embeddings, LM head (untied), layers, final norm. */
export function weightCount(config: ModelConfig): number {
  const { hiddenSize: H, intermediateSize: I, numHeads, headDim: D, vocabSize: V, numLayers: L } = config;
  // Q, K, V rows (and biases) per layer: numHeads + the layer's key and value heads, times headDim.
  const qkvRows = L * numHeads * D + kvHeadsPerToken(config) * D;
  const perLayer = numHeads * D * H + 3 * H * I + 2 * H;
  return V * H * (config.tieWordEmbeddings ? 1 : 2) + L * perLayer + H * qkvRows + (config.attentionBias ? qkvRows : 0) + H;
}

/** Largest model Duet accepts: its weights at the smallest storage (4.5 bits each) must fit this. */
export const MAX_MODEL_BYTES = 2 ** 40;
/** Most KV heads (layers × KV heads): Duet keeps a table of every head's kind. */
export const MAX_KV_HEADS = 2 ** 20;

/**
 * Refuses sizes no host could hold before anything is sized by them (a config.json saying
 * num_hidden_layers 1e9 would otherwise build tables for a billion layers before any check).
 */
export function checkModelSize(config: ModelConfig, file = 'config.json'): ModelConfig {
  const heads = config.numLayers * config.numKvHeads;
  if (heads > MAX_KV_HEADS) {
    throw new Error(`${file}: num_hidden_layers × num_key_value_heads is ${config.numLayers} × ${config.numKvHeads} = ${heads} KV heads, more than Duet's limit of ${MAX_KV_HEADS}`);
  }
  const n = weightCount(config);
  const bytes = (n * 4.5) / 8;
  if (bytes > MAX_MODEL_BYTES) {
    const { numLayers, hiddenSize, intermediateSize, vocabSize } = config;
    throw new Error(`${file}: the model it describes has ${n.toExponential(2)} weights (num_hidden_layers ${numLayers}, hidden_size ${hiddenSize}, intermediate_size ${intermediateSize}, vocab_size ${vocabSize}): ${(bytes / 2 ** 40).toFixed(1)} TiB even at 4.5 bits per weight, more than Duet's limit of 1 TiB`);
  }
  return config;
}

/** RoPE inverse frequencies with llama3 / linear scaling folded in (as Hugging Face computes them). */
export function ropeInvFreq(config: ModelConfig): Float32Array {
  const half = config.headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / config.ropeTheta ** ((2 * i) / config.headDim);
  const s = config.ropeScaling;
  if (s?.type === 'linear') {
    for (let i = 0; i < half; i++) inv[i] /= s.factor;
  } else if (s?.type === 'factors') {
    for (let i = 0; i < half; i++) inv[i] /= s.factors[i];
  } else if (s?.type === 'llama3') {
    const lowWavelen = s.originalMaxPositions / s.lowFreqFactor;
    const highWavelen = s.originalMaxPositions / s.highFreqFactor;
    for (let i = 0; i < half; i++) {
      const wavelen = (2 * Math.PI) / inv[i];
      if (wavelen > lowWavelen) inv[i] /= s.factor;
      else if (wavelen >= highWavelen) {
        const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        inv[i] = (1 - smooth) * (inv[i] / s.factor) + smooth * inv[i];
      }
    }
  }
  return Float32Array.from(inv);
}
