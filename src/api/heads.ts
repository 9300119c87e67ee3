// Which KV heads are retrieval (full cache) and which streaming (sink + recent), from the API's
// attention options: full attention, a DuoAttention pattern at a sparsity, or streaming only; and
// the KV method of each head when other methods take part (Locret's eviction, alone or on the
// heads a pattern streams, or a method named per head).
import { allHeads, binarize, countStreaming, methodsOfPattern, type HeadKinds, type HeadPattern } from '../attention/pattern.js';
import type { StreamingWindow } from '../backend/contract.js';
import { DuetError } from '../errors.js';
import { KV_METHODS, type HeadMethods } from '../kv/registry.js';

export interface HeadOptions {
  /** A parsed DuoAttention pattern (the entries load one from a folder, URL or files). */
  pattern?: HeadPattern;
  /** Fraction of KV heads made streaming, lowest gate values first (default: gate α < 0.5 streams). */
  sparsity?: number;
  /** Every head streaming (the StreamingLLM baseline); needs a window or a pattern for its sizes. */
  streamingOnly?: boolean;
  /** Streaming window sizes; default: the pattern's. */
  window?: Partial<StreamingWindow>;
  /**
   * RazorAttention's compensation token on the streaming heads: the tokens a head's window has
   * dropped are attended as one token (their mean key and value) counting as that many copies.
   * Default off. Needs a pattern or streamingOnly.
   */
  compensation?: boolean;
  /**
   * Locret's eviction (docs/locret.md): each locret KV head keeps `budget` positions, the
   * `stabilizers` latest always (default budget/4, rounded down), the rest by the retaining heads'
   * scores (locret.json beside the model). Alone: every head. With a pattern: the heads it streams
   * (its retrieval heads stay full). With `methods`: the heads named locret.
   */
  locret?: LocretOptions;
  /**
   * The KV method of each (layer, KV head) by name: full, streaming, locret, magicpig (src/kv/registry.ts).
   * Instead of pattern / streamingOnly; streaming heads need window, locret heads the locret option.
   */
  methods?: HeadMethods;
}

export interface LocretOptions { budget: number; stabilizers?: number }

export interface ResolvedHeads {
  kinds: HeadKinds;
  window?: StreamingWindow;
  compensation: boolean;
  description: string;
  /** Each head's method when not just full/streaming by `kinds` (undefined: methodsOfKinds(kinds)). */
  methods?: HeadMethods;
  /** Locret's settings when a head's method is locret. */
  locret?: { budget: number; stabilizers: number };
}

/** The locret option checked, stabilizers defaulted. */
export function locretSettingsOf(o: LocretOptions): { budget: number; stabilizers: number } {
  if (typeof o !== 'object' || o === null) throw new DuetError('locret', 'must be { budget, stabilizers? }');
  if (!Number.isInteger(o.budget) || o.budget < 1) throw new DuetError('locret.budget', `must be a positive integer (got ${o.budget})`);
  const stabilizers = o.stabilizers ?? Math.floor(o.budget / 4);
  if (!Number.isInteger(stabilizers) || stabilizers < 0 || stabilizers > o.budget) {
    throw new DuetError('locret.stabilizers', `must be an integer from 0 to the budget ${o.budget} (got ${stabilizers})`);
  }
  return { budget: o.budget, stabilizers };
}

/** A method pattern checked against the model's shape and the registered methods (errors name the field). */
export function checkHeadMethods(methods: HeadMethods, layers: number, kvHeads: number): HeadMethods {
  const names = KV_METHODS.map((m) => m.name);
  if (!Array.isArray(methods) || methods.length !== layers) {
    throw new DuetError('methods', `must have one row per layer (${layers}), got ${Array.isArray(methods) ? methods.length : typeof methods}`);
  }
  methods.forEach((row, l) => {
    if (!Array.isArray(row) || row.length !== kvHeads) throw new DuetError(`methods[${l}]`, `must name ${kvHeads} KV heads' methods (got ${Array.isArray(row) ? row.length : typeof row})`);
    row.forEach((m, h) => {
      if (!names.includes(m)) throw new DuetError(`methods[${l}][${h}]`, `unknown KV method ${JSON.stringify(m)} (registered: ${names.join(', ')})`);
    });
  });
  return methods.map((row) => [...row]);
}

function count(methods: HeadMethods, name: string): number {
  return methods.reduce((n, row) => n + row.filter((m) => m === name).length, 0);
}

function windowSize(value: number | undefined, field: string, min: number): number | undefined {
  if (value !== undefined && !(Number.isInteger(value) && value >= min)) throw new DuetError(field, `must be an integer ≥ ${min} (got ${value})`);
  return value;
}

