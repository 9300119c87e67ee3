// A plain float64 reference of MagicPIG's attention estimator (Chen et al., ICLR 2025) for one
// query against one KV head's offloaded keys. The WASM (cpu.ts, magicpig.as.ts) and WGSL (simhash.wgsl,
// through kernels.ts) kernels are tested against it.
//
// SimHash. `planes` holds K·L random hyperplanes as rows ([L·K][d]; MagicPIG's W is its transpose,
// d × K·L). Table ℓ's code of x is Σ_{b<K} [x·planes[ℓK+b] > 0]·2^b. MagicPIG L2-normalises queries
// before hashing; a positive scale never changes a sign, so neither this nor the kernels do.
// Keys are hashed after centering, k − k̄ with k̄ the mean of the offloaded keys: it shifts every
// logit by the same q·k̄ (softmax unchanged) and spreads the keys over the buckets.
//
// Sampling. Key j is sampled iff its code equals the query's in at least 2 of the L tables. With
// θ the angle between q and k_j − k̄, one table collides with probability u = (1 − θ/π)^K, so
// the key is sampled with w = P(Binomial(L, u) ≥ 2) = 1 − (1−u)^L − L·u·(1−u)^{L−1}.
//
// Estimate. Sampled keys get the corrected logit s̃_j = q·k_j/√d − log(w_j + 1e−4) (importance
// weights 1/w, with MagicPIG's floor); one softmax over the static tokens (exact logits) and the
// sampled ones (corrected) gives the self-normalised importance-sampling estimate of attention.
// The logits use the original keys (q·k_j), so static and sampled parts share one logit scale.
//
// Partials. A partial softmax over a set S of logits s_j is {max m, sumExp l = Σ exp(s_j − m),
// o = Σ exp(s_j − m)·v_j} (o unnormalised; the output is o / l). The empty set is {−∞, 0, 0}.
// Two partials merge exactly: m = max(m₁, m₂), aᵢ = exp(mᵢ − m), l = a₁l₁ + a₂l₂, o = a₁o₁ + a₂o₂.
import { checkLshParams, codeStride, type LshParams } from './params.js';
import { attendTokens, RefHistory, type KvReference } from '../reference.js';
import { kernelModule } from '../../cpu/wasm.js';
import { simhashPlanes, type MagicPigSettings } from './settings.js';
import { topkCount } from './topk.js';

type Vec = ArrayLike<number>;

export interface PartialSoftmax {
  max: number;
  sumExp: number;
  /** Σ exp(s_j − max)·v_j (unnormalised), d values. */
  o: Float64Array;
}

/** SimHash codes [n][L] of n rows of x (row stride `stride`, default d), centered by `center` when given. */
export function simhashCodes(x: Vec, n: number, d: number, planes: Vec, p: LshParams, center?: Vec, stride = d): Uint16Array {
  checkLshParams(p);
  const { K, L } = p;
  if (planes.length < K * L * d) throw new RangeError(`MagicPIG planes: need ${K * L * d} values (K·L·d), got ${planes.length}`);
  const codes = new Uint16Array(n * L);
  for (let r = 0; r < n; r++) {
    for (let t = 0; t < L; t++) {
      let code = 0;
      for (let b = 0; b < K; b++) {
        const c = (t * K + b) * d;
        let dot = 0;
        for (let i = 0; i < d; i++) dot += (x[r * stride + i] - (center ? center[i] : 0)) * planes[c + i];
        if (dot > 0) code |= 1 << b;
      }
      codes[r * L + t] = code;
    }
  }
  return codes;
}

/** Indices j < n whose codes ([n][L]) equal the query's (L) in at least 2 tables, ascending. */
export function sampledSet(qCodes: Vec, kCodes: Vec, n: number, L: number): number[] {
  const out: number[] = [];
  for (let j = 0; j < n; j++) {
    let hits = 0;
    for (let t = 0; t < L && hits < 2; t++) if (kCodes[j * L + t] === qCodes[t]) hits++;
    if (hits >= 2) out.push(j);
  }
  return out;
}

