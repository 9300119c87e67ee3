// Training-free head scores, per (layer, KV head) with GQA groups reduced by max:
//  - RazorAttention: on a random token segment repeated several times, echo = mean(A ⊙ E) with
//    E[i][j] = 1 when j < i holds the same token as i, and induction = mean(A ⊙ I) with I[i][j] = 1
//    when token j−1 equals token i (j ≤ i); means over the whole T×T matrix, causal attention.
//  - Retrieval score (Wu et al.): while the model answers a needle-in-a-haystack prompt correctly,
//    a head scores 1/|answer| per generated token whose most-attended position lies in the needle
//    and holds that same token; mean over the successful runs.
import { DuetError } from '../errors.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { taskPrompt, tokenCounter } from '../eval/evaluate.js';
import type { FillerStyle } from '../tasks/filler.js';
import { Random } from '../tasks/random.js';
import type { TrainModel } from '../train/model.js';
import { exactMatch } from '../eval/score.js';
import type { HeadScorer } from './scorer.js';

type Grid = number[][];

function reduceGroups(perHead: Float64Array, layers: number, heads: number, kvHeads: number): Grid {
  const group = heads / kvHeads;
  return Array.from({ length: layers }, (_, l) => Array.from({ length: kvHeads }, (_, g) => {
    let m = -Infinity;
    for (let k = 0; k < group; k++) m = Math.max(m, perHead[l * heads + g * group + k]);
    return m;
  }));
}

export interface RazorScores { echo: Grid; induction: Grid }

/**
 * Echo and induction scores of each head from its causal attention matrix P ([heads][T][T], row i
 * the query at position i) over the token sequence `ids`.
 */
export function razorHeadScores(P: ArrayLike<number>, heads: number, ids: ArrayLike<number>): { echo: Float64Array; induction: Float64Array } {
  const T = ids.length;
  const echo = new Float64Array(heads), induction = new Float64Array(heads);
  for (let h = 0; h < heads; h++) {
    let e = 0, ind = 0;
    for (let i = 0; i < T; i++) {
      const row = (h * T + i) * T;
      for (let j = 0; j <= i; j++) {
        if (j < i && ids[j] === ids[i]) e += P[row + j];
        if (j >= 1 && ids[j - 1] === ids[i]) ind += P[row + j];
      }
    }
    echo[h] = e / (T * T);
    induction[h] = ind / (T * T);
  }
  return { echo, induction };
}

/**
 * Retrieval-score hits of each head for one answered prompt: per generated token t+1 (t from
 * promptLen − 1), 1/|answer| when the position the head attends most (ties: the first; position 0,
 * the attention sink, never counts) lies in the needle [n0, n1) and holds that token.
 */
export function retrievalHits(P: ArrayLike<number>, heads: number, ids: ArrayLike<number>, promptLen: number, needle: [number, number]): Float64Array {
  const T = ids.length, answer = T - promptLen;
  const out = new Float64Array(heads);
  for (let h = 0; h < heads; h++) {
    let hits = 0;
    for (let t = promptLen - 1; t < T - 1; t++) {
      const row = (h * T + t) * T;
      let arg = 0;
      for (let j = 1; j <= t; j++) if (P[row + j] > P[row + arg]) arg = j;
      if (arg >= needle[0] && arg < needle[1] && ids[arg] === ids[t + 1]) hits++;
    }
    out[h] = hits / Math.max(1, answer);
  }
  return out;
}

