// Writes random-weight checkpoints in Hugging Face layout (config.json, safetensors — single or
// sharded — and optionally a byte-level BPE tokenizer.json with a chat template).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { rng } from '../reference/kernels.ts';
import { readCheckpointIndex, readTensor } from '../../src/model/safetensors.ts';
import { nodeModelFiles } from '../../src/node/files.ts';
import { byteLevelAlphabet } from '../../src/model/gguf-tokenizer.ts';

export type Dtype = 'F32' | 'F16' | 'BF16';

export interface CheckpointSpec {
  modelType: 'llama' | 'mistral' | 'qwen2';
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  /** Defaults to hidden / heads. */
  headDim?: number;
  vocab: number;
  dtype: Dtype;
  shards: number;
  tieEmbeddings: boolean;
  attentionBias: boolean;
  ropeTheta: number;
  ropeScaling?: Record<string, unknown>;
  maxPositions: number;
  seed: number;
  /** Weight scale (uniform in ±scale/sqrt(fan_in)). */
  scale: number;
  tokenizer: boolean;
}

export const DEFAULT_SPEC: CheckpointSpec = {
  modelType: 'llama', hidden: 64, intermediate: 96, layers: 2, heads: 4, kvHeads: 2, vocab: 301, dtype: 'F32',
  shards: 1, tieEmbeddings: false, attentionBias: false, ropeTheta: 10000, maxPositions: 4096, seed: 1, scale: 1.5, tokenizer: false,
};

export interface RawTensor { dtype: Dtype | 'I8' | 'F64'; shape: number[]; data: Float32Array | Uint8Array }

function f32ToF16Bits(v: number): number {
  const f = new Float32Array([v]);
  const x = new Uint32Array(f.buffer)[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >> shift;
    const rem = mant & ((1 << shift) - 1), mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  return sign | half;
}

function encode(t: RawTensor): Uint8Array {
  if (t.data instanceof Uint8Array) return t.data;
  const f = t.data;
  if (t.dtype === 'F32') return new Uint8Array(f.buffer.slice(f.byteOffset, f.byteOffset + f.byteLength));
  const u16 = new Uint16Array(f.length);
  if (t.dtype === 'F16') for (let i = 0; i < f.length; i++) u16[i] = f32ToF16Bits(f[i]);
  else {
    const u32 = new Uint32Array(Float32Array.from(f).buffer);
    for (let i = 0; i < f.length; i++) {
      const x = u32[i];
      u16[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16; // round to nearest even
    }
  }
  return new Uint8Array(u16.buffer);
}

/** Writes one safetensors file. */
export function writeSafetensors(path: string, tensors: Record<string, RawTensor>): void {
  const header: Record<string, unknown> = {};
  const blobs: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const bytes = encode(t);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    blobs.push(bytes);
    offset += bytes.byteLength;
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8 !== 0) json += ' ';
  const head = new Uint8Array(8);
  new DataView(head.buffer).setBigUint64(0, BigInt(json.length), true);
  writeFileSync(path, Buffer.concat([head, Buffer.from(json), ...blobs]));
}

/** A byte-level BPE tokenizer: <s>=0, </s>=1, 256 byte tokens, then merges (vocab ≤ `size`). */
export function byteLevelTokenizer(size: number): { tokenizer: object; config: object } {
  const chars = byteLevelAlphabet();
  const vocab: Record<string, number> = { '<s>': 0, '</s>': 1 };
  chars.forEach((c, b) => { vocab[c] = 2 + b; });
  const merges: string[] = [];
  const G = chars[32]; // 'Ġ' (space)
  for (const [a, b] of [['t', 'h'], ['e', 'r'], ['i', 'n'], [G, 't'], ['th', 'e'], [G, 'a'], ['o', 'r'], ['l', 'l'], [G, 'w'], ['e', 'l'], ['o', 'r'], ['l', 'd'], [G, 'the'], ['h', 'el'], ['hel', 'l'], ['hell', 'o']]) {
    if (Object.keys(vocab).length >= size) break;
    if (vocab[a + b] !== undefined) continue;
    merges.push(`${a} ${b}`);
    vocab[a + b] = Object.keys(vocab).length;
  }
  const tokenizer = {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [
      { id: 0, content: '<s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: 1, content: '</s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    ],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: {
      type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [0], tokens: ['<s>'] } },
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges },
  };
  const config = {
    bos_token: '<s>', eos_token: '</s>', add_bos_token: true, tokenizer_class: 'PreTrainedTokenizerFast',
    chat_template: "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
  };
  return { tokenizer, config };
}