/** w = P(at least 2 of L tables collide) for cos θ between query and centered key. */
export function samplingProbability(cosTheta: number, p: LshParams): number {
  const c = Math.min(1, Math.max(-1, cosTheta));
  const u = (1 - Math.acos(c) / Math.PI) ** p.K;
  // 1 − (1−u)^{L−1}·(1 + (L−1)·u), with (1−u)^{L−1} = exp((L−1)·log1p(−u)).
  const a = Math.exp((p.L - 1) * Math.log1p(-u));
  return Math.max(0, 1 - a * (1 + (p.L - 1) * u));
}

/** log(w + 1e−4): what the corrected logit subtracts. */
export function logSamplingWeight(cosTheta: number, p: LshParams): number {
  return Math.log(samplingProbability(cosTheta, p) + 1e-4);
}

/** Partial softmax over the logits s[i] with values v[idx[i]] ([·][d]). */
export function partialSoftmax(s: Vec, idx: Vec, v: Vec, d: number): PartialSoftmax {
  let max = -Infinity;
  for (let i = 0; i < s.length; i++) max = Math.max(max, s[i]);
  const o = new Float64Array(d);
  let sumExp = 0;
  if (max === -Infinity) return { max, sumExp, o };
  for (let i = 0; i < s.length; i++) {
    const e = Math.exp(s[i] - max);
    sumExp += e;
    for (let c = 0; c < d; c++) o[c] += e * v[idx[i] * d + c];
  }
  return { max, sumExp, o };
}

/** The exact log-sum-exp merge of two partials over disjoint sets. */
export function mergePartials(a: PartialSoftmax, b: PartialSoftmax): PartialSoftmax {
  const max = Math.max(a.max, b.max);
  if (max === -Infinity) return { max, sumExp: 0, o: new Float64Array(a.o.length) };
  const ea = a.max === -Infinity ? 0 : Math.exp(a.max - max);
  const eb = b.max === -Infinity ? 0 : Math.exp(b.max - max);
  const o = new Float64Array(a.o.length);
  for (let c = 0; c < o.length; c++) o[c] = ea * a.o[c] + eb * b.o[c];
  return { max, sumExp: ea * a.sumExp + eb * b.sumExp, o };
}

/** The attention output o / l of a partial (zeros for the empty set). */
export function finishPartial(p: PartialSoftmax): Float64Array {
  return p.o.map((x) => (p.sumExp > 0 ? x / p.sumExp : 0));
}

function dot(a: Vec, ao: number, b: Vec, bo: number, d: number): number {
  let s = 0;
  for (let i = 0; i < d; i++) s += a[ao + i] * b[bo + i];
  return s;
}

/** Exact partial softmax of q against rows [0, n) of keys/values (logits q·k·scale). */
export function exactPartial(q: Vec, keys: Vec, values: Vec, n: number, d: number, scale: number): PartialSoftmax {
  const s: number[] = [];
  const idx: number[] = [];
  for (let j = 0; j < n; j++) { s.push(dot(q, 0, keys, j * d, d) * scale); idx.push(j); }
  return partialSoftmax(s, idx, values, d);
}

export interface SampledInputs {
  /** The query (d values, not normalised) and its codes (L). */
  q: Vec;
  qCodes: Vec;
  /** Offloaded keys and values ([n][d], original keys), their codes ([n][L]) and the key mean k̄ (d). */
  keys: Vec;
  values: Vec;
  kCodes: Vec;
  mean: Vec;
  n: number;
  d: number;
  scale: number;
  /** false: sampled keys keep their exact logits (attention restricted to the sampled set). */
  correction?: boolean;
}

