// Plain float64 references of KV methods, one per method folder (reference.ts), for the conformance
// harness (test/kv-methods.test.ts): the method's attention written as directly as possible from its
// definition, with no rings, slots or kernels, and its cache bytes counted independently of its code.
import { queryHeadCount, valueHeadsOf, type KvGroupShape, type KvSettings } from './method.js';
import { decodeKvRow, encodeKvRow, kvRowWords, type KvDType } from '../backend/kv-dtype.js';

/** One token a query attends: key, value and a logit bias (0 for a real token). */
export interface RefToken { k: ArrayLike<number>; v: ArrayLike<number>; bias: number }

export interface KvReferenceCache {
  /** Same contract as KvGroupCache.attend, on host arrays; returns out [rows][numHeads][headDim]. */
  attend(q: Float32Array, k: Float32Array, v: Float32Array, rows: number, pastLen: number): Float64Array;
  /** Same contract as KvGroupCache.append (q: the chunk's queries [rows][numHeads][headDim]). */
  append(k: Float32Array, v: Float32Array, rows: number, pastLen: number, q: Float32Array): void;
}

export interface KvReference {
  /** Settings the harness runs the method with (over the harness's defaults). */
  variants: Array<{ label: string; settings: Partial<KvSettings> }>;
  open(shape: KvGroupShape, settings: KvSettings): KvReferenceCache;
  /** Bytes the method's cache holds with room for `capacity` positions. */
  bytes(shape: KvGroupShape, capacity: number, settings: KvSettings): number;
}

/**
 * Softmax attention in float64: query row r (position pastLen + r), head h attends the tokens
 * `tokens(i, keyHead, valueHead)` with logits scale · q·k + bias. q is [rows][numHeads][headDim].
 * GQA: query head h reads KV head ⌊h / group⌋ (keyHead = valueHead); decoupled heads (shape.maps):
 * key head queryToKey[h] and value head queryToValue[h].
 */
export function attendTokens(q: ArrayLike<number>, rows: number, pastLen: number, shape: KvGroupShape,
  tokens: (i: number, keyHead: number, valueHead: number) => RefToken[]): Float64Array {
  const { group, headDim: D, maps } = shape;
  const numHeads = queryHeadCount(shape), scale = 1 / Math.sqrt(D);
  const out = new Float64Array(rows * numHeads * D);
  for (let r = 0; r < rows; r++) {
    let seen: RefToken[] = [], seenFor = '';
    for (let h = 0; h < numHeads; h++) {
      const kh = maps ? maps.queryToKey[h] : Math.floor(h / group), vh = maps ? maps.queryToValue[h] : kh;
      if (seenFor !== `${kh},${vh}`) { seen = tokens(pastLen + r, kh, vh); seenFor = `${kh},${vh}`; }
      const qo = (r * numHeads + h) * D;
      const logits = seen.map((t) => {
        let s = 0;
        for (let d = 0; d < D; d++) s += q[qo + d] * t.k[d];
        return s * scale + t.bias;
      });
      const m = Math.max(...logits);
      const e = logits.map((x) => Math.exp(x - m));
      const z = e.reduce((a, b) => a + b, 0);
      seen.forEach((t, j) => { for (let d = 0; d < D; d++) out[qo + d] += (e[j] / z) * t.v[d]; });
    }
  }
  return out;
}

/** Every position's keys and values so far, per key head and per value head, in float64 (what a reference keeps). */
export class RefHistory {
  readonly k: Float64Array[][] = [];
  readonly v: Float64Array[][] = [];
  constructor(private readonly shape: KvGroupShape, private readonly store: (row: Float32Array) => Float64Array = (row) => Float64Array.from(row)) {}

  /** A new history: positions [0, pastLen) of this one, then the chunk's rows (this one is unchanged). */
  withChunk(k: Float32Array, v: Float32Array, rows: number, pastLen: number): RefHistory {
    const all = new RefHistory(this.shape, this.store);
    all.k.push(...this.k.slice(0, pastLen)); all.v.push(...this.v.slice(0, pastLen));
    all.put(k, v, rows, pastLen);
    return all;
  }

  /** Rows of the chunk at pastLen (replacing any positions ≥ pastLen). */
  put(k: Float32Array, v: Float32Array, rows: number, pastLen: number): void {
    const { numKvHeads, headDim: D } = this.shape, numValueHeads = valueHeadsOf(this.shape);
    this.k.length = pastLen; this.v.length = pastLen;
    for (let r = 0; r < rows; r++) {
      const row = (a: Float32Array, n: number) => Array.from({ length: n }, (_, h) => this.store(a.subarray((r * n + h) * D, (r * n + h + 1) * D)));
      this.k.push(row(k, numKvHeads)); this.v.push(row(v, numValueHeads));
    }
  }
}

/** A RefHistory store: the row as a KV row of `dtype` holds it (the reference encoder, then decode). */
export function storedAs(dtype: KvDType, headDim: number): (row: Float32Array) => Float64Array {
  return (row) => {
    const words = new Uint32Array(kvRowWords(headDim, dtype)), out = new Float32Array(headDim);
    encodeKvRow(row, dtype, words);
    decodeKvRow(words, 0, headDim, dtype, out);
    return Float64Array.from(out);
  };
}
