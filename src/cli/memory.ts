// `duet memory`: KV-cache bytes of full attention vs DuoAttention (or Locret's budget, or a method per
// head) for a config, pattern and context: the bytes a session allocates, exactly.
import { parseArgs } from 'node:util';
import { readFile } from 'node:fs/promises';
import { formatBytes, kvMemory, parseModelConfig } from '../node.js';
import { bareOffload, headOptions, intOption, kvDtypeOption, locretFlags, locretOptions, methodsFlag, offloadFlags, offloadOptions, patternOptions } from './options.js';

export async function memoryCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args: bareOffload(argv), strict: true,
    options: {
      config: { type: 'string' }, context: { type: 'string' }, 'kv-dtype': { type: 'string' }, json: { type: 'boolean' }, ...patternOptions,
      ...locretOptions, methods: { type: 'string' }, ...offloadOptions,
    },
  });
  if (!v.config) throw new Error('--config config.json is required');
  const context = intOption(v.context, '--context', 1);
  if (context === undefined) throw new Error('--context N is required');
  const dtype = kvDtypeOption(v['kv-dtype']) ?? 'f32';
  let json: unknown;
  try { json = JSON.parse(await readFile(v.config, 'utf8')); } catch (e) { throw new Error(`${v.config}: ${(e as Error).message}`); }
  const config = parseModelConfig(json, v.config);
  const locret = locretFlags(v);
  if (v.methods !== undefined && (v.pattern !== undefined || v.full)) throw new Error('--methods names every head\'s method; it cannot be combined with --pattern or --full');
  const methods = await methodsFlag(v.methods, config.numLayers, config.numKvHeads);
  const p = kvMemory(config, { ...await headOptions(v, config.numLayers, config.numKvHeads), context, kvDtype: dtype, locret, methods, offload: offloadFlags(v) });
  if (p.note) process.stderr.write(`duet: ${p.note}\n`);
  if (v.json) {
    const { kvDtype, heads, note, ...projection } = p;
    process.stdout.write(`${JSON.stringify({ ...projection, kv_dtype: kvDtype, heads })}\n`);
  } else {
    const mixed = p.locret_heads > 0 || methods !== undefined;
    const rows = [
      ['full attention', formatBytes(p.full_bytes)],
      [p.offloaded_heads ? 'with offloading' : mixed ? 'these heads' : 'DuoAttention', formatBytes(p.duo_bytes)],
      ...(p.offloaded_heads
        ? [['  GPU (full heads)', formatBytes(p.gpu_bytes)], ['  CPU (streaming + offloaded)', formatBytes(p.cpu_bytes)], [`    offloaded (${p.offloaded_heads} KV heads)`, formatBytes(p.offloaded_bytes)]]
        : mixed
          ? Object.entries(p.method_bytes).map(([m, b]) => [`  ${m}${m === 'streaming' ? ' (CPU with split)' : ' (GPU with split)'}`, formatBytes(b)])
          : [['  GPU (retrieval heads)', formatBytes(p.gpu_bytes)], ['  CPU (streaming heads)', formatBytes(p.cpu_bytes)]]),
      p.offloaded_heads ? ['GPU saving', `${((1 - p.gpu_bytes / p.full_bytes) * 100).toFixed(0)}% of full attention's bytes off the GPU`]
        : ['saving', `${(p.full_bytes / p.duo_bytes).toFixed(2)}× less`],
    ];
    process.stdout.write(`KV cache at ${context} tokens, ${dtype} full caches and rings; ${p.heads}\n`);
    for (const [k, val] of rows) process.stdout.write(`${k.padEnd(p.offloaded_heads ? 32 : 26)}${val}\n`);
  }
  return 0;
}
