// The GQA baseline (Ainslie et al. 2023): every layer keeps the same number of key and value heads,
// each the mean of a contiguous group of the original heads (heads 0…g−1, g…2g−1, …), then the
// same continued training as DHA. The budget must be expressible that way: budget·heads a whole
// number that divides heads.
import { budgetHeads, type HeadGroups } from './allocate.js';

/** Contiguous equal groups for a uniform GQA conversion at `budget` (kept fraction of the K+V heads). */
export function meanPoolGroups(layers: number, heads: number, budget: number): HeadGroups[] {
  budgetHeads(budget, layers, heads);
  const perLayer = budget * heads;
  const kv = Math.round(perLayer);
  if (Math.abs(perLayer - kv) > 1e-9 || heads % kv !== 0) {
    const valid = Array.from({ length: heads - 1 }, (_, i) => i + 1).filter((n) => heads % n === 0).map((n) => n / heads);
    throw new Error(`budget ${budget} is not a uniform GQA layout: it keeps ${perLayer} key and value heads per layer of ${heads}, GQA needs a whole number that divides ${heads} (budgets ${valid.join(', ')}); only DHA's per-layer allocation (--method dha) can express it`);
  }
  const size = heads / kv;
  const groups = Array.from({ length: kv }, (_, g) => Array.from({ length: size }, (_, i) => g * size + i));
  return Array.from({ length: layers }, () => ({ key: groups.map((g) => [...g]), value: groups.map((g) => [...g]) }));
}

/**
 * Mean of each group's heads: w holds heads of `block` floats each (head_dim rows × hidden), the
 * result one head per group in group order.
 */
export function poolHeads(w: Float32Array, groups: number[][], block: number): Float32Array {
  const out = new Float32Array(groups.length * block);
  groups.forEach((g, i) => {
    const dst = out.subarray(i * block, (i + 1) * block);
    const acc = new Float64Array(block);
    for (const h of g) for (let e = 0; e < block; e++) acc[e] += w[h * block + e];
    for (let e = 0; e < block; e++) dst[e] = acc[e] / g.length;
  });
  return out;
}
