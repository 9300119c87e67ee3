// DHA's per-layer allocation of key and value heads under a KV budget: which heads of each layer
// and side are grouped (each group becomes one head). Adaptive, not uniform: one greedy pass over
// all layers and both sides merges, each time, the two groups of one (layer, side) whose merge
// costs least (mergeCost: the output error of replacing their heads by the mean, measured on task
// data), until Σ_l (n_K(l) + n_V(l)) meets the budget exactly. A layer side whose heads are alike
// is merged a lot, one whose heads differ is kept; K and V are allocated independently. Groups need
// not be contiguous or equal in size.
import type { DhaConfig } from './config.js';
import { meanHeadEnergy, mergeCost, type LayerGram } from './similarity.js';

/** Per layer, the groups of original heads that become one key head / one value head each (ascending, ordered by first member). */
export interface HeadGroups { key: number[][]; value: number[][] }

export type Side = 'key' | 'value';
export const SIDES: readonly Side[] = ['key', 'value'];

/** One merge of the greedy allocation, in the order taken. */
export interface Merge { layer: number; side: Side; heads: number[]; cost: number }

/**
 * The number of K + V heads a budget fraction keeps in a model of `layers` × `heads`: budget·2·L·H,
 * which must be a whole number from 2·L (one key and one value head per layer) to 2·L·H − 1.
 */
export function budgetHeads(budget: number, layers: number, heads: number, field = 'budget'): number {
  const total = 2 * layers * heads;
  if (!(typeof budget === 'number' && budget > 0 && budget < 1)) throw new Error(`${field} must be a fraction of the KV heads kept, above 0 and below 1 (got ${budget})`);
  const kept = budget * total;
  const rounded = Math.round(kept);
  if (Math.abs(kept - rounded) > 1e-9) {
    throw new Error(`${field} ${budget} keeps ${kept.toFixed(3)} of the model's ${total} K+V heads (${layers} layers × ${heads} heads × 2): it must be a multiple of 1/${total} (e.g. ${Math.floor(kept) / total} or ${Math.ceil(kept) / total})`);
  }
  if (rounded < 2 * layers) throw new Error(`${field} ${budget} keeps ${rounded} K+V heads, fewer than one key and one value head per layer (${2 * layers}); the smallest budget is ${(2 * layers) / total}`);
  return rounded;
}

const sortGroups = (groups: number[][]) => groups.map((g) => [...g].sort((a, b) => a - b)).sort((a, b) => a[0] - b[0]);

/**
 * Greedy adaptive allocation from the per-layer Gram matrices (similarity.ts) of a model with
 * `heads` heads per layer, keeping budgetHeads(budget) K+V heads. Deterministic: ties go to the
 * lower layer, keys before values, then the lower head indices.
 */
export function allocateHeads(grams: LayerGram[], heads: number, budget: number): { groups: HeadGroups[]; merges: Merge[] } {
  const target = budgetHeads(budget, grams.length, heads);
  const state = grams.map((g) => ({
    key: { groups: Array.from({ length: heads }, (_, h) => [h]), gram: g.key, energy: meanHeadEnergy(g.key, heads) },
    value: { groups: Array.from({ length: heads }, (_, h) => [h]), gram: g.value, energy: meanHeadEnergy(g.value, heads) },
  }));
  for (const s of state) for (const side of SIDES) {
    if (!(s[side].energy > 0)) throw new Error(`head similarity: a layer's ${side} heads produce no output on the data (all-zero weights?)`);
  }
  const merges: Merge[] = [];
  let kept = 2 * grams.length * heads;
  while (kept > target) {
    let best: { layer: number; side: Side; a: number; b: number; delta: number; cost: number } | null = null;
    state.forEach((s, layer) => {
      for (const side of SIDES) {
        const { groups, gram, energy } = s[side];
        for (let a = 0; a < groups.length; a++) {
          for (let b = a + 1; b < groups.length; b++) {
            const joined = [...groups[a], ...groups[b]];
            const cost = mergeCost(gram, heads, joined, energy);
            const delta = cost - mergeCost(gram, heads, groups[a], energy) - mergeCost(gram, heads, groups[b], energy);
            if (!best || delta < best.delta) best = { layer, side, a, b, delta, cost };
          }
        }
      }
    });
    const m = best!;
    const groups = state[m.layer][m.side].groups;
    const joined = [...groups[m.a], ...groups[m.b]].sort((x, y) => x - y);
    state[m.layer][m.side].groups = sortGroups([...groups.filter((_, i) => i !== m.a && i !== m.b), joined]);
    merges.push({ layer: m.layer, side: m.side, heads: joined, cost: m.cost });
    kept--;
  }
  return { groups: state.map((s) => ({ key: s.key.groups, value: s.value.groups })), merges };
}

/** The `duet_dha` layout of grouped heads: query head h reads the key (value) head of the group holding h. */
export function groupsLayout(groups: HeadGroups[], heads: number): DhaConfig {
  const map = (gs: number[][]) => {
    const m = new Array<number>(heads).fill(-1);
    gs.forEach((g, i) => { for (const h of g) m[h] = i; });
    if (m.some((x) => x < 0) || gs.reduce((a, g) => a + g.length, 0) !== heads) throw new Error(`head groups ${JSON.stringify(gs)} are not a partition of the ${heads} heads`);
    return m;
  };
  return { layers: groups.map((g) => ({ keyHeads: g.key.length, valueHeads: g.value.length, queryToKey: map(g.key), queryToValue: map(g.value) })) };
}

/** "0+1 2 3"-style text of a side's groups (for the model card and progress). */
export function groupsText(groups: number[][]): string {
  return groups.map((g) => g.join('+')).join(' ');
}
