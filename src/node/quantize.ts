// A Hugging Face checkpoint written as one GGUF file that llama.cpp loads (and Duet's loadModel):
// the library call behind `duet quantize`. Node-only: it reads a folder and writes a file atomically.
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { DuetError } from '../errors.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { tokenizerToGguf } from '../model/gguf-tokenizer.js';
import { ggufChunks } from '../model/gguf-write.js';
import { ggufTensorPlan } from '../model/gguf-model.js';
import { encodeMatrix } from '../model/gguf-encode.js';
import { blockSize, isWeightDType, WEIGHT_DTYPES, type WeightDType } from '../model/quant.js';
import { writeChunksAtomic } from './atomic.js';
import { nodeModelFiles } from './files.js';

export interface QuantizeOptions {
  /** A Hugging Face model folder (config.json + safetensors); a GGUF file is refused. */
  model: string;
  /** Storage of the matrices; rows that do not fill the type's blocks fall back (q4_k → q4_0 → f16). */
  type: WeightDType;
  /** The GGUF file to write (its name ends in .gguf). */
  out: string;
  /** Replace an existing `out` (default: refuse). */
  force?: boolean;
  /** general.name in the file (default: the folder's name). */
  name?: string;
  /** 'weights': bytes read; 'encode': matrices encoded; 'write': bytes written. */
  onProgress?: (step: 'weights' | 'encode' | 'write', done: number, total: number) => void;
  /** Notes worth showing (a folder without tokenizer.json). */
  notice?: (message: string) => void;
}

export interface QuantizeResult {
  out: string;
  type: WeightDType;
  bytes: number;
  /** Whether the file carries a tokenizer (llama.cpp needs one; without it Duet takes token ids only). */
  tokenizer: boolean;
  /** Matrices written in another type than asked, grouped by why. */
  fallbacks: Array<{ from: WeightDType; to: WeightDType; cols: number; tensors: string[] }>;
}

const exists = (path: string) => access(path, constants.F_OK).then(() => true, () => false);

export async function quantizeModel(o: QuantizeOptions): Promise<QuantizeResult> {
  if (typeof o?.model !== 'string' || o.model === '') throw new DuetError('model', 'is required (a Hugging Face model folder)');
  if (typeof o.out !== 'string' || o.out === '') throw new DuetError('out', 'is required (a .gguf file)');
  if (!o.out.toLowerCase().endsWith('.gguf')) throw new DuetError('out', `${o.out}: the file name must end in .gguf`);
  if (!isWeightDType(o.type)) throw new DuetError('type', `must be one of ${WEIGHT_DTYPES.join(', ')}${o.type ? ` (got "${o.type}")` : ''}`);
  const files = nodeModelFiles(o.model);
  if (files.gguf) throw new DuetError('model', `${o.model}: give a Hugging Face model directory (re-quantizing a GGUF file is not supported)`);
  // Refused before the checkpoint is read (writeChunksAtomic checks again when it writes).
  if (!o.force && await exists(o.out)) throw new DuetError('out', `${o.out} exists; pass force: true to replace it`);
  const progress = o.onProgress ?? (() => {});
  const ckpt = await loadCheckpoint(files, { onProgress: (done, total) => progress('weights', done, total) });
  let tokenizer;
  if (await files.exists('tokenizer.json')) {
    const tok = JSON.parse(await files.readText('tokenizer.json'));
    const cfg = (await files.exists('tokenizer_config.json')) ? JSON.parse(await files.readText('tokenizer_config.json')) : {};
    tokenizer = tokenizerToGguf(`${files.name}/tokenizer.json`, tok, cfg, ckpt.config.vocabSize);
  } else {
    o.notice?.(`${o.model}: no tokenizer.json; the GGUF has no tokenizer (llama.cpp needs one; Duet then takes token ids only)`);
  }
  const fallbacks = new Map<string, QuantizeResult['fallbacks'][number]>();
  const matrices = ggufTensorPlan(ckpt.config).filter((t) => t.shape.length > 1).length;
  let encoded = 0;
  const chunks = ggufChunks(ckpt.config, ckpt.weights, {
    name: o.name ?? o.model.replace(/\/+$/, '').split('/').pop()!, type: o.type, tokenizer,
    encode: (type, values, rows, cols, name) => { const b = encodeMatrix(type, values, rows, cols, name); progress('encode', ++encoded, matrices); return b; },
    onFallback: (tensor, from, to, cols) => {
      const key = `${from} ${to} ${cols}`;
      if (!fallbacks.has(key)) fallbacks.set(key, { from, to, cols, tensors: [] });
      fallbacks.get(key)!.tensors.push(tensor);
    },
  });
  const total = chunks.reduce((n, c) => n + c.length, 0);
  let written = 0;
  const counted = function* () { for (const c of chunks) { yield c; progress('write', written += c.length, total); } };
  const bytes = await writeChunksAtomic(o.out, counted(), { force: o.force });
  return { out: o.out, type: o.type, bytes, tokenizer: tokenizer !== undefined, fallbacks: [...fallbacks.values()] };
}

/** A fallback group as one line ("3 tensors q4_k -> q4_0 (rows of 96 are not a multiple of 256): …"). */
export function fallbackText(f: QuantizeResult['fallbacks'][number]): string {
  const n = f.tensors.length;
  return `${n} tensor${n > 1 ? 's' : ''} ${f.from} -> ${f.to} (rows of ${f.cols} are not a multiple of ${blockSize(f.from)}): ${f.tensors.slice(0, 4).join(', ')}${n > 4 ? ', ...' : ''}`;
}
