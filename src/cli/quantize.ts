// `duet quantize --model DIR --type T --out FILE.gguf`: a Hugging Face checkpoint written as one GGUF
// file that llama.cpp loads (and Duet, with --model FILE.gguf).
import { parseArgs } from 'node:util';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadCheckpoint } from '../model/checkpoint.js';
import { tokenizerToGguf } from '../model/gguf-tokenizer.js';
import { ggufChunks } from '../model/gguf-write.js';
import { blockSize, WEIGHT_DTYPES, type WeightDType } from '../model/quant.js';
import { encodeMatrix } from '../model/gguf-encode.js';
import { nodeModelFiles } from '../node/files.js';
import { writeFileAtomic } from '../node/atomic-write.js';
import { formatBytes } from '../attention/memory.js';

const options = {
  model: { type: 'string' },
  type: { type: 'string' },
  out: { type: 'string' },
  force: { type: 'boolean' },
  name: { type: 'string' },
} as const;

export async function quantizeCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: argv, options, strict: true });
  if (!v.model) throw new Error('--model DIR is required');
  if (!v.out) throw new Error('--out FILE.gguf is required');
  if (!v.out.toLowerCase().endsWith('.gguf')) throw new Error(`--out ${v.out}: the file name must end in .gguf`);
  if (!v.type || !WEIGHT_DTYPES.includes(v.type as WeightDType)) throw new Error(`--type must be one of ${WEIGHT_DTYPES.join(', ')}${v.type ? ` (got "${v.type}")` : ''}`);
  const type = v.type as WeightDType;
  const files = nodeModelFiles(v.model);
  if (files.gguf) throw new Error(`--model ${v.model}: give a Hugging Face model directory (re-quantizing a GGUF file is not supported)`);
  const ckpt = await loadCheckpoint(files);
  let tokenizer;
  if (await files.exists('tokenizer.json')) {
    const tok = JSON.parse(await readFile(join(v.model, 'tokenizer.json'), 'utf8'));
    const cfg = (await files.exists('tokenizer_config.json')) ? JSON.parse(await readFile(join(v.model, 'tokenizer_config.json'), 'utf8')) : {};
    tokenizer = tokenizerToGguf(join(v.model, 'tokenizer.json'), tok, cfg, ckpt.config.vocabSize);
  } else {
    process.stderr.write(`${v.model}: no tokenizer.json; the GGUF has no tokenizer (llama.cpp needs one; Duet then takes --prompt-ids only)\n`);
  }
  const fallbacks = new Map<string, string[]>();
  const chunks = ggufChunks(ckpt.config, ckpt.weights, {
    name: v.name ?? v.model.replace(/\/+$/, '').split('/').pop()!, type, encode: encodeMatrix, tokenizer,
    onFallback: (tensor, from, to, cols) => {
      const key = `${from} -> ${to} (rows of ${cols} are not a multiple of ${blockSize(from)})`;
      fallbacks.set(key, [...(fallbacks.get(key) ?? []), tensor]);
    },
  });
  for (const [why, tensors] of fallbacks) {
    process.stderr.write(`quantize: ${tensors.length} tensor${tensors.length > 1 ? 's' : ''} ${why}: ${tensors.slice(0, 4).join(', ')}${tensors.length > 4 ? ', ...' : ''}\n`);
  }
  const bytes = await writeFileAtomic(v.out, chunks, { force: v.force });
  process.stdout.write(`wrote ${v.out} (${type}, ${formatBytes(bytes)})\n`);
  return 0;
}
