// Shared CLI option parsing: numbers with named errors, and the head-pattern options.
import { readFile } from 'node:fs/promises';
import { loadPattern, nodeModelFiles, parseHeadMethods, type HeadMethods, type HeadOptions } from '../node.js';
import { defaultThreads } from '../node/kernel-threads.js';
import { WEIGHT_DTYPES, isWeightDType, type WeightDType } from '../model/quant.js';
import { KV_DTYPES, isKvDType, type KvDType } from '../backend/kv-dtype.js';
import type { OffloadOptions } from '../node.js';
import type { TopKChoice } from '../kv/magicpig/topk.js';

export function intOption(value: string | undefined, flag: string, min = 0): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new Error(`${flag} must be an integer ≥ ${min} (got "${value}")`);
  return n;
}

/** --threads for the WASM kernels: a positive integer, default every core. */
export function threadsOption(value: string | undefined): number {
  return intOption(value, '--threads', 1) ?? defaultThreads();
}

/** --weights: the storage of the matmul weights (undefined: the engine's default for the device). */
export function weightsOption(value: string | undefined): WeightDType | undefined {
  if (value === undefined) return undefined;
  if (!isWeightDType(value)) throw new Error(`--weights must be one of ${WEIGHT_DTYPES.join(', ')} (got "${value}")`);
  return value;
}

/** --kv-dtype: the storage of the full KV caches (undefined: the engine's default, f32). */
export function kvDtypeOption(value: string | undefined): KvDType | undefined {
  if (value === undefined) return undefined;
  if (!isKvDType(value)) throw new Error(`--kv-dtype must be one of ${KV_DTYPES.join(', ')} (got "${value}")`);
  return value;
}

export function numberOption(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new Error(`${flag} must be a number (got "${value}")`);
  return n;
}

/** A size in bytes: an integer, or a number with KiB, MiB, GiB or TiB (powers of 1,024), e.g. "16GiB". */
export function bytesOption(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(KiB|MiB|GiB|TiB)?\s*$/.exec(value);
  const bytes = m ? Number(m[1]) * 1024 ** (m[2] ? ['KiB', 'MiB', 'GiB', 'TiB'].indexOf(m[2]) + 1 : 0) : NaN;
  // Between 1 byte and 2^53 − 1 (a digit string too long for a double would be Infinity).
  if (!(bytes >= 1 && Number.isSafeInteger(Math.floor(bytes)))) throw new Error(`${flag}: expected a size such as 16GiB, 512MiB or a number of bytes (got "${value}")`);
  return Math.floor(bytes);
}

/** A comma-separated list of numbers, each passing `check` (else an error naming the flag and entry); duplicates dropped. */
export function numberList(value: string, flag: string, check: (n: number) => boolean, what: string): number[] {
  const list = value.split(',').map((s) => {
    const n = numberOption(s.trim(), flag);
    if (n === undefined || !check(n)) throw new Error(`${flag}: "${s}" is not ${what}`);
    return n;
  });
  if (list.length === 0) throw new Error(`${flag}: empty list`);
  return [...new Set(list)];
}

export const patternOptions = {
  pattern: { type: 'string' },
  sparsity: { type: 'string' },
  'streaming-only': { type: 'boolean' },
  full: { type: 'boolean' },
  sink: { type: 'string' },
  recent: { type: 'string' },
  compensation: { type: 'boolean' },
} as const;

/** --method locret --budget N [--stabilizers N] (generate, serve, eval, memory). */
export const locretOptions = {
  method: { type: 'string' },
  budget: { type: 'string' },
  stabilizers: { type: 'string' },
} as const;

export interface LocretValues {
  method?: string; budget?: string; stabilizers?: string; pattern?: string; 'streaming-only'?: boolean; compensation?: boolean; methods?: string;
}

/**
 * --method locret --budget N [--stabilizers N] as the library's locret option: on every head, or with
 * --pattern on the heads the pattern streams (its retrieval heads stay full); with --methods FILE the
 * budget of the heads the file names locret.
 */
export function locretFlags(v: LocretValues): { budget: number; stabilizers?: number } | undefined {
  const method = oneOfFlag(v.method, '--method', ['duo', 'locret'] as const) ?? 'duo';
  if (method === 'locret' && v.methods !== undefined) throw new Error('--method locret and --methods FILE both say which heads evict; use one');
  if (method !== 'locret' && v.methods === undefined) {
    if (v.budget !== undefined || v.stabilizers !== undefined) throw new Error('--budget and --stabilizers go with --method locret (or --methods naming locret heads)');
    return undefined;
  }
  if (v['streaming-only'] || v.compensation) throw new Error(`${v.methods !== undefined ? '--methods' : '--method locret'} cannot be combined with --streaming-only or --compensation`);
  const budget = intOption(v.budget, '--budget', 1);
  if (budget === undefined) {
    if (v.methods !== undefined) return undefined;
    throw new Error('--method locret needs --budget N (positions each KV head keeps)');
  }
  const stabilizers = intOption(v.stabilizers, '--stabilizers', 0);
  if (stabilizers !== undefined && stabilizers > budget) throw new Error(`--stabilizers must be at most --budget ${budget} (got ${stabilizers})`);
  return { budget, stabilizers };
}

