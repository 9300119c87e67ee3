// Saving the model being trained as a Hugging Face directory Duet (and other tools) can load, plus
// the optimizer state next to it so training can resume.
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { encodeSafetensorsF32 } from '../model/safetensors.js';
import { views, type TrainConfig } from './model.js';
import type { TrainerState } from './trainer.js';
import { BOS, EOS, tokenizerFiles } from './vocab.js';

export function hfConfig(c: TrainConfig, maxPositions: number): object {
  return {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: c.hidden, intermediate_size: c.intermediate,
    num_hidden_layers: c.layers, num_attention_heads: c.heads, num_key_value_heads: c.kvHeads, head_dim: c.headDim,
    rms_norm_eps: c.eps, rope_theta: c.ropeTheta, max_position_embeddings: maxPositions, vocab_size: c.vocab,
    tie_word_embeddings: false, attention_bias: false, bos_token_id: BOS, eos_token_id: EOS, torch_dtype: 'float32',
  };
}

/** Writes the model (flat parameters `params` of config c, host copy) as a Hugging Face directory. */
export function saveModel(dir: string, c: TrainConfig, params: Float32Array, maxPositions: number, metadata: Record<string, string>): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify(hfConfig(c, maxPositions), null, 2)}\n`);
  writeFileSync(join(dir, 'generation_config.json'), `${JSON.stringify({ bos_token_id: BOS, eos_token_id: EOS }, null, 2)}\n`);
  const { tokenizer, tokenizerConfig } = tokenizerFiles();
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
  writeFileSync(join(dir, 'tokenizer_config.json'), `${JSON.stringify(tokenizerConfig, null, 2)}\n`);
  writeFileSync(join(dir, 'model.safetensors'), encodeSafetensorsF32(views(params, c, (t, o, n) => t.subarray(o, o + n)).named, { format: 'pt', ...metadata }));
}

/** Optimizer state beside the model: training_state.json + optimizer.bin (params, m, v as raw f32). */
export function saveState(dir: string, s: TrainerState, extra: object): void {
  const n = s.params.length;
  const buf = new Float32Array(3 * n);
  buf.set(s.params, 0); buf.set(s.m, n); buf.set(s.v, 2 * n);
  writeFileSync(join(dir, 'optimizer.bin'), new Uint8Array(buf.buffer));
  writeFileSync(join(dir, 'training_state.json'), `${JSON.stringify({ step: s.step, parameters: n, ...extra }, null, 2)}\n`);
}

export function loadState(dir: string, parameters: number): TrainerState | null {
  const statePath = join(dir, 'training_state.json');
  if (!existsSync(statePath)) return null;
  const meta = JSON.parse(readFileSync(statePath, 'utf8')) as { step: number; parameters: number };
  if (meta.parameters !== parameters) throw new Error(`${statePath}: ${meta.parameters} parameters, the model being trained has ${parameters} (different config?)`);
  const bytes = readFileSync(join(dir, 'optimizer.bin'));
  if (bytes.byteLength !== 12 * parameters) throw new Error(`${join(dir, 'optimizer.bin')}: ${bytes.byteLength} bytes, expected ${12 * parameters} (truncated?)`);
  const all = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  return { step: meta.step, params: all.subarray(0, parameters), m: all.subarray(parameters, 2 * parameters), v: all.subarray(2 * parameters) };
}
