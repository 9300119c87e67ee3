// `duet memory`: KV-cache bytes of full attention vs DuoAttention for a config, pattern and context.
import { parseArgs } from 'node:util';
import { readFile } from 'node:fs/promises';
import { parseModelConfig } from '../model/config.js';
import { formatBytes, projectKvMemory } from '../attention/memory.js';
import { applySlidingWindow } from '../attention/sliding-window.js';
import { intOption, patternOptions, resolveHeads } from './options.js';

export async function memoryCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args: argv, strict: true,
    options: { config: { type: 'string' }, context: { type: 'string' }, 'kv-dtype': { type: 'string' }, json: { type: 'boolean' }, ...patternOptions },
  });
  if (!v.config) throw new Error('--config config.json is required');
  const context = intOption(v.context, '--context', 1);
  if (context === undefined) throw new Error('--context N is required');
  const dtype = v['kv-dtype'] ?? 'f16';
  if (dtype !== 'f16' && dtype !== 'f32') throw new Error(`--kv-dtype must be f16 or f32 (got "${dtype}")`);
  let json: unknown;
  try { json = JSON.parse(await readFile(v.config, 'utf8')); } catch (e) { throw new Error(`${v.config}: ${(e as Error).message}`); }
  const config = parseModelConfig(json, v.config);
  const heads = await resolveHeads(v, config.numLayers, config.numKvHeads);
  // The model's own sliding window caps every head's cache, as the engine runs it.
  const windowed = applySlidingWindow(config.slidingWindow, config.maxPositionEmbeddings, heads.kinds, heads.window);
  if (windowed.limit && context > windowed.limit.tokens) throw new Error(`--context ${context}: ${windowed.limit.reason}; the engine refuses sequences over ${windowed.limit.tokens} tokens`);
  if (windowed.note) process.stderr.write(`duet: ${windowed.note}\n`);
  const p = projectKvMemory(windowed.kinds, config.headDim, context, windowed.window ?? { sink: 0, recent: 1 }, dtype === 'f16' ? 2 : 4);
  if (v.json) {
    process.stdout.write(`${JSON.stringify({ ...p, kv_dtype: dtype, heads: heads.description })}\n`);
  } else {
    const rows = [
      ['full attention', formatBytes(p.full_bytes)],
      ['DuoAttention', formatBytes(p.duo_bytes)],
      ['  GPU (retrieval heads)', formatBytes(p.gpu_bytes)],
      ['  CPU (streaming heads)', formatBytes(p.cpu_bytes)],
      ['saving', `${(p.full_bytes / p.duo_bytes).toFixed(2)}× less`],
    ];
    process.stdout.write(`KV cache at ${context} tokens, ${dtype}; ${heads.description}\n`);
    for (const [k, val] of rows) process.stdout.write(`${k.padEnd(26)}${val}\n`);
  }
  return 0;
}
