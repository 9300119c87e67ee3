// Saving the model being trained as a Hugging Face directory Duet (and other tools) can load, plus
// the optimizer state next to it so training can resume. A checkpoint (the model files and
// training/optimizer.bin + training/training_state.json) is written as one atomic file set
// (src/node/atomic.ts): a failed save leaves the previous checkpoint loadable, and loading checks
// every file against the manifest written last. Nothing non-finite is ever saved.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeSafetensorsF32 } from '../model/safetensors.js';
import { nodeWriteFs, recoverFileSet, writeFileAtomic, writeFileSet, type WriteFs } from './atomic.js';
import { views, type TrainConfig } from '../train/model.js';
import type { TrainerState } from '../train/trainer.js';
import { BOS, EOS, tokenizerFiles } from '../train/vocab.js';

/** The manifest of a training checkpoint, relative to the output folder. */
export const CHECKPOINT_MANIFEST = 'training/manifest.json';
const STATE = 'training/training_state.json';
const OPTIMIZER = 'training/optimizer.bin';

export function hfConfig(c: TrainConfig, maxPositions: number): object {
  return {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: c.hidden, intermediate_size: c.intermediate,
    num_hidden_layers: c.layers, num_attention_heads: c.heads, num_key_value_heads: c.kvHeads, head_dim: c.headDim,
    rms_norm_eps: c.eps, rope_theta: c.ropeTheta, max_position_embeddings: maxPositions, vocab_size: c.vocab,
    tie_word_embeddings: false, attention_bias: false, bos_token_id: BOS, eos_token_id: EOS, torch_dtype: 'float32',
  };
}

/** Throws unless every value is finite (names what and the first bad index). */
export function assertFinite(values: ArrayLike<number>, what: string): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) throw new Error(`${what}: value ${i} of ${values.length} is ${values[i]} (the training diverged or its state is corrupted)`);
  }
}

/** The files of the model directory (config, tokenizer, weights). */
export function modelFiles(c: TrainConfig, params: Float32Array, maxPositions: number, metadata: Record<string, string>): Record<string, Uint8Array | string> {
  assertFinite(params, 'model parameters');
  const { tokenizer, tokenizerConfig } = tokenizerFiles();
  return {
    'config.json': `${JSON.stringify(hfConfig(c, maxPositions), null, 2)}\n`,
    'generation_config.json': `${JSON.stringify({ bos_token_id: BOS, eos_token_id: EOS }, null, 2)}\n`,
    'tokenizer.json': JSON.stringify(tokenizer),
    'tokenizer_config.json': `${JSON.stringify(tokenizerConfig, null, 2)}\n`,
    'model.safetensors': encodeSafetensorsF32(views(params, c, (t, o, n) => t.subarray(o, o + n)).named, { format: 'pt', ...metadata }),
  };
}

/** optimizer.bin (params, m, v as raw f32) and training_state.json, keyed by their bare names (loadState reads them back). */
export function stateFiles(s: TrainerState, extra: object): { 'optimizer.bin': Uint8Array; 'training_state.json': string } {
  for (const [name, a] of [['parameters', s.params], ['AdamW first moments', s.m], ['AdamW second moments', s.v]] as const) assertFinite(a, `optimizer state (${name})`);
  const n = s.params.length;
  const buf = new Float32Array(3 * n);
  buf.set(s.params, 0); buf.set(s.m, n); buf.set(s.v, 2 * n);
  return {
    'optimizer.bin': new Uint8Array(buf.buffer),
    'training_state.json': `${JSON.stringify({ step: s.step, parameters: n, ...extra }, null, 2)}\n`,
  };
}

/** Writes the model alone as a Hugging Face directory, each file atomically. */
export function saveModel(dir: string, c: TrainConfig, params: Float32Array, maxPositions: number, metadata: Record<string, string>): void {
  const files = modelFiles(c, params, maxPositions, metadata);
  mkdirSync(dir, { recursive: true });
  for (const [name, data] of Object.entries(files)) writeFileAtomic(join(dir, name), data);
}

