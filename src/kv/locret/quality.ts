// How well retaining-head scores rank the labelled tokens, per layer and KV head of each example:
//   - top-10% recall: of the 10% tokens with the highest labels, the share that are also among the
//     10% highest scores (the "acc" Locret's train.py prints; chance is about 0.1);
//   - label-mass recall: the summed labels of the 10% top-scored tokens over the summed labels of the
//     10% top-labelled ones (1 = the kept tokens carry as much of the later queries' attention as the
//     best choice could). Most labels are tiny, so the two measures above mostly rank noise; this
//     one weighs the tokens the queries do attend to;
//   - Spearman's rank correlation of scores and labels (ties get their mean rank).
// Both are averaged over examples, layers and KV heads.
import type { LocretExample } from './labels.js';
import { retainingForward, type RetainingHeads } from './retaining-heads.js';

export const TOP_FRACTION = 0.1;

interface Measures { topRecall: number; massRecall: number; spearman: number }

export interface RankingQuality extends Measures {
  /** The same per layer. */
  perLayer: Measures[];
}

/** Indices of the k largest values of column h of a token-major [n][stride] array (ties: lower index first). */
function topK(v: ArrayLike<number>, n: number, stride: number, h: number, k: number): Set<number> {
  const idx = Array.from({ length: n }, (_, i) => i);
  idx.sort((a, b) => v[b * stride + h] - v[a * stride + h] || a - b);
  return new Set(idx.slice(0, k));
}

function ranks(v: ArrayLike<number>, n: number, stride: number, h: number): Float64Array {
  const idx = Array.from({ length: n }, (_, i) => i).sort((a, b) => v[a * stride + h] - v[b * stride + h]);
  const out = new Float64Array(n);
  for (let i = 0; i < n;) {
    let j = i;
    while (j + 1 < n && v[idx[j + 1] * stride + h] === v[idx[i] * stride + h]) j++;
    for (let t = i; t <= j; t++) out[idx[t]] = (i + j) / 2;
    i = j + 1;
  }
  return out;
}

/** Spearman's ρ of columns h of a and b; 0 when either is constant. */
export function spearman(a: ArrayLike<number>, b: ArrayLike<number>, n: number, stride: number, h: number): number {
  const ra = ranks(a, n, stride, h), rb = ranks(b, n, stride, h);
  const mean = (n - 1) / 2;
  let sab = 0, saa = 0, sbb = 0;
  for (let i = 0; i < n; i++) { const x = ra[i] - mean, y = rb[i] - mean; sab += x * y; saa += x * x; sbb += y * y; }
  return saa > 0 && sbb > 0 ? sab / Math.sqrt(saa * sbb) : 0;
}

/** Share of the top-k labels found among the top-k scores of column h. */
export function topRecall(scores: ArrayLike<number>, labels: ArrayLike<number>, n: number, stride: number, h: number, k: number): number {
  const want = topK(labels, n, stride, h, k);
  let hit = 0;
  for (const i of topK(scores, n, stride, h, k)) if (want.has(i)) hit++;
  return hit / k;
}

/** Summed labels of the top-k scored tokens over the summed labels of the top-k labelled tokens (column h). */
export function massRecall(scores: ArrayLike<number>, labels: ArrayLike<number>, n: number, stride: number, h: number, k: number): number {
  let got = 0, best = 0;
  for (const i of topK(scores, n, stride, h, k)) got += labels[i * stride + h];
  for (const i of topK(labels, n, stride, h, k)) best += labels[i * stride + h];
  return best > 0 ? got / best : 1;
}

/** Ranking quality of any scorer: scores(ex, layer) gives [tokens][kvHeads] for that layer. */
export function rankingQualityOf(examples: LocretExample[], scores: (ex: LocretExample, layer: number) => ArrayLike<number>): RankingQuality {
  if (examples.length === 0) throw new Error('ranking quality needs at least one example');
  const layers = examples[0].layers.length;
  const perLayer: Measures[] = Array.from({ length: layers }, () => ({ topRecall: 0, massRecall: 0, spearman: 0 }));
  for (const ex of examples) {
    const n = ex.tokens, k = Math.max(1, Math.ceil(TOP_FRACTION * n));
    ex.layers.forEach((layer, l) => {
      const K = layer.labels.length / n, s = scores(ex, l);
      for (let h = 0; h < K; h++) {
        perLayer[l].topRecall += topRecall(s, layer.labels, n, K, h, k) / (K * examples.length);
        perLayer[l].massRecall += massRecall(s, layer.labels, n, K, h, k) / (K * examples.length);
        perLayer[l].spearman += spearman(s, layer.labels, n, K, h) / (K * examples.length);
      }
    });
  }
  const round = (x: number) => Math.round(x * 1e4) / 1e4;
  const rounded = (p: Measures): Measures => ({ topRecall: round(p.topRecall), massRecall: round(p.massRecall), spearman: round(p.spearman) });
  const mean = (f: (p: Measures) => number) => perLayer.reduce((a, p) => a + f(p), 0) / layers;
  return { ...rounded({ topRecall: mean((p) => p.topRecall), massRecall: mean((p) => p.massRecall), spearman: mean((p) => p.spearman) }), perLayer: perLayer.map(rounded) };
}

export function rankingQuality(heads: RetainingHeads, examples: LocretExample[]): RankingQuality {
  return rankingQualityOf(examples, (ex, l) => retainingForward(heads.layers[l], ex.layers[l].x, ex.tokens).scores);
}

/** A baseline scorer: later tokens score higher, the same for every KV head. */
export function recencyScores(tokens: number, kvHeads: number): Float32Array {
  const out = new Float32Array(tokens * kvHeads);
  for (let t = 0; t < tokens; t++) out.fill(t, t * kvHeads, (t + 1) * kvHeads);
  return out;
}
