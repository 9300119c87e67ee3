// Exact TopK over the offloaded keys: MagicPIG's own baseline (Chen et al., ICLR 2025, "TopK" in
// its tables) and an oracle here. Same store, same static tokens and exact prefill as the sampled
// method; per decode step each query attends its static tokens and the k offloaded keys with the
// highest q·k, exactly, with plain logits (no sampling correction: nothing was sampled). It reads
// every offloaded key each step, so it is an evaluation baseline, not a speed path (plain JS, f64).
//
// k per step is `keys`, or `fraction` of the offloaded keys at that step (⌈fraction·m⌉, at least 1):
// a fraction tracks the context like MagicPIG's sampled fraction does, so one setting compares at
// equal keys per step at every length of an eval.

/** Keys per query and decode step: a fixed count, or a fraction of the offloaded keys. */
export type TopKChoice = { keys: number } | { fraction: number };

/** Throws a RangeError naming topk when the choice is not a positive integer count or a fraction in (0, 1]. */
export function checkTopk(t: TopKChoice): void {
  if (typeof t !== 'object' || t === null) throw new RangeError(`MagicPIG topk must be { keys } or { fraction } (got ${String(t)})`);
  if ('keys' in t) {
    if (!(Number.isInteger(t.keys) && t.keys >= 1)) throw new RangeError(`MagicPIG topk keys must be an integer ≥ 1 (got ${t.keys})`);
  } else if ('fraction' in t) {
    if (!(typeof t.fraction === 'number' && t.fraction > 0 && t.fraction <= 1)) throw new RangeError(`MagicPIG topk fraction must be in (0, 1] (got ${t.fraction})`);
  } else {
    throw new RangeError('MagicPIG topk must be { keys } or { fraction }');
  }
}

/** Keys attended per query when m keys are offloaded: never more than m. */
export function topkCount(t: TopKChoice, m: number): number {
  if (m <= 0) return 0;
  const k = 'keys' in t ? t.keys : Math.max(1, Math.ceil(t.fraction * m - 1e-9));
  return Math.min(k, m);
}

/** "exact top-40 keys" / "exact top-2.5 % keys", for descriptions. */
export function describeTopk(t: TopKChoice): string {
  return 'keys' in t ? `exact top-${t.keys} keys` : `exact top-${+(t.fraction * 100).toPrecision(6)} % keys`;
}

/**
 * Indices of the k largest of scores[0..n), highest first; equal scores in ascending index (so the
 * earlier position wins a tie, whatever the sort). k ≥ n gives every index.
 */
export function topkIndices(scores: ArrayLike<number>, n: number, k: number): Int32Array {
  const idx = Int32Array.from({ length: n }, (_, i) => i);
  idx.sort((a, b) => (scores[b] - scores[a]) || (a - b));
  return idx.slice(0, Math.min(k, n));
}
