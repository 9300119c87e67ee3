// DuoAttention's streaming heads: the first `sink` positions and a ring of the last `recent`, with
// RazorAttention's optional compensation token (the sums of the keys and values the ring evicted).
// Kernels: Backend.streamingAttention and Backend.ringAppend (streaming.as.ts,
// streaming_attention.wgsl and streaming_compensation.wgsl beside this file); the ring's slot
// layout and the compensation semantics are in src/backend/contract.ts.
//
// Layout: K and V rings, head-major [numKvHeads][sink + recent] rows of the session's KV dtype (the
// full caches' row format, src/backend/kv-dtype.ts; fewer slots while the capacity is shorter, see
// ringWindow), and with compensation kSum, vSum [numKvHeads][headDim], always f32: they add the
// stored (decoded) values, so they do not depend on the chunking.
//
// Decoupled heads (a DHA layer's streaming group, KvGroupShape.maps): the K ring holds the group's
// key heads and the V ring its value heads, [n_K][slots] and [n_V][slots] rows; each query head reads
// its own key and value ring heads. Compensation is refused there (naming the layer).
import type { Backend, Compensation, DeviceTensor, StreamingWindow } from '../../backend/contract.js';
import { kvRowWords, type KvDType } from '../../backend/kv-dtype.js';
import { groupAttentionShape, tensorBytes, valueHeadsOf, type KvGroupCache, type KvGroupShape, type KvMethod, type KvSettings, type KvTensorSpec } from '../method.js';

/**
 * The ring for a capacity: sink + recent slots, or `capacity` slots when fewer positions can ever be
 * cached. Every position below the capacity then sees every earlier key under both windows (i <
 * sink + recent means i − recent < sink), so the smaller ring computes the same attention.
 */
export function ringWindow(w: StreamingWindow, capacity: number): StreamingWindow {
  if (capacity >= w.sink + w.recent) return w;
  const sink = Math.min(w.sink, capacity - 1);
  return { sink, recent: capacity - sink };
}

/** Words of the K ring (heads = numKvHeads) or the V ring (heads = valueHeadsOf(shape)). */
function ringWords(heads: number, shape: KvGroupShape, ring: StreamingWindow, dtype: KvDType): number {
  return heads * (ring.sink + ring.recent) * kvRowWords(shape.headDim, dtype);
}

function refuseMappedCompensation(shape: KvGroupShape, compensation: boolean): void {
  if (compensation && shape.maps) {
    throw new Error(`streaming heads of layer ${shape.layer ?? 0}: compensation (RazorAttention) is not supported with decoupled key/value heads (a DHA layer); run without compensation`);
  }
}

/**
 * A streaming ring on its backend. Also the static tokens of another method (magicpig keeps its
 * sinks and local window exact on the main device in one), which reads the partial softmax back
 * (attend's logSumExp) and hashes keys straight from the K ring (keyRing, activeWindow).
 */
export class StreamingCache implements KvGroupCache {
  private ring: StreamingWindow;
  private kRing: DeviceTensor;
  private vRing: DeviceTensor;
  private readonly comp: Compensation | null;

  constructor(private readonly be: Backend, private readonly shape: KvGroupShape, capacity: number,
    private readonly window: StreamingWindow, compensation: boolean, private readonly dtype: KvDType) {
    refuseMappedCompensation(shape, compensation);
    this.ring = ringWindow(window, capacity);
    this.kRing = be.alloc(ringWords(shape.numKvHeads, shape, this.ring, dtype));
    this.vRing = be.alloc(ringWords(valueHeadsOf(shape), shape, this.ring, dtype));
    const D = shape.headDim;
    this.comp = compensation ? { kSum: be.alloc(shape.numKvHeads * D), vSum: be.alloc(shape.numKvHeads * D) } : null;
  }

  bytes(): number {
    return tensorBytes([this.kRing, this.vRing, this.comp?.kSum ?? null, this.comp?.vSum ?? null]);
  }

  /** With logSumExp, out also gets each query's log-sum-exp after its rows (Backend.streamingAttention). */
  attend(out: DeviceTensor, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, rows: number, pastLen: number, logSumExp = false): void {
    this.be.streamingAttention(out, q, k, v, this.kRing, this.vRing, groupAttentionShape(this.shape, rows, pastLen), this.ring, this.comp, this.dtype,
      logSumExp);
  }

  /** The K ring, [numKvHeads][slots][row] (slots = sink + recent of activeWindow). */
  get keyRing(): DeviceTensor { return this.kRing; }

  /** The ring's window now (shorter than asked while the capacity is; see ringWindow). */
  get activeWindow(): StreamingWindow { return this.ring; }

  append(k: DeviceTensor, v: DeviceTensor, rows: number, pastLen: number): void {
    this.be.ringAppend(this.kRing, this.vRing, k, v, rows, this.shape.numKvHeads, this.shape.headDim, pastLen, this.ring, this.comp, this.dtype,
      valueHeadsOf(this.shape));
  }

  /**
   * Rings shorter than sink + recent (a short capacity) hold positions 0…pastLen−1 in slots
   * 0…pastLen−1, as the full-size ring would: growing copies them into rings for the new capacity.
   * Such a ring has evicted nothing (see ringWindow), so the compensation sums are still zero.
   */
  grow(capacity: number, pastLen: number): void {
    const next = ringWindow(this.window, capacity);
    const oldSlots = this.ring.sink + this.ring.recent, newSlots = next.sink + next.recent;
    if (newSlots === oldSlots) return;
    const W = kvRowWords(this.shape.headDim, this.dtype);
    const grow = (old: DeviceTensor, heads: number): DeviceTensor => {
      const t = this.be.alloc(ringWords(heads, this.shape, next, this.dtype));
      for (let h = 0; h < heads; h++) this.be.copy(t, h * newSlots * W, old, h * oldSlots * W, pastLen * W);
      this.be.free(old);
      return t;
    };
    this.kRing = grow(this.kRing, this.shape.numKvHeads);
    this.vRing = grow(this.vRing, valueHeadsOf(this.shape));
    this.ring = next;
  }

  free(): void {
    for (const t of [this.kRing, this.vRing, this.comp?.kSum, this.comp?.vSum]) if (t) this.be.free(t);
  }
}

export const streamingMethod: KvMethod = {
  name: 'streaming',
  home: 'side',
  decoupledHeads: true,
  layout(shape: KvGroupShape, capacity: number, settings: KvSettings): KvTensorSpec[] {
    refuseMappedCompensation(shape, settings.compensation);
    const ring = ringWindow(settings.window, capacity);
    const specs = [{ name: 'K ring', words: ringWords(shape.numKvHeads, shape, ring, settings.kvDtype) },
      { name: 'V ring', words: ringWords(valueHeadsOf(shape), shape, ring, settings.kvDtype) }];
    if (settings.compensation) {
      const sum = shape.numKvHeads * shape.headDim;
      specs.push({ name: 'K sum (compensation)', words: sum }, { name: 'V sum (compensation)', words: sum });
    }
    return specs;
  },
  create(backend: Backend, shape: KvGroupShape, capacity: number, settings: KvSettings): KvGroupCache {
    return new StreamingCache(backend, shape, capacity, settings.window, settings.compensation, settings.kvDtype);
  },
};