/** MagicPIG's sampled part for one query: the sampled set, its corrected logits and their partial softmax. */
export function sampledPartial(inp: SampledInputs, p: LshParams): { sampled: number[]; logits: number[]; partial: PartialSoftmax } {
  checkLshParams(p);
  const { q, keys, mean, n, d } = inp;
  const sampled = sampledSet(inp.qCodes, inp.kCodes, n, p.L);
  const qNorm = Math.sqrt(dot(q, 0, q, 0, d));
  const qMean = dot(q, 0, mean, 0, d);
  const logits = sampled.map((j) => {
    const qk = dot(q, 0, keys, j * d, d);
    let s = qk * inp.scale;
    if (inp.correction ?? true) {
      let kc = 0;
      for (let i = 0; i < d; i++) kc += (keys[j * d + i] - mean[i]) ** 2;
      const den = qNorm * Math.sqrt(kc);
      s -= logSamplingWeight(den > 0 ? (qk - qMean) / den : 0, p);
    }
    return s;
  });
  return { sampled, logits, partial: partialSoftmax(logits, sampled, inp.values, d) };
}

/**
 * Exact TopK's set, plainly (src/kv/magicpig/topk.ts): k times, the highest score not yet taken,
 * the lowest index among equals. Every index when k ≥ n.
 */
