// MagicPIG's LSH parameters and their limits, shared by the reference, the WASM and the WGSL paths.
//   K: bits per SimHash table (a table has 2^K buckets). Codes are stored as u16, so K ≤ 16.
//   L: number of tables. A key is sampled when it collides with the query in ≥ 2 tables, so L ≥ 2.

export const MAX_K = 16;
export const MAX_L = 1024;
/** MagicPIG's defaults (examples/generation.py): K = 10, L = 150. */
export const DEFAULT_K = 10;
export const DEFAULT_L = 150;
/** Static tokens kept exact on the main device (MagicPIG's RULER/LongBench setting). */
export const DEFAULT_SINKS = 4;
export const DEFAULT_LOCAL = 64;

export interface LshParams {
  /** Bits per table, 1..16. */
  K: number;
  /** Tables, 2..1024. */
  L: number;
}

/** Throws a RangeError naming K or L when either is out of range. */
export function checkLshParams(p: LshParams): void {
  if (!(Number.isInteger(p.K) && p.K >= 1 && p.K <= MAX_K)) {
    throw new RangeError(`MagicPIG K (bits per hash table) must be an integer in 1..${MAX_K} (got ${p.K})`);
  }
  if (!(Number.isInteger(p.L) && p.L >= 2 && p.L <= MAX_L)) {
    throw new RangeError(`MagicPIG L (hash tables) must be an integer in 2..${MAX_L} (got ${p.L}); a key is sampled when it collides in at least 2`);
  }
}

/** u16 codes per stored row: L rounded up to a multiple of 8 (one v128 compares 8 tables). */
export function codeStride(L: number): number {
  return Math.ceil(L / 8) * 8;
}
