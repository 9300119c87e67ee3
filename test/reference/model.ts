// A plain float64 Llama forward over a whole sequence (no cache), with an optional DuoAttention
// mask per KV head: streaming heads see j ≤ i with j < sink or j > i − recent; and with the model's
// sliding_window W every head sees only j > i − W. Used as the oracle
// for the engine on every device and placement. With a DHA layout (src/dha/config.ts) layer l has its
// own key and value head counts (k_proj/v_proj rows) and query head h reads key head query_to_key[h]
// and value head query_to_value[h]; masks mark query heads there, and a query head streams iff every
// query head reading its key head is marked streaming (docs/dha.md).
import type { DhaConfig } from '../../src/dha/config.ts';
import type { ModelConfig } from '../../src/model/config.ts';
import { ropeInvFreq } from '../../src/model/config.ts';
import { matrixF32 as f, type ModelWeights } from '../../src/model/weights.ts';
import * as k from './kernels.ts';
import { retainingForward, type RetainingHeads } from '../../src/kv/locret/retaining-heads.ts';

export interface ReferenceMask {
  /** true = retrieval per layer per KV head. */
  kinds: boolean[][];
  sink: number;
  recent: number;
  /** Streaming heads also attend RazorAttention's compensation token (kernels.compensatedStreamingAttention). */
  compensation?: boolean;
  /**
   * A KV method per (layer, KV head) — full, streaming or locret — instead of kinds. Locret heads
   * (with `locret`) see, from a query of chunk c, the positions kept after the chunks before c plus
   * chunk c up to the query; each token is scored once, in float64, by its layer's retaining head from
   * the whole layer's pre-RoPE q, k, v; after each chunk a head keeps all candidates when they fit the
   * budget, else the `stabilizers` latest and the best-scored others (equal scores: the earlier position).
   */
  methods?: string[][];
  locret?: { budget: number; stabilizers: number; heads: RetainingHeads; chunks: number[] };
}

/** Which positions a locret head sees from each query: kept-before-chunk ∪ [chunk start, i]. */
function locretVisible(scores: ArrayLike<number>, stride: number, kvh: number, o: NonNullable<ReferenceMask['locret']>, T: number): (i: number, j: number) => boolean {
  const chunkOf = new Int32Array(T), start: number[] = [], keptBefore: Set<number>[] = [];
  let kept: number[] = [], at = 0;
  o.chunks.forEach((n, c) => {
    start.push(at); keptBefore.push(new Set(kept));
    for (let i = at; i < Math.min(T, at + n); i++) chunkOf[i] = c;
    const all = [...kept];
    for (let i = at; i < at + n; i++) all.push(i);
    if (all.length > o.budget) {
      const latest = all.slice(all.length - o.stabilizers);
      const best = all.slice(0, all.length - o.stabilizers).sort((a, b) => scores[b * stride + kvh] - scores[a * stride + kvh] || a - b).slice(0, o.budget - o.stabilizers);
      kept = [...best, ...latest].sort((a, b) => a - b);
    } else kept = all;
    at += n;
  });
  if (at < T) throw new Error(`reference: chunks cover ${at} of ${T} tokens`);
  return (i, j) => j <= i && (j >= start[chunkOf[i]] || keptBefore[chunkOf[i]].has(j));
}

