// Which KV heads are retrieval (full cache) and which streaming (sink + recent), from the API's
// attention options: full attention, a DuoAttention pattern at a sparsity, or streaming only.
import { allHeads, binarize, countStreaming, type HeadKinds, type HeadPattern } from '../attention/pattern.js';
import type { StreamingWindow } from '../backend/contract.js';
import { DuetError } from '../errors.js';

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
}

export interface ResolvedHeads { kinds: HeadKinds; window?: StreamingWindow; compensation: boolean; description: string }

function windowSize(value: number | undefined, field: string, min: number): number | undefined {
  if (value !== undefined && !(Number.isInteger(value) && value >= min)) throw new DuetError(field, `must be an integer ≥ ${min} (got ${value})`);
  return value;
}

export function resolveHeads(o: HeadOptions, layers: number, kvHeads: number, patternName = 'pattern'): ResolvedHeads {
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
