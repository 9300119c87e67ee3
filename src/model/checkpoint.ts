// A Hugging Face model directory: config, weights, tokenizer (optional), generation defaults.
import { parseModelConfig, type ModelConfig } from './config.js';
import type { ModelFiles } from './files.js';
import { readJson } from './files.js';
import { ggufConfig, loadGgufWeights, readGgufHeader } from './gguf-model.js';
import { ggufPacked } from './gguf-encode.js';
import { tokenizerFromGguf } from './gguf-tokenizer.js';
import { TextTokenizer } from './tokenizer.js';
import { HeldBytes, loadWeights, resolveLoadWeights, type LoadOptions, type LoadStats, type ModelWeights } from './weights.js';

export interface Checkpoint {
  name: string;
  config: ModelConfig;
  weights: ModelWeights;
  tokenizer: TextTokenizer | null;
  eosTokenIds: number[];
  generation: Record<string, unknown>;
  /** Host bytes the weights hold, and the most the loader held at once (weights + the tensor in flight). */
  loadStats: LoadStats;
}

/**
 * Loads a model directory or GGUF file. `options.weights` picks the storage of the matmul weights,
 * converted tensor by tensor as they are read (default 'keep': a GGUF's own types, safetensors as f32).
 */
export async function loadCheckpoint(files: ModelFiles, options: LoadOptions = {}): Promise<Checkpoint> {
  if (files.gguf !== undefined) return loadGgufCheckpoint(files, files.gguf, options);
  if (!(await files.exists('config.json'))) throw new Error(`${files.name}: no config.json (not a Hugging Face model directory)`);
  const config = parseModelConfig(await readJson(files, 'config.json'), 'config.json');
  const generation = (await files.exists('generation_config.json'))
    ? (await readJson(files, 'generation_config.json')) as Record<string, unknown> : {};
  const genEos = generation.eos_token_id;
  const eosTokenIds = typeof genEos === 'number' ? [genEos]
    : Array.isArray(genEos) ? genEos.filter((e): e is number => typeof e === 'number') : config.eosTokenIds;
  const tokenizer = await loadTokenizer(files);
  const stats = new HeldBytes();
  const weights = await loadWeights(files, config, { onProgress: options.onProgress, weights: resolveLoadWeights(options.weights, config), stats, hostBytes: options.hostBytes });
  return { name: files.name, config, weights, tokenizer, eosTokenIds, generation, loadStats: stats.stats() };
}

/** tokenizer.json (+ tokenizer_config.json) of a model directory, or null without tokenizer.json. */
export async function loadTokenizer(files: ModelFiles): Promise<TextTokenizer | null> {
  if (!(await files.exists('tokenizer.json'))) return null;
  const tokJson = await readJson(files, 'tokenizer.json');
  const tokConfig = (await files.exists('tokenizer_config.json')) ? await readJson(files, 'tokenizer_config.json') : {};
  if (typeof tokJson !== 'object' || tokJson === null || Array.isArray(tokJson)) throw new Error('tokenizer.json: expected a JSON object');
  if (typeof tokConfig !== 'object' || tokConfig === null || Array.isArray(tokConfig)) throw new Error('tokenizer_config.json: expected a JSON object');
  try {
    return new TextTokenizer(tokJson as object, tokConfig as Record<string, unknown>);
  } catch (e) {
    throw new Error(`tokenizer.json (with tokenizer_config.json): cannot be loaded (${(e as Error).message})`);
  }
}

/** One GGUF file: config and tokenizer from its metadata, weights from its tensors. */
async function loadGgufCheckpoint(files: ModelFiles, path: string, options: LoadOptions): Promise<Checkpoint> {
  const header = await readGgufHeader(files, path);
  const config = ggufConfig(header);
  let tokenizer: TextTokenizer | null = null;
  if (header.metadata.has('tokenizer.ggml.model')) {
    const t = tokenizerFromGguf(header.file, header.metadata);
    try {
      tokenizer = new TextTokenizer(t.tokenizer, t.config);
    } catch (e) {
      throw new Error(`${header.file}: the tokenizer in its metadata cannot be loaded (${(e as Error).message})`);
    }
  }
  const stats = new HeldBytes();
  const weights = await loadGgufWeights(files, path, header, config, ggufPacked, { onProgress: options.onProgress, weights: resolveLoadWeights(options.weights, config), stats, hostBytes: options.hostBytes });
  return { name: files.name, config, weights, tokenizer, eosTokenIds: config.eosTokenIds, generation: {}, loadStats: stats.stats() };
}