export async function razorScores<T>(model: TrainModel<T>, o: { seed: number; segment: number; repeats: number; firstId: number; bos: number[] }): Promise<RazorScores> {
  const { layers, heads, kvHeads, vocab } = model.c;
  const r = new Random(o.seed);
  const seg = Array.from({ length: o.segment }, () => r.int(o.firstId, vocab));
  const ids = Int32Array.from([...o.bos, ...Array.from({ length: o.repeats }, () => seg).flat()]);
  const T = ids.length;
  if (T > model.c.maxRows) throw new RangeError(`razor: ${T} tokens exceed the buffers (${model.c.maxRows})`);
  model.forward(ids, Int32Array.from(ids, (_, i) => i), null);
  const echo = new Float64Array(layers * heads), induction = new Float64Array(layers * heads);
  for (let l = 0; l < layers; l++) {
    const P = await model.k.read(model.attentionProbs(l), heads * T * T);
    const one = razorHeadScores(P, heads, ids);
    echo.set(one.echo, l * heads);
    induction.set(one.induction, l * heads);
  }
  return { echo: reduceGroups(echo, layers, heads, kvHeads), induction: reduceGroups(induction, layers, heads, kvHeads) };
}

/** Razor's retrieval set (top echoRatio by echo ∪ top inductionRatio by induction) as gate-like values. */
export function razorAlphas(s: RazorScores, echoRatio: number, inductionRatio: number): { alphas: Grid; selected: number } {
  const flatE = s.echo.flat(), flatI = s.induction.flat();
  const top = (xs: number[], ratio: number) => {
    const k = Math.ceil(ratio * xs.length);
    return new Set([...xs.keys()].sort((a, b) => xs[b] - xs[a] || a - b).slice(0, k));
  };
  const chosen = new Set([...top(flatE, echoRatio), ...top(flatI, inductionRatio)]);
  const maxE = Math.max(...flatE) || 1, maxI = Math.max(...flatI) || 1;
  const kv = s.echo[0].length;
  // Values rank heads for --sparsity; the default threshold 0.5 gives exactly Razor's set.
  const alphas = s.echo.map((row, l) => row.map((e, g) => {
    const raw = Math.max(e / maxE, s.induction[l][g] / maxI);
    return chosen.has(l * kv + g) ? 0.5 + raw / 2 : raw / 2 * 0.999;
  }));
  return { alphas, selected: chosen.size };
}

/** Greedy continuation with the frozen model (full forward per token: fine for short answers). */
async function greedy<T>(model: TrainModel<T>, lm: Float32Array, prompt: number[], maxNew: number, stop: Set<number>): Promise<number[]> {
  const { hidden: d, vocab } = model.c;
  const ids = [...prompt];
  const out: number[] = [];
  for (let k = 0; k < maxNew; k++) {
    model.forward(Int32Array.from(ids), Int32Array.from(ids, (_, i) => i), null);
    const last = (await model.k.read(model.hidden, ids.length * d)).subarray((ids.length - 1) * d);
    let best = 0, bestV = -Infinity;
    for (let v = 0; v < vocab; v++) {
      let s = 0;
      for (let i = 0; i < d; i++) s += last[i] * lm[v * d + i];
      if (s > bestV) { bestV = s; best = v; }
    }
    if (stop.has(best)) break;
    out.push(best);
    ids.push(best);
  }
  return out;
}

export interface RetrievalScoreResult { scores: Grid; runs: number; successful: number }