function oneOfFlag<T extends string>(value: string | undefined, flag: string, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(value)) throw new Error(`${flag} must be one of ${allowed.join(', ')} (got "${value}")`);
  return value as T;
}

/** --methods FILE: a method pattern (docs/kv-methods.md), read and checked against the model's shape. */
export async function methodsFlag(path: string | undefined, layers: number, kvHeads: number): Promise<HeadMethods | undefined> {
  if (path === undefined) return undefined;
  let text: string;
  try { text = await readFile(path, 'utf8'); } catch (e) { throw new Error(`--methods ${path}: ${(e as Error).message}`); }
  return parseHeadMethods(text, layers, kvHeads, path);
}

export interface PatternValues {
  pattern?: string; sparsity?: string; 'streaming-only'?: boolean; full?: boolean; sink?: string; recent?: string; compensation?: boolean;
}

/** --pattern/--sparsity/--streaming-only/--full/--sink/--recent/--compensation as the library's head options (its rules apply when they resolve). */
export async function headOptions(v: PatternValues, layers: number, kvHeads: number): Promise<HeadOptions & { patternName: string }> {
  const exclusive = [v.pattern !== undefined, !!v['streaming-only'], !!v.full].filter(Boolean).length;
  if (exclusive > 1) throw new Error('use only one of --pattern, --streaming-only and --full');
  const pattern = v.pattern === undefined ? undefined : await loadPattern(nodeModelFiles(v.pattern), layers, kvHeads);
  return {
    pattern, sparsity: numberOption(v.sparsity, '--sparsity'), streamingOnly: v['streaming-only'],
    window: { sink: intOption(v.sink, '--sink'), recent: intOption(v.recent, '--recent', 1) }, patternName: `pattern ${v.pattern}`,
    compensation: v.compensation,
  };
}

/** --offload [K,L] [--offload-tables] | --topk N|P% [--dense-layers L0,L1] (MagicPIG's offloading, or its exact TopK baseline: generate, eval, memory, serve). */
export const offloadOptions = {
  offload: { type: 'string' },
  'offload-tables': { type: 'boolean' },
  topk: { type: 'string' },
  'dense-layers': { type: 'string' },
} as const;

/** A bare --offload (nothing, or another flag, after it) as --offload=default, so that parseArgs takes it. */
export function bareOffload(argv: string[]): string[] {
  return argv.map((a, i) => (a === '--offload' && (i + 1 >= argv.length || argv[i + 1].startsWith('-')) ? '--offload=default' : a));
}

/**
 * --topk N (keys per query and decode step, an integer ≥ 1) or P% (of the offloaded keys, 0 < P ≤ 100)
 * as the library's topk choice.
 */
export function topkFlag(text: string): TopKChoice {
  const t = text.trim(), bad = `--topk takes N (keys per decode step, an integer ≥ 1) or P% (of the offloaded keys, 0 < P ≤ 100); got "${text}"`;
  if (/^\d+$/.test(t)) {
    const keys = Number(t);
    if (!(Number.isSafeInteger(keys) && keys >= 1)) throw new Error(bad); // 0, or too many digits for an exact count
    return { keys };
  }
  const m = /^(\d+(?:\.\d+)?|\.\d+)%$/.exec(t);
  if (!m || !(Number(m[1]) > 0 && Number(m[1]) <= 100)) throw new Error(bad);
  return { fraction: Number(m[1]) / 100 };
}

/** --offload [K,L], --offload-tables, --topk and --dense-layers as the library's offload option (ranges are the library's to check). */
export function offloadFlags(v: { offload?: string; 'offload-tables'?: boolean; topk?: string; 'dense-layers'?: string }): OffloadOptions | undefined {
  if (v.offload === undefined && v.topk === undefined) {
    if (v['dense-layers'] !== undefined) throw new Error('--dense-layers goes with --offload or --topk');
    if (v['offload-tables']) throw new Error('--offload-tables goes with --offload');
    return undefined;
  }
  if (v['offload-tables'] && v.topk !== undefined) throw new Error('--offload-tables indexes hash codes; --topk hashes nothing (give one or the other)');
  const tables = v['offload-tables'] ? { tables: true } : {};
  const denseLayers = v['dense-layers'] === undefined ? undefined
    : numberList(v['dense-layers'], '--dense-layers', (n) => Number.isInteger(n) && n >= 0, 'a layer index');
  if (v.topk !== undefined) {
    // TopK offloads as --offload does; explicit K,L would be ignored, so they are refused.
    if (v.offload !== undefined && v.offload !== 'default') throw new Error(`--topk replaces --offload's LSH sampling with exact TopK; give --topk or --offload ${v.offload}, not both`);
    return { topk: topkFlag(v.topk), denseLayers };
  }
  if (v.offload === undefined || v.offload === 'default') return { denseLayers, ...tables };
  const m = /^(\d+),(\d+)$/.exec(v.offload.trim());
  if (!m) throw new Error(`--offload takes K,L (bits per hash table, tables; e.g. --offload 10,150) or nothing for the default (got "${v.offload}")`);
  return { K: Number(m[1]), L: Number(m[2]), denseLayers, ...tables };
}
