// `duet quantize --model DIR --type T --out FILE.gguf`: quantizeModel (src/node/quantize.ts) with
// flags, fallbacks listed on stderr.
import { parseArgs } from 'node:util';
import { fallbackText, formatBytes, quantizeModel } from '../node.js';
import type { WeightDType } from '../model/quant.js';

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
  const r = await quantizeModel({
    model: v.model, type: v.type as WeightDType, out: v.out, force: v.force, name: v.name,
    notice: (m) => process.stderr.write(`${m.replace('token ids only', '--prompt-ids only')}\n`),
  });
  for (const f of r.fallbacks) process.stderr.write(`quantize: ${fallbackText(f)}\n`);
  process.stdout.write(`wrote ${r.out} (${r.type}, ${formatBytes(r.bytes)})\n`);
  return 0;
}
