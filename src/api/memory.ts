// KV-cache memory of a model (its config.json) under some heads at a context length: full attention
// against DuoAttention, per device with the split placement, with the model's own sliding window
// applied as the engine applies it. No weights needed.
import { formatBytes, projectKvMemory, type MemoryProjection, type MethodProjection } from '../attention/memory.js';
import { applySlidingWindow } from '../attention/sliding-window.js';
import { DuetError } from '../errors.js';
import { kvDTypeOption } from '../engine/kv-dtype.js';
import type { KvDType } from '../backend/kv-dtype.js';
import type { StreamingWindow } from '../backend/contract.js';
import type { ModelConfig } from '../model/config.js';
import { resolveHeads, type HeadOptions } from './heads.js';
import { describeOffload, offloadSettings, type OffloadOptions } from '../kv/magicpig/settings.js';
import { allHeads, type HeadKinds } from '../attention/pattern.js';
import { kvBytesByHome } from '../engine/memory-plan.js';
import { describePromoted } from '../engine/layer-groups.js';
import type { KvSettings } from '../kv/method.js';
import { methodsOfKinds } from '../kv/registry.js';

export interface KvMemoryOptions extends HeadOptions {
  /** Tokens of context. */
  context: number;
  /** Storage of the full caches, as the engine's kvDtype option (default f32, the engine's default); rings are f32. */
  kvDtype?: KvDType;
  /** How the heads' description names the pattern (default "pattern"). */
  patternName?: string;
  /** MagicPIG's offloading, as loadModel's offload option: retrieval heads' caches in host memory. */
  offload?: boolean | OffloadOptions;
}

export interface KvMemory extends MemoryProjection {
  /** The heads in words ("pattern: 8/16 KV heads streaming (sink 4, recent 16)", "full attention"). */
  heads: string;
  /** What the model's sliding window changed, when it binds. */
  note: string | null;
}

export function kvMemory(config: ModelConfig, o: KvMemoryOptions): KvMemory {
  const kvDtype = kvDTypeOption(o.kvDtype);
  if (!(Number.isInteger(o.context) && o.context >= 1)) throw new DuetError('context', `must be a positive integer (got ${o.context})`);
  const heads = resolveHeads(o, config.numLayers, config.numKvHeads, o.patternName);
  // The model's own sliding window caps every head's cache, as the engine runs it.
  const windowed = applySlidingWindow(config.slidingWindow, config.maxPositionEmbeddings, heads.kinds, heads.window);
  if (windowed.limit && o.context > windowed.limit.tokens) {
    throw new DuetError('context', `${o.context}: ${windowed.limit.reason}; the engine refuses sequences over ${windowed.limit.tokens} tokens`);
  }
  if (heads.methods && windowed.note) {
    throw new DuetError(heads.locret ? 'locret' : 'methods', `cannot be combined with the model's own sliding_window (${config.slidingWindow})`);
  }
  if (heads.locret && kvDtype !== 'f32') throw new DuetError('locret', `keeps its cache in f32; KV dtype ${kvDtype} is not supported with it`);
  if (o.offload && heads.methods) throw new DuetError('offload', `cannot be combined with ${heads.locret ? 'locret' : 'methods'} (offload names the methods itself: magicpig on retrieval heads)`);
  const offload = o.offload ? offloadSettings(o.offload === true ? {} : o.offload, windowed.kinds, config.headDim, kvDtype) : undefined;
  const p = projectModelKv(config, windowed.kinds, o.context, windowed.window ?? { sink: 0, recent: 1 }, kvDtype, heads.compensation,
    offload ? { offload } : heads.methods && { methods: heads.methods, locret: heads.locret });
  const s = offload?.settings;
  const offloaded = s ? `; retrieval heads offloaded (${describeOffload(s)}${offload.denseLayers.length ? `, layers ${offload.denseLayers.join(',')} dense` : ''})` : '';
  const promoted = config.dha ? describePromoted(config, methodsOfKinds(windowed.kinds)) : '';
  return { ...p, kvDtype, heads: heads.description + offloaded + promoted, note: windowed.note };
}

/**
 * projectKvMemory for `config`'s own layout (heads `kinds`, the sliding window already applied): a
 * DHA model's decoupled layers cache their own key and value head counts.
 */