/** Logits for every position: [ids.length][vocab]. */
export function referenceLogits(config: ModelConfig, w: ModelWeights, ids: number[], mask?: ReferenceMask, dha?: DhaConfig): Float64Array[] {
  if (dha && config.slidingWindow !== null) throw new Error('the reference has no sliding window for DHA layouts');
  const T = ids.length, H = config.hiddenSize, D = config.headDim;
  const nh = config.numHeads, nkv = config.numKvHeads, inter = config.intermediateSize;
  const invFreq = ropeInvFreq(config);
  const positions = ids.map((_, i) => i);
  let x = new Float64Array(T * H);
  const embed = f(w.embed);
  ids.forEach((id, t) => { for (let i = 0; i < H; i++) x[t * H + i] = embed[id * H + i]; });
  w.layers.forEach((lw, l) => {
    const xn = k.rmsnorm(x, lw.inputNorm, T, H, config.rmsNormEps);
    const q = k.rope(k.matmul(xn, f(lw.wq), lw.bq, T, H, nh * D), T, nh, D, positions, invFreq);
    const attn = new Float64Array(T * nh * D);
    const d = dha?.layers[l];
    // A DHA layer that kept every head (identity maps) is a plain multi-head layer, where masks apply.
    const decoupled = d !== undefined && !(d.keyHeads === nh && d.valueHeads === nh && d.queryToKey.every((x, h) => x === h) && d.queryToValue.every((x, h) => x === h));
    if (decoupled && mask && (mask.compensation || mask.methods)) throw new Error(`the reference has only full and streaming heads in DHA layer ${l} (decoupled heads)`);
    if (dha && decoupled) {
      // Decoupled heads: every query head attends its own (key head, value head) pair. The mask marks
      // query heads; one streams (sink + recent) iff every query head reading its key head is marked.
      const { keyHeads: nk, valueHeads: nv, queryToKey, queryToValue } = dha.layers[l];
      const marked = (h: number) => mask !== undefined && !mask.kinds[l][h];
      const streams = (h: number) => queryToKey.every((kh, g) => kh !== queryToKey[h] || marked(g));
      const kk = k.rope(k.matmul(xn, f(lw.wk), lw.bk, T, H, nk * D), T, nk, D, positions, invFreq);
      const v = k.matmul(xn, f(lw.wv), lw.bv, T, H, nv * D);
      for (let h = 0; h < nh; h++) {
        const kh = queryToKey[h], vh = queryToValue[h];
        const qSub = new Float64Array(T * D);
        for (let t = 0; t < T; t++) qSub.set(q.subarray((t * nh + h) * D, (t * nh + h + 1) * D), t * D);
        const o = k.maskedAttention(qSub, T, 1, 1, D, 0, 1 / Math.sqrt(D),
          (_h, j) => kk.subarray((j * nk + kh) * D, (j * nk + kh + 1) * D), (_h, j) => v.subarray((j * nv + vh) * D, (j * nv + vh + 1) * D),
          streams(h) ? k.streamingVisible(mask!.sink, mask!.recent) : k.causalVisible);
        for (let t = 0; t < T; t++) attn.set(o.subarray(t * D, (t + 1) * D), (t * nh + h) * D);
      }
    } else {
      const k0 = k.matmul(xn, f(lw.wk), lw.bk, T, H, nkv * D);
      const kk = k.rope(k0, T, nkv, D, positions, invFreq);
      const v = k.matmul(xn, f(lw.wv), lw.bv, T, H, nkv * D);
      const group = nh / nkv;
      const methods = mask?.methods?.[l];
      let scores: ArrayLike<number> | null = null;
      if (methods?.includes('locret')) {
        // The retaining head's input per token: pre-RoPE q, pre-RoPE k, v (float64 throughout).
        const q0 = k.matmul(xn, f(lw.wq), lw.bq, T, H, nh * D), head = mask!.locret!.heads.layers[l];
        const x = new Float64Array(T * head.inDim);
        for (let t = 0; t < T; t++) {
          x.set(q0.subarray(t * nh * D, (t + 1) * nh * D), t * head.inDim);
          x.set(k0.subarray(t * nkv * D, (t + 1) * nkv * D), t * head.inDim + nh * D);
          x.set(v.subarray(t * nkv * D, (t + 1) * nkv * D), t * head.inDim + (nh + nkv) * D);
        }
        scores = retainingForward({ ...head, fc1: Float64Array.from(head.fc1), fc2: Float64Array.from(head.fc2) }, x, T).scores;
      }
      for (let kvh = 0; kvh < nkv; kvh++) {
        const method = methods ? methods[kvh] : mask && !mask.kinds[l][kvh] ? 'streaming' : 'full';
        const streaming = method === 'streaming';
        const base = method === 'locret' ? locretVisible(scores!, nkv, kvh, mask!.locret!, T)
          : streaming ? k.streamingVisible(mask!.sink, mask!.recent) : k.causalVisible;
        // Hugging Face's sliding window (Mistral): kv_idx > q_idx − sliding_window, on top of any mask.
        const W = config.slidingWindow;
        const visible = W === null ? base : (i: number, j: number) => base(i, j) && j > i - W;
        // Attention for this KV head's query heads only.
        const qHeads = Array.from({ length: group }, (_, g) => kvh * group + g);
        const qSub = new Float64Array(T * group * D);
        for (let t = 0; t < T; t++) qHeads.forEach((h, g) => qSub.set(q.subarray((t * nh + h) * D, (t * nh + h + 1) * D), (t * group + g) * D));
        const keyAt = (_h: number, j: number) => kk.subarray((j * nkv + kvh) * D, (j * nkv + kvh + 1) * D);
        const valueAt = (_h: number, j: number) => v.subarray((j * nkv + kvh) * D, (j * nkv + kvh + 1) * D);
        const o = streaming && mask!.compensation
          ? k.compensatedStreamingAttention(qSub, T, group, 1, D, 0, 1 / Math.sqrt(D), keyAt, valueAt, mask!.sink, mask!.recent)
          : k.maskedAttention(qSub, T, group, 1, D, 0, 1 / Math.sqrt(D), keyAt, valueAt, visible);
        for (let t = 0; t < T; t++) qHeads.forEach((h, g) => attn.set(o.subarray((t * group + g) * D, (t * group + g + 1) * D), (t * nh + h) * D));
      }
    }
    const proj = k.matmul(attn, f(lw.wo), null, T, nh * D, H);
    x = x.map((val, i) => val + proj[i]);
    const xn2 = k.rmsnorm(x, lw.postNorm, T, H, config.rmsNormEps);
    const act = k.siluMul(k.matmul(xn2, f(lw.wGate), null, T, H, inter), k.matmul(xn2, f(lw.wUp), null, T, H, inter), T * inter);
    const down = k.matmul(act, f(lw.wDown), null, T, inter, H);
    x = x.map((val, i) => val + down[i]);
  });
  const xf = k.rmsnorm(x, w.finalNorm, T, H, config.rmsNormEps);
  const logits = k.matmul(xf, f(w.lmHead), null, T, H, config.vocabSize);
  return ids.map((_, t) => logits.slice(t * config.vocabSize, (t + 1) * config.vocabSize));
}
