// The magicpig method's settings: the LSH parameters (K bits × L tables), the static tokens kept
// exact (first `sinks`, last `local`), the seed of the hyperplanes, and the compiled kernel module
// (so that a cache instantiates its own WebAssembly store synchronously, inside KvMethod.create).
import { kernelModule } from '../../cpu/wasm.js';
import type { KvDType } from '../../backend/kv-dtype.js';
import { DuetError } from '../../errors.js';
import { checkLshParams, DEFAULT_K, DEFAULT_L, DEFAULT_LOCAL, DEFAULT_SINKS, type LshParams } from './params.js';
import type { OffloadThreads } from './threads.js';
import { checkTopk, describeTopk, type TopKChoice } from './topk.js';

export interface MagicPigSettings extends LshParams {
  /** First positions always attended exactly (≥ 0). */
  sinks: number;
  /** The positions just before a chunk that are attended exactly (≥ 1), as well as the chunk itself. */
  local: number;
  /** Seed of the SimHash hyperplanes (one set for every layer and head, as MagicPIG's server). */
  seed: number;
  /**
   * Exact TopK instead of sampling (MagicPIG's baseline; src/kv/magicpig/topk.ts): decode attends the
   * static tokens and the k offloaded keys of highest q·k; no hash codes are kept, K and L are unused.
   */
  topk?: TopKChoice;
  /**
   * Bucket tables over the offloaded keys (MagicPIG's own layout): a decode step visits the
   * query's L buckets instead of scanning every key's codes, for L·4 bytes more per key and head
   * (src/kv/magicpig/method.ts has when they are rebuilt). Default false: the scan.
   */
  tables?: boolean;
  /** kernelModule(): the kernels every cache instantiates over its own memory (needed to create caches, not to lay them out). */
  module?: WebAssembly.Module;
  /** Worker threads the caches split their KV heads over (one pool per model; none: one thread). */
  threads?: OffloadThreads;
}

export type MagicPigOptions = Partial<Omit<MagicPigSettings, 'module' | 'threads'>>;

/** Seed of the hyperplanes when none is given. */
export const DEFAULT_SEED = 20;

/**
 * The default (K, L) for a head size. MagicPIG's K = 10, L = 150 (Llama-3.1-8B, head dim 128)
 * samples a few percent of the keys; the collision probability of one table depends only on the
 * angle, (1 − θ/π)^K, but small heads' keys lie at wider spreads of angles to the query, so heads
 * under 64 dims take one bit more per table to stay as sparse.
 */
export function defaultLsh(headDim: number): LshParams {
  return headDim >= 64 ? { K: DEFAULT_K, L: DEFAULT_L } : { K: DEFAULT_K + 1, L: DEFAULT_L };
}

function nonNegativeInt(n: number, what: string, min: number): void {
  if (!(Number.isInteger(n) && n >= min)) throw new RangeError(`MagicPIG ${what} must be an integer ≥ ${min} (got ${n})`);
}

/** Checks K, L, sinks, local and seed (RangeErrors naming the field), and the module when caches are to be created; returns the settings. */
export function checkMagicPigSettings(s: MagicPigSettings | undefined, create = false): MagicPigSettings {
  if (!s) throw new Error('the magicpig method needs settings.magicpig ({ K, L, sinks, local, seed, module }; magicpigSettings() builds them)');
  checkLshParams(s);
  nonNegativeInt(s.sinks, 'sinks', 0);
  nonNegativeInt(s.local, 'local window', 1);
  nonNegativeInt(s.seed, 'seed', 0);
  if (s.topk !== undefined) checkTopk(s.topk);
  if (s.tables !== undefined && typeof s.tables !== 'boolean') throw new RangeError(`MagicPIG tables must be true or false (got ${JSON.stringify(s.tables)})`);
  if (s.tables && s.topk !== undefined) throw new RangeError('MagicPIG tables index hash codes; exact topk hashes nothing (give one or the other)');
  if (create && !(s.module instanceof WebAssembly.Module)) throw new Error('MagicPIG settings: module must be the compiled kernel module (kernelModule())');
  return s;
}