export function resolveHeads(o: HeadOptions, layers: number, kvHeads: number, patternName = 'pattern'): ResolvedHeads {
  if (o.methods !== undefined || o.locret !== undefined) return resolveMethods(o, layers, kvHeads, patternName);
  if (o.pattern && o.streamingOnly) throw new DuetError('streamingOnly', 'cannot be combined with pattern');
  if (o.sparsity !== undefined && !o.pattern) throw new DuetError('sparsity', 'needs pattern');
  if (o.compensation !== undefined && typeof o.compensation !== 'boolean') throw new DuetError('compensation', `must be true or false (got ${String(o.compensation)})`);
  const compensation = o.compensation === true;
  if (compensation && !o.pattern && !o.streamingOnly) throw new DuetError('compensation', 'needs streaming heads (pattern or streamingOnly)');
  const comp = compensation ? ', compensation token' : '';
  let sink = windowSize(o.window?.sink, 'window.sink', 0);
  let recent = windowSize(o.window?.recent, 'window.recent', 1);
  if (o.pattern) {
    sink ??= o.pattern.sink;
    recent ??= o.pattern.recent;
    const kinds = binarize(o.pattern.alphas, { sparsity: o.sparsity });
    return {
      kinds, window: { sink, recent }, compensation,
      description: `${patternName}: ${countStreaming(kinds)}/${layers * kvHeads} KV heads streaming (sink ${sink}, recent ${recent}${comp})`,
    };
  }
  if (o.streamingOnly) {
    if (sink === undefined || recent === undefined) throw new DuetError('streamingOnly', 'needs window.sink and window.recent (or pattern)');
    return { kinds: allHeads(layers, kvHeads, false), window: { sink, recent }, compensation, description: `streaming only (sink ${sink}, recent ${recent}${comp})` };
  }
  return { kinds: allHeads(layers, kvHeads, true), compensation: false, description: 'full attention' };
}

/** Heads with a method per head: locret alone, locret on a pattern's streaming heads, or methods by name. */
function resolveMethods(o: HeadOptions, layers: number, kvHeads: number, patternName: string): ResolvedHeads {
  const locret = o.locret === undefined ? undefined : locretSettingsOf(o.locret);
  const lr = locret ? `budget ${locret.budget}, stabilizers ${locret.stabilizers}` : '';
  if (o.streamingOnly) throw new DuetError('streamingOnly', o.methods ? 'cannot be combined with methods (they name every head)' : 'cannot be combined with locret (every head would be both)');
  if (o.compensation !== undefined && typeof o.compensation !== 'boolean') throw new DuetError('compensation', `must be true or false (got ${String(o.compensation)})`);
  let methods: HeadMethods, description: string;
  if (o.methods !== undefined) {
    if (o.pattern) throw new DuetError('methods', 'cannot be combined with pattern (they name every head)');
    if (o.sparsity !== undefined) throw new DuetError('sparsity', 'needs pattern');
    methods = checkHeadMethods(o.methods, layers, kvHeads);
    const used = KV_METHODS.map((m) => [m.name, count(methods, m.name)] as const).filter(([, n]) => n > 0);
    description = `methods: ${used.map(([m, n]) => `${n} ${m}`).join(', ')} of ${layers * kvHeads} KV heads`;
    if (count(methods, 'locret') > 0 && !locret) throw new DuetError('methods', 'name locret heads, which need the locret option (budget)');
    if (count(methods, 'locret') === 0 && locret) throw new DuetError('locret', 'is given, but no head\'s method is locret');
  } else if (o.pattern) {
    // DuoAttention's retrieval heads full, Locret's eviction on the heads the pattern streams.
    methods = methodsOfPattern(binarize(o.pattern.alphas, { sparsity: o.sparsity }), 'locret');
    description = `${patternName}: ${count(methods, 'locret')}/${layers * kvHeads} KV heads locret (${lr}), the rest full`;
  } else {
    if (o.sparsity !== undefined) throw new DuetError('sparsity', 'needs pattern');
    methods = allHeads(layers, kvHeads, true).map((row) => row.map(() => 'locret'));
    description = `locret (${lr})`;
  }
  if (locret && o.methods !== undefined) description += ` (locret ${lr})`;
  const kinds = methods.map((row) => row.map((m) => m !== 'streaming'));
  const streaming = countStreaming(kinds);
  const compensation = o.compensation === true;
  if (compensation && streaming === 0) throw new DuetError('compensation', 'needs streaming heads (pattern or streamingOnly)');
  let window: StreamingWindow | undefined;
  if (streaming > 0) {
    const sink = windowSize(o.window?.sink, 'window.sink', 0), recent = windowSize(o.window?.recent, 'window.recent', 1);
    if (sink === undefined || recent === undefined) throw new DuetError('methods', 'name streaming heads, which need window.sink and window.recent');
    window = { sink, recent };
    description += ` (sink ${sink}, recent ${recent}${compensation ? ', compensation token' : ''})`;
  }
  return { kinds, window, compensation, description, methods, locret };
}