export function topkSet(scores: ArrayLike<number>, n: number, k: number): number[] {
  const taken = new Array<boolean>(n).fill(false), out: number[] = [];
  for (let t = 0; t < Math.min(k, n); t++) {
    let best = -1;
    for (let j = 0; j < n; j++) if (!taken[j] && (best < 0 || scores[j] > scores[best])) best = j;
    taken[best] = true;
    out.push(best);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The magicpig KV method's float64 reference (src/kv/magicpig/method.ts), for the conformance
// harness: a chunk of several rows attends exactly over every position; a single row attends its
// static tokens (first `sinks`, the `local` positions before it, itself) exactly and the others,
// keys [sinks, pastLen − local), through sampledPartial above, merged with mergePartials. k̄ per KV
// head is the mean of the offloaded keys at the first single-row chunk that has any (as the cache
// stores it: f32), and every offloaded key is hashed centered by it. With topk, the single row
// attends its static tokens and topkSet's keys of the offloaded ones, exact logits, one softmax.

const kernels = await kernelModule(false);
const settingsOf = (o: Omit<MagicPigSettings, 'module' | 'seed'>, seed = 5): { magicpig: MagicPigSettings } => ({ magicpig: { ...o, seed, module: kernels } });

export const reference: KvReference = {
  variants: [
    { label: 'K 3, L 12, 2 sinks + 4 local', settings: settingsOf({ K: 3, L: 12, sinks: 2, local: 4 }) },
    { label: 'K 6, L 20, no sinks, local 1 (sparse)', settings: settingsOf({ K: 6, L: 20, sinks: 0, local: 1 }, 9) },
    { label: 'K 1, L 40, 3 sinks + 2 local (nearly every key)', settings: settingsOf({ K: 1, L: 40, sinks: 3, local: 2 }, 13) },
    { label: 'K 3, L 12, 2 sinks + 4 local, bucket tables', settings: settingsOf({ K: 3, L: 12, sinks: 2, local: 4, tables: true }) },
    { label: 'K 10, L 150, 4 sinks + 64 local (the defaults: all static here)', settings: settingsOf({ K: 10, L: 150, sinks: 4, local: 64 }) },
    { label: 'exact top-3 keys, 2 sinks + 3 local', settings: settingsOf({ K: 3, L: 12, sinks: 2, local: 3, topk: { keys: 3 } }) },
    { label: 'exact top-30 % keys, no sinks, local 1', settings: settingsOf({ K: 3, L: 12, sinks: 0, local: 1, topk: { fraction: 0.3 } }) },
  ],
  open(shape, settings) {
    const s = settings.magicpig!, { numKvHeads: H, group: G, headDim: D } = shape, scale = 1 / Math.sqrt(D);
    const planes = simhashPlanes(s, D, s.seed);
    const past = new RefHistory(shape);
    let means: Float64Array[] | null = null;
    return {
      attend(q, k, v, rows, pastLen) {
        const all = past.withChunk(k, v, rows, pastLen);
        if (rows > 1) {
          return attendTokens(q, rows, pastLen, shape, (i, h) => Array.from({ length: i + 1 }, (_, j) => ({ k: all.k[j][h], v: all.v[j][h], bias: 0 })));
        }
        const m = Math.max(0, pastLen - s.local - s.sinks);
        const statics: number[] = [];
        for (let j = 0; j < Math.min(s.sinks, pastLen + 1); j++) statics.push(j);
        for (let j = Math.max(s.sinks, pastLen - s.local); j <= pastLen; j++) statics.push(j);
        if (s.topk) {
          const count = topkCount(s.topk, m), out = new Float64Array(H * G * D);
          for (let h = 0; h < H; h++) {
            for (let g = 0; g < G; g++) {
              const qv = q.subarray((h * G + g) * D, (h * G + g + 1) * D);
              const scores = Array.from({ length: m }, (_, i) => dot(qv, 0, all.k[s.sinks + i][h], 0, D));
              const chosen = [...statics, ...topkSet(scores, m, count).map((i) => s.sinks + i)];
              const keys = new Float64Array(chosen.length * D), values = new Float64Array(chosen.length * D);
              chosen.forEach((j, i) => { keys.set(all.k[j][h], i * D); values.set(all.v[j][h], i * D); });
              out.set(finishPartial(exactPartial(qv, keys, values, chosen.length, D, scale)), (h * G + g) * D);
            }
          }
          return out;
        }
        if (m > 0 && !means) {
          means = Array.from({ length: H }, (_, h) => {
            const mean = new Float64Array(D);
            for (let r = 0; r < m; r++) for (let d = 0; d < D; d++) mean[d] += all.k[s.sinks + r][h][d];
            return mean.map((x) => Math.fround(x / m));
          });
        }
        const out = new Float64Array(H * G * D);
        for (let h = 0; h < H; h++) {
          const flat = (a: Float64Array[][]) => { const x = new Float64Array(m * D); for (let r = 0; r < m; r++) x.set(a[s.sinks + r][h], r * D); return x; };
          const keys = flat(all.k), values = flat(all.v);
          const kCodes = m > 0 ? simhashCodes(keys, m, D, planes, s, means![h]) : new Uint16Array(0);
          const sk = statics.map((j) => all.k[j][h]), sv = new Float64Array(statics.length * D);
          statics.forEach((j, i) => sv.set(all.v[j][h], i * D));
          const skFlat = new Float64Array(statics.length * D);
          sk.forEach((row, i) => skFlat.set(row, i * D));
          for (let g = 0; g < G; g++) {
            const qv = Float64Array.from(q.subarray((h * G + g) * D, (h * G + g + 1) * D));
            let part = exactPartial(qv, skFlat, sv, statics.length, D, scale);
            if (m > 0) {
              const qCodes = simhashCodes(qv, 1, D, planes, s);
              part = mergePartials(part, sampledPartial({ q: qv, qCodes, keys, values, kCodes, mean: means![h], n: m, d: D, scale }, s).partial);
            }
            out.set(finishPartial(part), (h * G + g) * D);
          }
        }
        return out;
      },
      append(k, v, rows, pastLen) { past.put(k, v, rows, pastLen); },
    };
  },
  bytes(shape, capacity, settings) {
    const s = settings.magicpig!, { numKvHeads: H, headDim: D } = shape, off = Math.max(0, capacity - s.sinks - s.local);
    // On the main device: K and V rings of the static tokens (sinks + local + 1 slots, fewer while the capacity is).
    const rings = 2 * 4 * H * Math.min(capacity, s.sinks + s.local + 1) * D;
    if (s.topk) return rings + 2 * 4 * H * capacity * D; // host: K and V only, nothing is hashed
    // Host: planes, K and V of every position, norms (f32) and codes (u16 × L rounded up to 8) of the offloaded rows, k̄;
    // with bucket tables an i32 per key and table, and 2^K + 1 bucket starts per table. Main device: the planes and k̄ again.
    const tables = s.tables ? 4 * H * s.L * off + 4 * H * s.L * ((1 << s.K) + 1) : 0;
    // The sampling correction tabulated over θ: 4096 cells of 2 f64.
    const host = 4 * s.K * s.L * D + 8 * 8192 + 2 * 4 * H * capacity * D + 4 * H * off + 2 * H * off * codeStride(s.L) + 4 * H * D + tables;
    return rings + host + 4 * s.K * s.L * D + 4 * H * D;
  },
};