/** Settings with MagicPIG's defaults for what is not given (K and L from the head size), without the module (enough to lay caches out). */
export function magicpigLayoutSettings(o: MagicPigOptions, headDim: number): MagicPigSettings {
  const lsh = defaultLsh(headDim);
  return checkMagicPigSettings({
    K: o.K ?? lsh.K, L: o.L ?? lsh.L, sinks: o.sinks ?? DEFAULT_SINKS, local: o.local ?? DEFAULT_LOCAL, seed: o.seed ?? DEFAULT_SEED,
    ...(o.topk !== undefined ? { topk: o.topk } : {}),
    ...(o.tables ? { tables: true } : {}),
  });
}

/** Settings with MagicPIG's defaults for what is not given, and the compiled kernel module (ready to create caches). */
export async function magicpigSettings(o: MagicPigOptions, headDim: number): Promise<MagicPigSettings> {
  return withKernels(magicpigLayoutSettings(o, headDim));
}

/** Checked settings with the compiled kernel module added. */
export async function withKernels(s: MagicPigSettings): Promise<MagicPigSettings> {
  return checkMagicPigSettings({ ...s, module: await kernelModule(false) }, true);
}

/** The offload option (loadModel, the engine, kvMemory): MagicPIG's parameters and the layers kept dense (full attention). */
export interface OffloadOptions extends MagicPigOptions {
  denseLayers?: number[];
}

/**
 * The offload option checked against a model's head kinds (retrieval = true per layer and KV head)
 * and head size, errors naming `offload.<field>`; the settings come without the module (layout only).
 */
export function offloadSettings(o: OffloadOptions, kinds: ReadonlyArray<ReadonlyArray<boolean>>, headDim: number,
  kvDtype: KvDType): { settings: MagicPigSettings; denseLayers: number[] } {
  if (kvDtype !== 'f32') throw new DuetError('offload', `keeps the offloaded cache in f32; KV dtype ${kvDtype} is not supported with it`);
  if (o.topk !== undefined && (o.K !== undefined || o.L !== undefined)) {
    throw new DuetError('offload.topk', 'replaces the LSH sampling with exact TopK; K and L do not apply to it (give one or the other)');
  }
  const denseLayers = o.denseLayers ?? [];
  for (const l of denseLayers) {
    if (!(Number.isInteger(l) && l >= 0 && l < kinds.length)) throw new DuetError('offload.denseLayers', `${l} is not a layer of the model (0..${kinds.length - 1})`);
  }
  if (!kinds.some((row, l) => !denseLayers.includes(l) && row.some((retrieval) => retrieval))) {
    throw new DuetError('offload', 'leaves no head to offload: every retrieval head is streaming (the pattern) or in a dense layer');
  }
  try {
    return { settings: magicpigLayoutSettings(o, headDim), denseLayers };
  } catch (e) {
    const m = /MagicPIG (K|L|sinks|local window|seed|topk)\b/.exec((e as Error).message);
    throw new DuetError(m ? `offload.${m[1] === 'local window' ? 'local' : m[1]}` : 'offload', (e as Error).message.replace(/^MagicPIG /, ''));
  }
}

/** "MagicPIG K 10 × L 150, 4 sinks + 64 local" or "exact top-40 keys, 4 sinks + 64 local" (model and memory descriptions). */
export function describeOffload(s: MagicPigSettings): string {
  const threads = s.threads && !s.topk ? `, ${s.threads.count} threads` : '';
  return `${s.topk ? describeTopk(s.topk) : `MagicPIG K ${s.K} × L ${s.L}${s.tables ? ' (bucket tables)' : ''}`}, ${s.sinks} sinks + ${s.local} local${threads}`;
}

/** K·L hyperplanes of d values as rows ([K·L][d]), N(0, 1) from `seed` (mulberry32, Box–Muller): the same for the same seed. */
export function simhashPlanes(p: LshParams, d: number, seed: number): Float32Array {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float32Array(p.K * p.L * d);
  for (let i = 0; i < out.length; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform())), t = 2 * Math.PI * uniform();
    out[i] = r * Math.cos(t);
    if (i + 1 < out.length) out[i + 1] = r * Math.sin(t);
  }
  return out;
}
