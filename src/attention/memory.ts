// Projected KV-cache memory of full attention vs a DuoAttention pattern, for any model and context,
// byte for byte as a Session allocates it: each head group's cache as its KV method lays it out
// (src/kv/): full caches and streaming rings in the KV dtype's rows (backend/kv-dtype.ts; the rings
// are constant-size), plus the f32 compensation sums when they are kept.
import { DuetError } from '../errors.js';
import type { KvDType } from '../backend/kv-dtype.js';
import { layoutBytes, layoutHostBytes, methodBytes, type KvSettings } from '../kv/method.js';
import { fullMethod } from '../kv/full/method.js';
import { groupHeads, methodsOfKinds, offloadedMethods, type HeadMethods } from '../kv/registry.js';
import type { MagicPigSettings } from '../kv/magicpig/settings.js';
import type { LocretHeads } from '../kv/locret/settings.js';
import type { HeadKinds } from './pattern.js';

export interface MemoryProjection {
  context: number;
  /** Storage of the full caches. */
  kvDtype: KvDType;
  /** Every head with a full cache. */
  full_bytes: number;
  /** Retrieval heads full, streaming heads sink + recent. */
  duo_bytes: number;
  /** With the split placement: the retrieval caches live on the GPU, the rings (and offloaded caches) on the CPU. */
  gpu_bytes: number;
  cpu_bytes: number;
  /** Of cpu_bytes, the offloaded (MagicPIG) caches' host memory: K, V, hash codes, norms, key means, hyperplanes. */
  offloaded_bytes: number;
  /** KV heads offloaded. */
  offloaded_heads: number;
  retrieval_heads: number;
  streaming_heads: number;
  /** Heads whose method is locret (0 without it). */
  locret_heads: number;
  /** Bytes by KV method name (the methods in use), as Session.kvMemory().byMethod measures them. */
  method_bytes: Record<string, number>;
}

/**
 * Methods other than DuoAttention's kinds give: each head's method and locret's budget, or MagicPIG's
 * offloading of the retrieval heads (src/kv/).
 */
export interface MethodProjection {
  methods?: HeadMethods;
  locret?: { budget: number; stabilizers: number };
  offload?: { settings: MagicPigSettings; denseLayers: readonly number[] };
}

// Projections need no retaining heads (bytes depend on the budget only); a cache made with these fails.
const NO_RETAINING_HEADS: LocretHeads = {
  head() { throw new Error('a memory projection has no retaining heads'); },
  invFreq() { throw new Error('a memory projection has no retaining heads'); },
};

/**
 * `group` (query heads per KV head) only matters to methods whose bytes depend on it; full and
 * streaming caches do not. `compensation`: the streaming heads keep the compensation sums.
 */
export function projectKvMemory(kinds: HeadKinds, headDim: number, context: number,
  window: { sink: number; recent: number }, kvDtype: KvDType, compensation = false, group = 1, other?: MethodProjection): MemoryProjection {
  if (!(Number.isInteger(context) && context >= 1)) throw new DuetError('context', `must be a positive integer (got ${context})`);
  const locret = other?.locret && { ...other.locret, heads: NO_RETAINING_HEADS };
  const offload = other?.offload;
  const settings: KvSettings = { kvDtype, window, compensation, locret, magicpig: offload?.settings };
  const bytes = { main: 0, side: 0, host: 0 }, heads: Record<string, number> = {}, byMethod: Record<string, number> = {};
  let full = 0;
  for (const row of other?.methods ?? (offload ? offloadedMethods(kinds, offload.denseLayers) : methodsOfKinds(kinds))) {
    full += methodBytes(fullMethod, { numKvHeads: row.length, group, headDim }, context, settings);
    for (const g of groupHeads(row)) {
      const specs = g.method.layout({ numKvHeads: g.kvHeads.length, group, headDim }, context, settings), host = layoutHostBytes(specs);
      bytes[g.method.home] += layoutBytes(specs) - host;
      bytes.host += host;
      byMethod[g.method.name] = (byMethod[g.method.name] ?? 0) + layoutBytes(specs);
      heads[g.method.name] = (heads[g.method.name] ?? 0) + g.kvHeads.length;
    }
  }
  return {
    context, kvDtype,
    full_bytes: full,
    duo_bytes: bytes.main + bytes.side + bytes.host, gpu_bytes: bytes.main, cpu_bytes: bytes.side + bytes.host,
    offloaded_bytes: bytes.host, offloaded_heads: heads.magicpig ?? 0,
    retrieval_heads: heads.full ?? 0, streaming_heads: heads.streaming ?? 0, locret_heads: heads.locret ?? 0,
    method_bytes: byMethod,
  };
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  while (n >= 1024 && u < units.length - 1) { n /= 1024; u++; }
  return `${n.toFixed(u === 0 ? 0 : 2)} ${units[u]}`;
}
