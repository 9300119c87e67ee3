// Full attention: every position of every KV head kept, in the session's KV dtype (f32, f16 or int8;
// row layout in src/backend/kv-dtype.ts). Kernels: Backend.kvAppend and Backend.attention
// (attention.as.ts, attention.wgsl and attention_combine.wgsl beside this file; the shared row
// stores assembly/kv_dtype.ts and wgsl/kv_cache.wgsl).
//
// Layout: K and V caches, head-major [numKvHeads][capacity] rows of kvRowWords(headDim, dtype) words.
// With decoupled heads (a DHA layer, shape.maps) the V cache has its own head count, [numValueHeads][capacity],
// and attention reads each query head's key and value head through the maps.
// The attention kernel reads the chunk from the cache, so attend() writes the chunk's rows first
// (slots pastLen…, which hold nothing yet) and append() then has nothing left to store.
import type { Backend, DeviceTensor } from '../../backend/contract.js';
import { kvRowWords, type KvDType } from '../../backend/kv-dtype.js';
import { groupAttentionShape, tensorBytes, valueHeadsOf, type KvGroupCache, type KvGroupShape, type KvMethod, type KvSettings, type KvTensorSpec } from '../method.js';

/** Words of a cache of `heads` heads (the K cache: numKvHeads; the V cache: valueHeadsOf). */
function cacheWords(heads: number, shape: KvGroupShape, capacity: number, dtype: KvDType): number {
  return heads * capacity * kvRowWords(shape.headDim, dtype);
}

class FullCache implements KvGroupCache {
  private k: DeviceTensor;
  private v: DeviceTensor;
  /** The chunk attend() already stored, so that append() of the same chunk stores nothing again. */
  private stored: { k: DeviceTensor; v: DeviceTensor; rows: number; pastLen: number } | null = null;

  constructor(private readonly be: Backend, private readonly shape: KvGroupShape, private capacity: number,
    private readonly dtype: KvDType) {
    this.k = be.alloc(cacheWords(shape.numKvHeads, shape, capacity, dtype));
    this.v = be.alloc(cacheWords(valueHeadsOf(shape), shape, capacity, dtype));
  }

  bytes(): number {
    return tensorBytes([this.k, this.v]);
  }

  attend(out: DeviceTensor, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, rows: number, pastLen: number): void {
    this.store(k, v, rows, pastLen);
    this.be.attention(out, q, this.k, this.v, groupAttentionShape(this.shape, rows, pastLen), this.capacity, this.dtype);
  }

  append(k: DeviceTensor, v: DeviceTensor, rows: number, pastLen: number): void {
    const s = this.stored;
    if (!(s && s.k === k && s.v === v && s.rows === rows && s.pastLen === pastLen)) this.store(k, v, rows, pastLen);
    this.stored = null;
  }

  private store(k: DeviceTensor, v: DeviceTensor, rows: number, pastLen: number): void {
    const { numKvHeads, headDim } = this.shape;
    this.be.kvAppend(this.k, this.v, k, v, rows, numKvHeads, headDim, this.capacity, pastLen, this.dtype, valueHeadsOf(this.shape));
    this.stored = { k, v, rows, pastLen };
  }

  grow(capacity: number, pastLen: number): void {
    if (capacity <= this.capacity) return;
    const W = kvRowWords(this.shape.headDim, this.dtype);
    const grow = (old: DeviceTensor, heads: number): DeviceTensor => {
      const t = this.be.alloc(cacheWords(heads, this.shape, capacity, this.dtype));
      for (let h = 0; h < heads; h++) this.be.copy(t, h * capacity * W, old, h * this.capacity * W, pastLen * W);
      this.be.free(old);
      return t;
    };
    this.k = grow(this.k, this.shape.numKvHeads);
    this.v = grow(this.v, valueHeadsOf(this.shape));
    this.capacity = capacity;
    this.stored = null;
  }

  free(): void {
    this.be.free(this.k);
    this.be.free(this.v);
  }
}

export const fullMethod: KvMethod = {
  name: 'full',
  home: 'main',
  decoupledHeads: true,
  layout(shape: KvGroupShape, capacity: number, settings: KvSettings): KvTensorSpec[] {
    return [
      { name: `K (${settings.kvDtype})`, words: cacheWords(shape.numKvHeads, shape, capacity, settings.kvDtype) },
      { name: `V (${settings.kvDtype})`, words: cacheWords(valueHeadsOf(shape), shape, capacity, settings.kvDtype) },
    ];
  },
  create(backend: Backend, shape: KvGroupShape, capacity: number, settings: KvSettings): KvGroupCache {
    return new FullCache(backend, shape, capacity, settings.kvDtype);
  },
};