/** Optimizer state alone beside a model: training_state.json + optimizer.bin in `dir`, each atomically. */
export function saveState(dir: string, s: TrainerState, extra: object): void {
  const files = stateFiles(s, extra);
  mkdirSync(dir, { recursive: true });
  for (const [name, data] of Object.entries(files)) writeFileAtomic(join(dir, name), data);
}

/**
 * One training checkpoint in `outDir`: the model directory plus training/, all replaced at once
 * (see the header). Refuses non-finite parameters or optimizer state before writing anything.
 */
export function saveCheckpoint(outDir: string, c: TrainConfig, s: TrainerState, maxPositions: number,
  metadata: Record<string, string>, extra: object, wfs: WriteFs = nodeWriteFs): void {
  const model = modelFiles(c, s.params, maxPositions, metadata);
  const state = stateFiles(s, extra);
  const files = { ...model, [OPTIMIZER]: state['optimizer.bin'], [STATE]: state['training_state.json'] };
  writeFileSet(outDir, files, CHECKPOINT_MANIFEST, { step: s.step }, wfs);
}

/** The shape fields of the model a training state was saved from (a resume must use the same). */
const SHAPE_FIELDS = ['vocab', 'hidden', 'layers', 'heads', 'kvHeads', 'headDim', 'intermediate'] as const;

/**
 * The training state in `dir` (training_state.json + optimizer.bin), or null when there is none.
 * With `expect`, the saved plan's model shape must equal it (same parameter count is not enough:
 * another head split reads the same floats under another layout).
 */
export function loadState(dir: string, parameters: number, expect?: TrainConfig): TrainerState | null {
  const statePath = join(dir, 'training_state.json');
  if (!existsSync(statePath)) return null;
  let meta: { step: number; parameters: number; plan?: { model?: Partial<TrainConfig> } };
  try { meta = JSON.parse(readFileSync(statePath, 'utf8')); } catch (e) { throw new Error(`${statePath}: invalid JSON (${(e as Error).message})`); }
  if (!Number.isInteger(meta?.step) || meta.step < 0) throw new Error(`${statePath}: field "step" must be a non-negative integer (got ${JSON.stringify(meta?.step)})`);
  if (meta.parameters !== parameters) throw new Error(`${statePath}: ${meta.parameters} parameters, the model being trained has ${parameters} (different config?)`);
  if (expect) {
    const saved = meta.plan?.model;
    if (!saved) throw new Error(`${statePath}: no "plan.model" to check the model shape against; cannot resume safely`);
    for (const f of SHAPE_FIELDS) {
      if (saved[f] !== expect[f]) throw new Error(`${statePath}: the checkpoint was trained with ${f} ${saved[f]}, this run asks for ${expect[f]} (resume with the same layers, hidden and heads)`);
    }
  }
  const binPath = join(dir, 'optimizer.bin');
  const bytes = readFileSync(binPath);
  if (bytes.byteLength !== 12 * parameters) throw new Error(`${binPath}: ${bytes.byteLength} bytes, expected ${12 * parameters} (truncated?)`);
  const all = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  assertFinite(all, binPath);
  return { step: meta.step, params: all.subarray(0, parameters), m: all.subarray(parameters, 2 * parameters), v: all.subarray(2 * parameters) };
}

/**
 * The training state of a checkpoint in `outDir`: first finishes or discards an interrupted save
 * and verifies every file against the manifest (checkpoints from before manifests load unchecked).
 */
export function loadCheckpointState(outDir: string, parameters: number, expect: TrainConfig, wfs: WriteFs = nodeWriteFs): TrainerState | null {
  recoverFileSet(outDir, CHECKPOINT_MANIFEST, wfs);
  return loadState(join(outDir, 'training'), parameters, expect);
}
