// `duet memory`: KV-cache bytes of full attention vs DuoAttention (or Locret's budget, or a method per
// head) for a config, pattern and context: the bytes a session allocates, exactly. With --gpu-budget:
// the largest context whose GPU KV bytes fit, for full attention and for the configuration.
import { parseArgs } from 'node:util';
import { readFile } from 'node:fs/promises';
import type { KvMemoryOptions, ModelConfig } from '../node.js';
import { formatBytes, kvMemory, largestContext, parseModelConfig } from '../node.js';
import { bareOffload, bytesOption, headOptions, intOption, kvDtypeOption, locretFlags, locretOptions, methodsFlag, offloadFlags, offloadOptions, patternOptions } from './options.js';

export async function memoryCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args: bareOffload(argv), strict: true,
    options: {
      config: { type: 'string' }, context: { type: 'string' }, 'gpu-budget': { type: 'string' }, 'max-context': { type: 'string' }, 'kv-dtype': { type: 'string' }, json: { type: 'boolean' }, ...patternOptions,
      ...locretOptions, methods: { type: 'string' }, ...offloadOptions,
    },
  });
  if (!v.config) throw new Error('--config config.json is required');
  const budget = bytesOption(v['gpu-budget'], '--gpu-budget');
  const context = intOption(v.context, '--context', 1);
  if (budget === undefined && context === undefined) throw new Error('--context N (or --gpu-budget SIZE) is required');
  if (budget !== undefined && context !== undefined) throw new Error('--gpu-budget searches the context itself; drop --context');
  if (budget === undefined && v['max-context'] !== undefined) throw new Error('--max-context goes with --gpu-budget');
  const dtype = kvDtypeOption(v['kv-dtype']) ?? 'f32';
  let json: unknown;
  try { json = JSON.parse(await readFile(v.config, 'utf8')); } catch (e) { throw new Error(`${v.config}: ${(e as Error).message}`); }
  const config = parseModelConfig(json, v.config);
  const locret = locretFlags(v);
  if (v.methods !== undefined && (v.pattern !== undefined || v.full)) throw new Error('--methods names every head\'s method; it cannot be combined with --pattern or --full');
  const methods = await methodsFlag(v.methods, config.numLayers, config.numKvHeads);
  const options = { ...await headOptions(v, config.numLayers, config.numKvHeads), kvDtype: dtype, locret, methods, offload: offloadFlags(v) };
  if (budget !== undefined) return fitCommand(config, options, budget, intOption(v['max-context'], '--max-context', 1) ?? config.maxPositionEmbeddings, v.json === true);
  const p = kvMemory(config, { ...options, context: context! });
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

/** `--gpu-budget`: the largest context within the budget, full attention against the configuration. */
function fitCommand(config: ModelConfig, options: Omit<KvMemoryOptions, 'context'>, budget: number, maxContext: number, json: boolean): number {
  const { full, configured } = largestContext(config, options, budget, maxContext);
  const heads = kvMemory(config, { ...options, context: 1 }).heads;
  if (json) {
    const row = (f: typeof full) => ({ tokens: f.tokens, gpu_bytes: f.gpuBytes, cpu_bytes: f.cpuBytes, limit: f.limit });
    process.stdout.write(`${JSON.stringify({ gpu_budget_bytes: budget, max_context: maxContext, kv_dtype: options.kvDtype, heads, full: row(full), configured: row(configured) })}\n`);
    return 0;
  }
  process.stdout.write(`largest context with at most ${formatBytes(budget)} of KV cache on the GPU (searched up to ${maxContext} tokens), ${options.kvDtype} caches\n`);
  for (const [name, f] of [['full attention', full], [heads, configured]] as const) {
    process.stdout.write(`${name}: ${f.tokens} tokens (GPU ${formatBytes(f.gpuBytes)}, CPU ${formatBytes(f.cpuBytes)}); stopped by ${f.limit}\n`);
  }
  return 0;
}
