// Retaining-head weights beside a model: `locret.json` (what the weights are, which model they were
// trained for, how they were trained) and `locret.safetensors` (the weights, F32). Encoding and
// loading live here so browsers can load them too; writing files is src/node/locret-file.ts.
//
// locret.json:
//   format        "duet-locret-retaining-heads"
//   version       1
//   weights       { file: "locret.safetensors", bytes, sha256 }   (hex SHA-256 of the whole file)
//   model         { name, model_type, num_hidden_layers, num_attention_heads, num_key_value_heads,
//                   head_dim, hidden_size }   — the model trained for; shapes must match on load
//   retaining_head { in_dim, hidden, out_dim, activation: "silu", bias: false,
//                   input: "pre-rope q,k,v" }
//   training      { steps, seed, ... }   — steps and seed required; anything else is kept as is
// locret.safetensors: `layers.{l}.fc1.weight` [hidden, in_dim] and `layers.{l}.fc2.weight`
//   [out_dim, hidden] for every layer l, row-major (PyTorch Linear layout), no other tensors.
import type { ModelConfig } from '../../model/config.js';
import type { ModelFiles } from '../../model/files.js';
import { readJson } from '../../model/files.js';
import { encodeSafetensorsF32, readSafetensorsHeader, readTensor } from '../../model/safetensors.js';
import { retainingHeadShape, type RetainingHeadParams, type RetainingHeads } from './retaining-heads.js';

export const LOCRET_JSON = 'locret.json';
export const LOCRET_WEIGHTS = 'locret.safetensors';
export const LOCRET_FORMAT = 'duet-locret-retaining-heads';

/** Facts about the training run; `steps` and `seed` are required, the rest is free-form. */
export interface LocretTraining {
  steps: number;
  seed: number;
  [fact: string]: unknown;
}

export interface LocretFileMeta {
  /** The model's name (its folder name, say), recorded for people; not checked on load. */
  modelName: string;
  training: LocretTraining;
}

/** The model facts the retaining heads depend on. */
export type LocretModelShape = Pick<ModelConfig, 'modelType' | 'numLayers' | 'numHeads' | 'numKvHeads' | 'headDim' | 'hiddenSize'>;

const tensorName = (l: number, fc: 'fc1' | 'fc2'): string => `layers.${l}.${fc}.weight`;

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await globalThis.crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

function assertFiniteWeights(what: string, data: Float32Array): void {
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) throw new Error(`${what}: value ${i} is ${data[i]} (weights must be finite)`);
  }
}

/** The two files' contents. Refuses non-finite weights and shapes that do not fit `config`. */
export async function encodeLocretFiles(heads: RetainingHeads, config: LocretModelShape, meta: LocretFileMeta): Promise<{ json: string; weights: Uint8Array }> {
  if (heads.layers.length !== config.numLayers) throw new Error(`retaining heads have ${heads.layers.length} layers, the model has ${config.numLayers}`);
  if (!Number.isInteger(meta.training?.steps) || meta.training.steps < 0) throw new Error(`training.steps must be a non-negative integer (got ${meta.training?.steps})`);
  if (!Number.isInteger(meta.training.seed)) throw new Error(`training.seed must be an integer (got ${meta.training.seed})`);
  const shape = retainingHeadShape(config, heads.layers[0]?.hidden);
  const tensors: Array<{ name: string; shape: number[]; data: Float32Array }> = [];
  heads.layers.forEach((p: RetainingHeadParams, l) => {
    if (p.inDim !== shape.inDim || p.outDim !== shape.outDim || p.hidden !== shape.hidden) {
      throw new Error(`layer ${l}: retaining head is ${p.inDim} → ${p.hidden} → ${p.outDim}, expected ${shape.inDim} → ${shape.hidden} → ${shape.outDim}`);
    }
    for (const [fc, data, dims] of [['fc1', p.fc1, [p.hidden, p.inDim]], ['fc2', p.fc2, [p.outDim, p.hidden]]] as const) {
      const name = tensorName(l, fc);
      if (data.length !== dims[0] * dims[1]) throw new Error(`${name}: ${data.length} values, expected ${dims[0]} × ${dims[1]}`);
      assertFiniteWeights(name, data);
      tensors.push({ name, shape: [...dims], data });
    }
  });
  const weights = encodeSafetensorsF32(tensors, { format: LOCRET_FORMAT });
  const json = {
    format: LOCRET_FORMAT,
    version: 1,
    weights: { file: LOCRET_WEIGHTS, bytes: weights.byteLength, sha256: await sha256Hex(weights) },
    model: {
      name: meta.modelName, model_type: config.modelType, num_hidden_layers: config.numLayers,
      num_attention_heads: config.numHeads, num_key_value_heads: config.numKvHeads, head_dim: config.headDim, hidden_size: config.hiddenSize,
    },
    retaining_head: { in_dim: shape.inDim, hidden: shape.hidden, out_dim: shape.outDim, activation: 'silu', bias: false, input: 'pre-rope q,k,v' },
    training: meta.training,
  };
  return { json: `${JSON.stringify(json, null, 2)}\n`, weights };
}

function field(obj: unknown, path: string, file: string): unknown {
  let cur: unknown = obj;
  for (const key of path.split('.')) {
    if (typeof cur !== 'object' || cur === null || Array.isArray(cur) || !(key in cur)) throw new Error(`${file}: missing field "${path}"`);
    cur = (cur as Record<string, unknown>)[key];
  }
  return cur;
}

function intField(obj: unknown, path: string, file: string, min: number): number {
  const v = field(obj, path, file);
  if (!Number.isInteger(v) || (v as number) < min) throw new Error(`${file}: field "${path}" must be an integer ≥ ${min} (got ${JSON.stringify(v)})`);
  return v as number;
}