export async function retrievalScores<T>(model: TrainModel<T>, tokenizer: TextTokenizer, o: {
  seed: number; samples: number; lengths: number[]; style: FillerStyle; stopIds: number[];
  onProgress?: (done: number, total: number) => void;
}): Promise<RetrievalScoreResult> {
  const { layers, heads, kvHeads, vocab, hidden } = model.c;
  const lm = await model.k.read(model.p.lmHead, vocab * hidden);
  const sum = new Float64Array(layers * heads);
  let runs = 0, successful = 0;
  const total = o.samples * o.lengths.length;
  const stop = new Set(o.stopIds);
  const counter = tokenCounter(tokenizer);
  const bos = tokenizer.encode('', { addSpecialTokens: true }).length;
  for (const length of o.lengths) {
    for (let s = 0; s < o.samples; s++) {
      const r = new Random(o.seed * 7919 + length * 31 + s);
      const { sample, ids: prompt } = taskPrompt(tokenizer, { kind: 'passkey', length, depth: 0.05 + 0.9 * r.next(), seed: r.int(0, 2 ** 31), style: o.style }, counter);
      const answer = await greedy(model, lm, prompt, sample.maxNewTokens, stop);
      runs++;
      o.onProgress?.(runs, total);
      if (!exactMatch(tokenizer.decode(answer), sample.answers[0])) continue;
      successful++;
      // Token span of the needle: tokens of the prompt's prefix before / through the needle.
      const n0 = bos + counter(sample.prompt.slice(0, sample.needle[0])), n1 = bos + counter(sample.prompt.slice(0, sample.needle[1]));
      const ids = Int32Array.from([...prompt, ...answer]);
      const T = ids.length;
      model.forward(ids, Int32Array.from(ids, (_, i) => i), null);
      for (let l = 0; l < layers; l++) {
        const P = await model.k.read(model.attentionProbs(l), heads * T * T);
        const hits = retrievalHits(P, heads, ids, prompt.length, [n0, n1]);
        for (let h = 0; h < heads; h++) sum[l * heads + h] += hits[h];
      }
    }
  }
  if (successful === 0) throw new DuetError('lengths', `are too long for this model: retrieval-score: it answered none of ${runs} passkey prompts correctly, so no head can be scored`);
  for (let i = 0; i < sum.length; i++) sum[i] /= successful;
  return { scores: reduceGroups(sum, layers, heads, kvHeads), runs, successful };
}

/**
 * ZigzagAttention's layer constraint: every layer all-retrieval or all-streaming. Layers are ranked
 * by their mean score; the lowest round(sparsity · layers) become streaming.
 */
export function zigzag(scores: Grid, sparsity: number): { alphas: Grid; streamingLayers: number[] } {
  const means = scores.map((row) => row.reduce((a, b) => a + b, 0) / row.length);
  const k = Math.round(sparsity * scores.length);
  const order = [...means.keys()].sort((a, b) => means[a] - means[b] || a - b);
  const streaming = new Set(order.slice(0, k));
  return { alphas: scores.map((row, l) => row.map(() => (streaming.has(l) ? 0 : 1))), streamingLayers: [...streaming].sort((a, b) => a - b) };
}

/** RazorAttention as a head scorer: the echo ∪ induction set as gate-like values (razorAlphas). */
export const razorScorer: HeadScorer = {
  name: 'razor',
  async score({ model, tokenizer, settings: c }) {
    const segment = Math.max(16, Math.floor(c.lengths[0] / 4));
    const bos = tokenizer.encode('', { addSpecialTokens: true });
    const scores = await razorScores(model, { seed: c.seed, segment, repeats: 4, firstId: 2, bos });
    const a = razorAlphas(scores, c.echoRatio, c.inductionRatio);
    return {
      scores: a.alphas,
      options: { echo_ratio: c.echoRatio, induction_ratio: c.inductionRatio },
      data: `random segment of ${segment} tokens repeated 4 times`,
      extra: { echo: scores.echo, induction: scores.induction, selected: a.selected },
    };
  },
};

/** The retrieval score (Wu et al.) as a head scorer, scaled so the best head has 1. */
export const retrievalScorer: HeadScorer = {
  name: 'retrieval-score',
  async score({ model, tokenizer, style, eosTokenIds, settings: c, onProgress }) {
    const r = await retrievalScores(model, tokenizer, {
      seed: c.seed, samples: c.samples, lengths: c.lengths, style, stopIds: eosTokenIds, onProgress: (done, total) => onProgress?.(done, total),
    });
    const max = Math.max(...r.scores.flat()) || 1;
    return {
      scores: r.scores.map((row) => row.map((s) => s / max)),
      options: { samples: c.samples },
      data: `${r.runs} passkey prompts at lengths ${c.lengths.join(', ')}, ${r.successful} answered correctly`,
      extra: { retrieval_scores: r.scores, runs: r.runs, successful: r.successful },
    };
  },
};
