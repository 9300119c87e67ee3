// Plain float64 reference implementations of every Backend op (see src/backend/contract.ts).
// Written for clarity, not speed: each loop mirrors the definition in the contract.

export type Vec = Float64Array;

export function matmul(x: ArrayLike<number>, w: ArrayLike<number>, bias: ArrayLike<number> | null,
  rows: number, inDim: number, outDim: number): Vec {
  const out = new Float64Array(rows * outDim);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outDim; o++) {
      let s = bias ? bias[o] : 0;
      for (let i = 0; i < inDim; i++) s += x[r * inDim + i] * w[o * inDim + i];
      out[r * outDim + o] = s;
    }
  }
  return out;
}

export function rmsnorm(x: ArrayLike<number>, weight: ArrayLike<number>, rows: number, dim: number, eps: number): Vec {
  const out = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[r * dim + i] ** 2;
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) out[r * dim + i] = x[r * dim + i] * inv * weight[i];
  }
  return out;
}

export function rope(x: ArrayLike<number>, rows: number, numHeads: number, headDim: number,
  positions: ArrayLike<number>, invFreq: ArrayLike<number>): Vec {
  const out = Float64Array.from(x as ArrayLike<number>);
  const half = headDim / 2;
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < numHeads; h++) {
      const base = (r * numHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const theta = positions[r] * invFreq[i];
        const a = x[base + i], b = x[base + i + half];
        out[base + i] = a * Math.cos(theta) - b * Math.sin(theta);
        out[base + i + half] = b * Math.cos(theta) + a * Math.sin(theta);
      }
    }
  }
  return out;
}

export function siluMul(gate: ArrayLike<number>, up: ArrayLike<number>, n: number): Vec {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = (gate[i] / (1 + Math.exp(-gate[i]))) * up[i];
  return out;
}

/**
 * Attention of `rows` queries (positions pastLen + r) over keys given with their absolute positions.
 * keys/values: per KV head, a list of [position, vector]. `visible(i, j)` decides the mask.
 */
export function maskedAttention(q: ArrayLike<number>, rows: number, numHeads: number, numKvHeads: number,
  headDim: number, pastLen: number, scale: number,
  keyAt: (kvHead: number, j: number) => ArrayLike<number>, valueAt: (kvHead: number, j: number) => ArrayLike<number>,
  visible: (i: number, j: number) => boolean): Vec {
  const out = new Float64Array(rows * numHeads * headDim);
  const group = numHeads / numKvHeads;
  for (let r = 0; r < rows; r++) {
    const i = pastLen + r;
    for (let h = 0; h < numHeads; h++) {
      const kvh = Math.floor(h / group);
      const qv = Array.from({ length: headDim }, (_, d) => q[(r * numHeads + h) * headDim + d]);
      const js: number[] = [];
      for (let j = 0; j <= i; j++) if (visible(i, j)) js.push(j);
      const scores = js.map((j) => { const k = keyAt(kvh, j); let s = 0; for (let d = 0; d < headDim; d++) s += qv[d] * k[d]; return s * scale; });
      const m = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - m));
      const z = e.reduce((a, b) => a + b, 0);
      for (let t = 0; t < js.length; t++) {
        const v = valueAt(kvh, js[t]);
        for (let d = 0; d < headDim; d++) out[(r * numHeads + h) * headDim + d] += (e[t] / z) * v[d];
      }
    }
  }
  return out;
}

/** The streaming mask of the runtime: j ≤ i and (j < sink or j > i − recent). */
export function streamingVisible(sink: number, recent: number): (i: number, j: number) => boolean {
  return (i, j) => j <= i && (j < sink || j > i - recent);
}

export const causalVisible = (i: number, j: number): boolean => j <= i;

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/** Deterministic pseudo-random numbers (mulberry32) for test data. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomArray(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * scale;
  return a;
}

/**
 * Streaming attention with RazorAttention's compensation token, in float64: query i sees the
 * streaming window (j ≤ i, j < sink or j > i − recent) plus, when n = i − recent + 1 − sink > 0, one
 * token with the mean key and mean value of the evicted positions [sink, i − recent] whose logit
 * gets ln n (it counts as n copies).
 */
export function compensatedStreamingAttention(q: ArrayLike<number>, rows: number, numHeads: number, numKvHeads: number,
  headDim: number, pastLen: number, scale: number,
  keyAt: (kvHead: number, j: number) => ArrayLike<number>, valueAt: (kvHead: number, j: number) => ArrayLike<number>,
  sink: number, recent: number): Vec {
  const out = new Float64Array(rows * numHeads * headDim);
  const group = numHeads / numKvHeads;
  for (let r = 0; r < rows; r++) {
    const i = pastLen + r;
    const n = i - recent + 1 - sink;
    for (let h = 0; h < numHeads; h++) {
      const kvh = Math.floor(h / group);
      const qv = Array.from({ length: headDim }, (_, d) => q[(r * numHeads + h) * headDim + d]);
      const keys: ArrayLike<number>[] = [], values: ArrayLike<number>[] = [], bias: number[] = [];
      for (let j = 0; j <= i; j++) {
        if (j < sink || j > i - recent) { keys.push(keyAt(kvh, j)); values.push(valueAt(kvh, j)); bias.push(0); }
      }
      if (n > 0) {
        const km = new Float64Array(headDim), vm = new Float64Array(headDim);
        for (let j = sink; j <= i - recent; j++) {
          const k = keyAt(kvh, j), v = valueAt(kvh, j);
          for (let d = 0; d < headDim; d++) { km[d] += k[d] / n; vm[d] += v[d] / n; }
        }
        keys.push(km); values.push(vm); bias.push(Math.log(n));
      }
      const scores = keys.map((k, t) => { let s = 0; for (let d = 0; d < headDim; d++) s += qv[d] * k[d]; return s * scale + bias[t]; });
      const m = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - m));
      const z = e.reduce((a, b) => a + b, 0);
      for (let t = 0; t < keys.length; t++) {
        for (let d = 0; d < headDim; d++) out[(r * numHeads + h) * headDim + d] += (e[t] / z) * values[t][d];
      }
    }
  }
  return out;
}