/** Writes the checkpoint and returns the spec used. */
export async function writeCheckpoint(dir: string, partial: Partial<CheckpointSpec> = {}): Promise<CheckpointSpec> {
  const s: CheckpointSpec = { ...DEFAULT_SPEC, ...partial };
  mkdirSync(dir, { recursive: true });
  const D = s.headDim ?? s.hidden / s.heads;
  const random = rng(s.seed);
  const mat = (rows: number, cols: number, fan = cols): RawTensor => {
    const data = new Float32Array(rows * cols);
    const a = s.scale / Math.sqrt(fan);
    for (let i = 0; i < data.length; i++) data[i] = (random() * 2 - 1) * a;
    return { dtype: s.dtype, shape: cols === 1 ? [rows] : [rows, cols], data };
  };
  const norm = (n: number): RawTensor => {
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = 0.8 + 0.4 * random();
    return { dtype: s.dtype, shape: [n], data };
  };
  const tensors: Record<string, RawTensor> = {};
  tensors['model.embed_tokens.weight'] = mat(s.vocab, s.hidden, 1);
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}.`;
    tensors[`${p}input_layernorm.weight`] = norm(s.hidden);
    tensors[`${p}self_attn.q_proj.weight`] = mat(s.heads * D, s.hidden);
    tensors[`${p}self_attn.k_proj.weight`] = mat(s.kvHeads * D, s.hidden);
    tensors[`${p}self_attn.v_proj.weight`] = mat(s.kvHeads * D, s.hidden);
    if (s.attentionBias || s.modelType === 'qwen2') {
      tensors[`${p}self_attn.q_proj.bias`] = mat(s.heads * D, 1, 4);
      tensors[`${p}self_attn.k_proj.bias`] = mat(s.kvHeads * D, 1, 4);
      tensors[`${p}self_attn.v_proj.bias`] = mat(s.kvHeads * D, 1, 4);
    }
    tensors[`${p}self_attn.o_proj.weight`] = mat(s.hidden, s.heads * D);
    tensors[`${p}post_attention_layernorm.weight`] = norm(s.hidden);
    tensors[`${p}mlp.gate_proj.weight`] = mat(s.intermediate, s.hidden);
    tensors[`${p}mlp.up_proj.weight`] = mat(s.intermediate, s.hidden);
    tensors[`${p}mlp.down_proj.weight`] = mat(s.hidden, s.intermediate);
  }
  tensors['model.norm.weight'] = norm(s.hidden);
  if (!s.tieEmbeddings) tensors['lm_head.weight'] = mat(s.vocab, s.hidden, s.hidden / 4);

  const names = Object.keys(tensors);
  if (s.shards <= 1) {
    writeSafetensors(join(dir, 'model.safetensors'), tensors);
  } else {
    const weightMap: Record<string, string> = {};
    for (let k = 0; k < s.shards; k++) {
      const file = `model-${String(k + 1).padStart(5, '0')}-of-${String(s.shards).padStart(5, '0')}.safetensors`;
      const part: Record<string, RawTensor> = {};
      names.filter((_, i) => i % s.shards === k).forEach((n) => { part[n] = tensors[n]; weightMap[n] = file; });
      writeSafetensors(join(dir, file), part);
    }
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }, null, 1));
  }
  const config: Record<string, unknown> = {
    architectures: [{ llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM' }[s.modelType]],
    model_type: s.modelType, hidden_size: s.hidden, intermediate_size: s.intermediate, num_hidden_layers: s.layers,
    num_attention_heads: s.heads, num_key_value_heads: s.kvHeads, rms_norm_eps: 1e-5, rope_theta: s.ropeTheta,
    max_position_embeddings: s.maxPositions, vocab_size: s.vocab, tie_word_embeddings: s.tieEmbeddings,
    bos_token_id: 0, eos_token_id: 1, torch_dtype: { F32: 'float32', F16: 'float16', BF16: 'bfloat16' }[s.dtype],
  };
  if (s.headDim !== undefined) config.head_dim = s.headDim;
  if (s.ropeScaling) config.rope_scaling = s.ropeScaling;
  if (s.attentionBias && s.modelType === 'llama') config.attention_bias = true;
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ bos_token_id: 0, eos_token_id: 1 }, null, 2));
  if (s.tokenizer) {
    const { tokenizer, config: tokConfig } = byteLevelTokenizer(s.vocab);
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(tokConfig, null, 2));
  }
  return s;
}

/** Rewrites a single-file checkpoint's tensors through `edit`. */
export async function rewriteTensors(dir: string, edit: (t: Record<string, RawTensor>) => void): Promise<void> {
  const files = nodeModelFiles(dir);
  const tensors: Record<string, RawTensor> = {};
  for (const [name, info] of await readCheckpointIndex(files)) tensors[name] = { dtype: 'F32', shape: info.shape, data: await readTensor(files, info) };
  edit(tensors);
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
}