export function projectModelKv(config: ModelConfig, kinds: HeadKinds, context: number, window: StreamingWindow, kvDtype: KvDType,
  compensation = false, other?: MethodProjection): MemoryProjection {
  if (config.dha && other) {
    throw new DuetError(other.offload ? 'offload' : other.locret ? 'locret' : 'methods', 'is not supported on a DHA model (its decoupled layers take full and streaming heads only; docs/dha.md)');
  }
  return config.dha
    ? projectDhaMemory(config, kinds, context, { kvDtype, window, compensation })
    : projectKvMemory(kinds, config.headDim, context, window, kvDtype, compensation, config.numHeads / config.numKvHeads, other);
}

/**
 * A DHA model's projection (decoupled layers cache their own key and value head counts), through
 * the engine's own layer groups: full attention is every head full, the pattern's heads as given
 * (its promoted heads count as retrieval heads: the groups' query heads are counted).
 */
function projectDhaMemory(config: ModelConfig, kinds: HeadKinds, context: number, settings: KvSettings): MemoryProjection {
  const all = kvBytesByHome(config, methodsOfKinds(allHeads(config.numLayers, config.numKvHeads, true)), context, settings);
  const duo = kvBytesByHome(config, methodsOfKinds(kinds), context, settings);
  return {
    context, kvDtype: settings.kvDtype, full_bytes: all.main + all.side,
    duo_bytes: duo.main + duo.side, gpu_bytes: duo.main, cpu_bytes: duo.side,
    offloaded_bytes: 0, offloaded_heads: 0,
    retrieval_heads: duo.heads.full ?? 0, streaming_heads: duo.heads.streaming ?? 0, locret_heads: 0,
    method_bytes: duo.byMethod,
  };
}

/** How far a configuration's context goes within a GPU budget for its KV cache (largestContext). */
export interface ContextFit {
  /** The largest context ≤ maxContext whose KV bytes on the GPU fit the budget (0: not one token). */
  tokens: number;
  /** GPU KV bytes at that context (0 when tokens is 0). */
  gpuBytes: number;
  /** Host KV bytes at that context (streaming rings with split, offloaded stores). */
  cpuBytes: number;
  /** What stops it there: the GPU budget, maxContext, or why the next context is refused (e.g. an offloaded store over one WebAssembly memory). */
  limit: string;
}

/**
 * The largest context at which the KV cache `o` describes keeps at most `gpuBudgetBytes` on the GPU
 * (split placement: streaming rings and offloaded stores are host memory), searched up to
 * `maxContext` tokens; `full` is the same for full attention in the same KV dtype. Exact: every
 * probe is kvMemory's projection (the bytes a session allocates), and GPU bytes grow with context.
 */
export function largestContext(config: ModelConfig, o: Omit<KvMemoryOptions, 'context'>, gpuBudgetBytes: number, maxContext: number): { full: ContextFit; configured: ContextFit } {
  if (!(Number.isFinite(gpuBudgetBytes) && gpuBudgetBytes > 0)) throw new DuetError('gpuBudget', `must be a positive number of bytes (got ${gpuBudgetBytes})`);
  if (!(Number.isInteger(maxContext) && maxContext >= 1)) throw new DuetError('maxContext', `must be a positive integer (got ${maxContext})`);
  const search = (options: Omit<KvMemoryOptions, 'context'>): ContextFit => {
    let refusal = '';
    const probe = (context: number): KvMemory | null => {
      try {
        const p = kvMemory(config, { ...options, context });
        return p.gpu_bytes <= gpuBudgetBytes ? p : null;
      } catch (e) {
        if (!(e instanceof RangeError)) throw e; // a refusal of this size (a store limit), not a bad option
        refusal = e.message;
        return null;
      }
    };
    let lo = 0, hi = maxContext + 1, best: KvMemory | null = null;
    while (hi - lo > 1) { // probe(lo) fits (or lo = 0), probe(hi) does not (or hi = maxContext + 1)
      const mid = Math.floor((lo + hi) / 2), p = probe(mid);
      if (p) { lo = mid; best = p; } else hi = mid;
    }
    let limit = `max context (${maxContext})`;
    if (lo < maxContext) { // why lo + 1 fails: a refusal, or the budget
      refusal = '';
      probe(lo + 1);
      limit = refusal || `GPU budget (${formatBytes(gpuBudgetBytes)})`;
    }
    return { tokens: lo, gpuBytes: best?.gpu_bytes ?? 0, cpuBytes: best?.cpu_bytes ?? 0, limit };
  };
  return { full: search({ kvDtype: o.kvDtype }), configured: search(o) };
}