export interface LoadedLocret {
  heads: RetainingHeads;
  /** The whole locret.json. */
  json: Record<string, unknown>;
  training: LocretTraining;
}

/**
 * Loads the retaining heads from `files` (a model folder) and checks them against `config`: every
 * field present, shapes matching the model, the weights file the json names (size and SHA-256),
 * exactly the expected tensors, every value finite. Errors name the file and the field or tensor.
 */
export async function loadLocretHeads(files: ModelFiles, config: LocretModelShape): Promise<LoadedLocret> {
  const file = LOCRET_JSON;
  if (!(await files.exists(file))) throw new Error(`${file}: missing from ${files.name} (no retaining heads saved for this model)`);
  const json = await readJson(files, file);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${file}: expected a JSON object`);
  const format = field(json, 'format', file);
  if (format !== LOCRET_FORMAT) throw new Error(`${file}: field "format" is ${JSON.stringify(format)}, expected "${LOCRET_FORMAT}"`);
  const version = field(json, 'version', file);
  if (version !== 1) throw new Error(`${file}: field "version" is ${JSON.stringify(version)}; this Duet reads version 1`);

  const expectModel: Array<[string, number]> = [
    ['model.num_hidden_layers', config.numLayers], ['model.num_attention_heads', config.numHeads],
    ['model.num_key_value_heads', config.numKvHeads], ['model.head_dim', config.headDim],
  ];
  for (const [path, want] of expectModel) {
    const got = intField(json, path, file, 1);
    if (got !== want) throw new Error(`${file}: field "${path}" is ${got}, but the model has ${want} (trained for another model?)`);
  }
  const hidden = intField(json, 'retaining_head.hidden', file, 1);
  const shape = retainingHeadShape(config, hidden);
  for (const [path, want] of [['retaining_head.in_dim', shape.inDim], ['retaining_head.out_dim', shape.outDim]] as const) {
    const got = intField(json, path, file, 1);
    if (got !== want) throw new Error(`${file}: field "${path}" is ${got}, expected ${want} for this model`);
  }
  const act = field(json, 'retaining_head.activation', file);
  if (act !== 'silu') throw new Error(`${file}: field "retaining_head.activation" is ${JSON.stringify(act)}; only "silu" is implemented`);
  const bias = field(json, 'retaining_head.bias', file);
  if (bias !== false) throw new Error(`${file}: field "retaining_head.bias" is ${JSON.stringify(bias)}; only false (no biases) is implemented`);
  const training = field(json, 'training', file);
  if (typeof training !== 'object' || training === null || Array.isArray(training)) throw new Error(`${file}: field "training" must be an object`);
  intField(json, 'training.steps', file, 0);
  const seed = field(json, 'training.seed', file);
  if (!Number.isInteger(seed)) throw new Error(`${file}: field "training.seed" must be an integer (got ${JSON.stringify(seed)})`);

  const weightsFile = field(json, 'weights.file', file);
  if (typeof weightsFile !== 'string' || !/^[A-Za-z0-9._-]+$/.test(weightsFile) || weightsFile === '.' || weightsFile === '..') {
    throw new Error(`${file}: field "weights.file" must be a plain file name in the model folder (got ${JSON.stringify(weightsFile)})`);
  }
  const bytes = intField(json, 'weights.bytes', file, 8);
  const sha = field(json, 'weights.sha256', file);
  if (typeof sha !== 'string' || !/^[0-9a-f]{64}$/.test(sha)) throw new Error(`${file}: field "weights.sha256" must be 64 lowercase hex digits`);
  if (!(await files.exists(weightsFile))) throw new Error(`${weightsFile}: missing from ${files.name} (named by ${file})`);
  const size = await files.size(weightsFile);
  if (size !== bytes) throw new Error(`${weightsFile}: ${size} bytes, but ${file} field "weights.bytes" says ${bytes}`);
  const actual = await sha256Hex(await files.readBytes(weightsFile, 0, size));
  if (actual !== sha) throw new Error(`${weightsFile}: SHA-256 ${actual} does not match ${file} field "weights.sha256" (${sha}); the files are from different saves`);

  const infos = new Map((await readSafetensorsHeader(files, weightsFile)).map((t) => [t.name, t]));
  const layers: RetainingHeadParams[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const read = async (fc: 'fc1' | 'fc2', dims: [number, number]): Promise<Float32Array> => {
      const name = tensorName(l, fc);
      const t = infos.get(name);
      if (!t) throw new Error(`${weightsFile}: missing tensor "${name}"`);
      infos.delete(name);
      if (t.dtype !== 'F32') throw new Error(`${weightsFile}: tensor "${name}" is ${t.dtype}, expected F32`);
      if (t.shape.length !== 2 || t.shape[0] !== dims[0] || t.shape[1] !== dims[1]) {
        throw new Error(`${weightsFile}: tensor "${name}" has shape ${JSON.stringify(t.shape)}, expected ${JSON.stringify(dims)}`);
      }
      const data = await readTensor(files, t);
      assertFiniteWeights(`${weightsFile}: tensor "${name}"`, data);
      return data;
    };
    layers.push({ ...shape, fc1: await read('fc1', [shape.hidden, shape.inDim]), fc2: await read('fc2', [shape.outDim, shape.hidden]) });
  }
  const extra = [...infos.keys()];
  if (extra.length > 0) throw new Error(`${weightsFile}: unexpected tensor "${extra[0]}" (the model has ${config.numLayers} layers)`);
  return { heads: { layers }, json: json as Record<string, unknown>, training: training as LocretTraining };
}
