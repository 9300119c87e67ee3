// A model's own sliding-window attention (Mistral's `sliding_window`) expressed in the streaming
// machinery: a query at position i sees keys j with i − W < j ≤ i — W keys, itself included, which
// is Hugging Face's convention (its mask keeps kv_idx > q_idx − sliding_window) — i.e. a streaming
// head with no sinks and recent = W. Composed with a DuoAttention pattern, every head obeys both
// constraints: a retrieval head becomes window-only; a streaming head (sink s, recent r) sees the
// intersection of its window and the model's, which is again a sink-free window when r ≥ W or
// s = 0. Where the intersection is not one window for every head (sinks that leave the model's
// window, or retrieval heads beside narrower streaming heads), the result is exact only for
// sequences of at most W tokens, and the engine refuses longer ones instead of answering wrongly.
import type { HeadKinds } from './pattern.js';

export interface Window { sink: number; recent: number }

export interface WindowedHeads {
  kinds: HeadKinds;
  window: Window | undefined;
  /** Longest sequence computed exactly (null: any), and why. */
  limit: { tokens: number; reason: string } | null;
  /** What changed, for the user; null when the model has no window that binds. */
  note: string | null;
}

export function applySlidingWindow(slidingWindow: number | null, maxPositions: number, kinds: HeadKinds,
  window: Window | undefined): WindowedHeads {
  const W = slidingWindow;
  // A window at least as long as any sequence never masks anything.
  if (W === null || W >= maxPositions) return { kinds, window, limit: null, note: null };
  const streaming = kinds.some((row) => row.some((r) => !r));
  const retrieval = kinds.some((row) => row.some((r) => r));
  const everyHead = (): WindowedHeads => ({
    kinds: kinds.map((row) => row.map(() => false)), window: { sink: 0, recent: W }, limit: null,
    note: `sliding_window ${W}: every head attends to its last ${W} keys (a streaming ring without sinks)`,
  });
  if (!streaming || !window) return everyHead();
  // Streaming heads wider than the model's window are the model's window.
  if (window.recent >= W) return everyHead();
  if (window.sink === 0 && !retrieval) return { kinds, window, limit: null, note: null };
  return {
    kinds, window,
    limit: { tokens: W, reason: `the model's sliding_window (${W}) and the pattern's window (sink ${window.sink}, recent ${window.recent}) do not combine into one window for every head` },
    note: null,
  };
}
