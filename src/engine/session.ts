// One sequence being processed: its KV caches and the forward pass (the coordinator).
// Per layer the main backend computes norm, Q/K/V and RoPE for both sides; the retrieval side
// attends over its full cache on the main backend while the streaming side attends over its
// sink + recent ring on the streaming backend; the two outputs meet again in the O projection.
import type { Backend, Compensation, DeviceTensor, StreamingWindow } from '../backend/contract.js';
import type { DeviceModel, DeviceSide } from './device-model.js';
import type { Sampler } from './sampler.js';
import type { DeviceSampler } from '../backend/device-sampler.js';
import { kvRowWords, type KvDType } from '../backend/kv-dtype.js';

interface LayerCache {
  /** Full cache of the retrieval heads: [kvHeads][capacity] rows of the session's kvDtype on the main backend. */
  kCache: DeviceTensor | null;
  vCache: DeviceTensor | null;
  /** Ring of the streaming heads: [kvHeads][ring slots][headDim] on the streaming backend. */
  kRing: DeviceTensor | null;
  vRing: DeviceTensor | null;
  /** The streaming heads' compensation sums ([kvHeads][headDim] each), when the model keeps them. */
  comp: Compensation | null;
}

/** Per-side activations of one chunk, on the main backend. */
interface SideBuffers { q: DeviceTensor; k: DeviceTensor; v: DeviceTensor; out: DeviceTensor }

export interface KvMemory {
  /** Bytes allocated for full (retrieval) caches and streaming rings, by device kind. */
  retrievalBytes: number;
  streamingBytes: number;
  byDevice: { gpu: number; cpu: number };
}

export class Session {
  /** Tokens already in the caches. */
  pastLen = 0;
  private capacity: number;
  /** The rings' window: the model's, or while the capacity is shorter, one of capacity slots. */
  private ring: StreamingWindow;
  private readonly limit: { tokens: number; reason: string } | null;
  private readonly caches: LayerCache[];
  private readonly maxRows: number;
  /** Storage of the full caches (the rings stay f32). */
  readonly kvDtype: KvDType;
  /** 32-bit words of one full-cache row (one position of one KV head). */
  private readonly rowWords: number;
  private readonly ws: {
    x: DeviceTensor; xn: DeviceTensor; h: DeviceTensor; gate: DeviceTensor; up: DeviceTensor;
    last: DeviceTensor; logits: DeviceTensor;
    retrieval: SideBuffers | null; streaming: SideBuffers | null;
    /** q|k|v of the streaming side packed for one transfer (split placement only). */
    packed: DeviceTensor | null;
    remote: SideBuffers | null;
  };

  constructor(readonly model: DeviceModel, options: {
    capacity: number; maxRows: number; limit?: { tokens: number; reason: string } | null; kvDtype?: KvDType;
  }) {
    const { config, main } = model;
    this.kvDtype = options.kvDtype ?? 'f32';
    this.rowWords = kvRowWords(config.headDim, this.kvDtype);
    this.maxRows = Math.max(1, options.maxRows);
    this.capacity = Math.max(1, options.capacity);
    this.limit = options.limit ?? null;
    this.ring = ringWindow(model.window, this.capacity);
    const rows = this.maxRows, D = config.headDim;
    const sideBuffers = (be: Backend, side: 'retrieval' | 'streaming'): SideBuffers | null => {
      const { numHeads, numKvHeads } = model.maxHeads(side);
      if (numKvHeads === 0) return null;
      return {
        q: be.alloc(rows * numHeads * D), k: be.alloc(rows * numKvHeads * D),
        v: be.alloc(rows * numKvHeads * D), out: be.alloc(rows * numHeads * D),
      };
    };
    const streaming = sideBuffers(main, 'streaming');
    const remote = model.streamingBackend !== main ? sideBuffers(model.streamingBackend, 'streaming') : null;
    this.ws = {
      x: main.alloc(rows * config.hiddenSize), xn: main.alloc(rows * config.hiddenSize),
      h: main.alloc(rows * config.hiddenSize),
      gate: main.alloc(rows * config.intermediateSize), up: main.alloc(rows * config.intermediateSize),
      last: main.alloc(config.hiddenSize), logits: main.alloc(config.vocabSize),
      retrieval: sideBuffers(main, 'retrieval'), streaming, remote,
      packed: remote && streaming ? main.alloc(streaming.q.length + 2 * streaming.k.length) : null,
    };
    const slots = this.ring.sink + this.ring.recent;
    this.caches = model.layers.map((layer) => ({
      kCache: layer.retrieval ? main.alloc(layer.retrieval.numKvHeads * this.capacity * this.rowWords) : null,
      vCache: layer.retrieval ? main.alloc(layer.retrieval.numKvHeads * this.capacity * this.rowWords) : null,
      kRing: layer.streaming ? model.streamingBackend.alloc(layer.streaming.numKvHeads * slots * D) : null,
      vRing: layer.streaming ? model.streamingBackend.alloc(layer.streaming.numKvHeads * slots * D) : null,
      comp: layer.streaming && model.compensation ? {
        kSum: model.streamingBackend.alloc(layer.streaming.numKvHeads * D), vSum: model.streamingBackend.alloc(layer.streaming.numKvHeads * D),
      } : null,
    }));
  }

  /** Exact bytes held by the KV caches now. */
  kvMemory(): KvMemory {
    const byDevice = { gpu: 0, cpu: 0 };
    let retrievalBytes = 0, streamingBytes = 0;
    for (const c of this.caches) {
      if (c.kCache && c.vCache) {
        const b = (c.kCache.length + c.vCache.length) * 4;
        retrievalBytes += b; byDevice[this.model.main.kind] += b;
      }
      if (c.kRing && c.vRing) {
        const b = (c.kRing.length + c.vRing.length + (c.comp ? c.comp.kSum.length + c.comp.vSum.length : 0)) * 4;
        streamingBytes += b; byDevice[this.model.streamingBackend.kind] += b;
      }
    }
    return { retrievalBytes, streamingBytes, byDevice };
  }

  /** Grows the full caches (copying each head's rows) so they hold `needed` positions. */
  private ensureCapacity(needed: number): void {
    if (needed <= this.capacity) return;
    const { main, config } = this.model;
    const W = this.rowWords;
    const newCapacity = Math.max(needed, Math.min(this.capacity * 2, config.maxPositionEmbeddings));
    this.model.layers.forEach((layer, l) => {
      const c = this.caches[l];
      if (!layer.retrieval || !c.kCache || !c.vCache) return;
      const kvh = layer.retrieval.numKvHeads;
      const grow = (old: DeviceTensor): DeviceTensor => {
        const t = main.alloc(kvh * newCapacity * W);
        for (let h = 0; h < kvh; h++) main.copy(t, h * newCapacity * W, old, h * this.capacity * W, this.pastLen * W);
        main.free(old);
        return t;
      };
      c.kCache = grow(c.kCache);
      c.vCache = grow(c.vCache);
    });
    this.growRings(newCapacity);
    this.capacity = newCapacity;
  }

  /**
   * Rings shorter than sink + recent (a short capacity) hold positions 0…pastLen−1 in slots
   * 0…pastLen−1, as the full-size ring would: growing copies them into rings for the new capacity.
   * Such a ring has evicted nothing (see ringWindow), so the compensation sums are still zero.
   */
  private growRings(newCapacity: number): void {
    const next = ringWindow(this.model.window, newCapacity);
    const oldSlots = this.ring.sink + this.ring.recent, newSlots = next.sink + next.recent;
    if (newSlots === oldSlots) return;
    const be = this.model.streamingBackend, D = this.model.config.headDim;
    this.model.layers.forEach((layer, l) => {
      const c = this.caches[l];
      if (!layer.streaming || !c.kRing || !c.vRing) return;
      const kvh = layer.streaming.numKvHeads;
      const grow = (old: DeviceTensor): DeviceTensor => {
        const t = be.alloc(kvh * newSlots * D);
        for (let h = 0; h < kvh; h++) be.copy(t, h * newSlots * D, old, h * oldSlots * D, this.pastLen * D);
        be.free(old);
        return t;
      };
      c.kRing = grow(c.kRing);
      c.vRing = grow(c.vRing);
    });
    this.ring = next;
  }

  /**
   * Runs `ids` (at positions pastLen…) through the model, chunk by chunk (each at most maxRows),
   * and returns the logits of the last token.
   */
  async forward(ids: ArrayLike<number>): Promise<Float32Array> {
    await this.run(ids);
    return this.model.main.read(this.ws.logits);
  }

  /**
   * Runs `ids` like forward() and returns the token `sampler` picks from the last logits: on the
   * main backend when it samples on its own (the GPU: the logits row stays there), else on the host.
   */
  async next(ids: ArrayLike<number>, sampler: Sampler): Promise<number> {
    await this.run(ids);
    const main = this.model.main as Backend & Partial<DeviceSampler>;
    const choice = main.sampleToken ? sampler.deviceChoice() : null;
    if (choice) return main.sampleToken!(this.ws.logits, this.model.config.vocabSize, choice);
    return sampler.sample(await main.read(this.ws.logits));
  }

  /** The forward pass of `ids`, ending with the last token's logits recorded into ws.logits. */
  private async run(ids: ArrayLike<number>): Promise<void> {
    if (ids.length === 0) throw new Error('forward: no tokens');
    const { config } = this.model;
    const limit = config.maxPositionEmbeddings;
    if (this.pastLen + ids.length > limit) {
      throw new Error(`sequence of ${this.pastLen + ids.length} tokens exceeds the model's max_position_embeddings (${limit})`);
    }
    if (this.limit && this.pastLen + ids.length > this.limit.tokens) {
      throw new Error(`sequence of ${this.pastLen + ids.length} tokens: ${this.limit.reason}, so results past ${this.limit.tokens} tokens would be wrong; refusing`);
    }
    for (const id of Array.from(ids)) {
      if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize) throw new Error(`token id ${id} is outside the vocabulary (0..${config.vocabSize - 1})`);
    }
    for (let start = 0; start < ids.length; start += this.maxRows) {
      const chunk = Int32Array.from(Array.from(ids).slice(start, start + this.maxRows));
      await this.forwardChunk(chunk, start + chunk.length === ids.length);
    }
  }

  private async forwardChunk(ids: Int32Array, wantLogits: boolean): Promise<void> {
    const model = this.model;
    const { config, main } = model;
    const rows = ids.length, hidden = config.hiddenSize, D = config.headDim, eps = config.rmsNormEps;
    const { ws } = this;
    this.ensureCapacity(this.pastLen + rows);
    const positions = Int32Array.from({ length: rows }, (_, r) => this.pastLen + r);
    const baseShape = { rows, headDim: D, pastLen: this.pastLen, scale: 1 / Math.sqrt(D) };

    main.embed(ws.x, model.embed, ids, hidden);
    for (let l = 0; l < model.layers.length; l++) {
      const layer = model.layers[l], cache = this.caches[l];
      main.rmsnorm(ws.xn, ws.x, layer.inputNorm, rows, hidden, eps);
      const project = (side: DeviceSide, buf: SideBuffers) => {
        main.matmul(buf.q, ws.xn, side.wq, side.bq, rows, hidden, side.numHeads * D);
        main.matmul(buf.k, ws.xn, side.wk, side.bk, rows, hidden, side.numKvHeads * D);
        main.matmul(buf.v, ws.xn, side.wv, side.bv, rows, hidden, side.numKvHeads * D);
        main.rope(buf.q, rows, side.numHeads, D, positions, model.invFreq);
        main.rope(buf.k, rows, side.numKvHeads, D, positions, model.invFreq);
      };
      const ret = layer.retrieval, str = layer.streaming;
      if (ret) project(ret, ws.retrieval!);
      if (str) project(str, ws.streaming!);

      // Streaming q/k/v leave for the other backend first, so its work overlaps the retrieval side's.
      let transfer: Promise<Float32Array> | null = null;
      if (str && ws.remote) {
        const s = ws.streaming!, nq = rows * str.numHeads * D, nk = rows * str.numKvHeads * D;
        main.copy(ws.packed!, 0, s.q, 0, nq);
        main.copy(ws.packed!, nq, s.k, 0, nk);
        main.copy(ws.packed!, nq + nk, s.v, 0, nk);
        transfer = main.read(ws.packed!, 0, nq + 2 * nk);
      }
      if (ret) {
        const r = ws.retrieval!;
        main.kvAppend(cache.kCache!, cache.vCache!, r.k, r.v, rows, ret.numKvHeads, D, this.capacity, this.pastLen, this.kvDtype);
        main.attention(r.out, r.q, cache.kCache!, cache.vCache!, { ...baseShape, numHeads: ret.numHeads, numKvHeads: ret.numKvHeads },
          this.capacity, this.kvDtype);
      }
      if (str) {
        const shape = { ...baseShape, numHeads: str.numHeads, numKvHeads: str.numKvHeads };
        const s = ws.streaming!;
        if (transfer) {
          main.flush();
          const data = await transfer;
          const be = model.streamingBackend, rm = ws.remote!;
          const nq = rows * str.numHeads * D, nk = rows * str.numKvHeads * D;
          be.write(rm.q, data.subarray(0, nq));
          be.write(rm.k, data.subarray(nq, nq + nk));
          be.write(rm.v, data.subarray(nq + nk, nq + 2 * nk));
          be.streamingAttention(rm.out, rm.q, rm.k, rm.v, cache.kRing!, cache.vRing!, shape, this.ring, cache.comp);
          be.ringAppend(cache.kRing!, cache.vRing!, rm.k, rm.v, rows, str.numKvHeads, D, this.pastLen, this.ring, cache.comp);
          main.write(s.out, await be.read(rm.out, 0, nq));
        } else {
          main.streamingAttention(s.out, s.q, s.k, s.v, cache.kRing!, cache.vRing!, shape, this.ring, cache.comp);
          main.ringAppend(cache.kRing!, cache.vRing!, s.k, s.v, rows, str.numKvHeads, D, this.pastLen, this.ring, cache.comp);
        }
      }
      if (ret) main.matmul(ws.h, ws.retrieval!.out, ret.wo, null, rows, ret.numHeads * D, hidden);
      if (str) main.matmul(ws.h, ws.streaming!.out, str.wo, null, rows, str.numHeads * D, hidden, ret !== null);
      main.add(ws.x, ws.h, rows * hidden);

      main.rmsnorm(ws.xn, ws.x, layer.postNorm, rows, hidden, eps);
      main.matmul(ws.gate, ws.xn, layer.wGate, null, rows, hidden, config.intermediateSize);
      main.matmul(ws.up, ws.xn, layer.wUp, null, rows, hidden, config.intermediateSize);
      main.siluMul(ws.gate, ws.gate, ws.up, rows * config.intermediateSize);
      main.matmul(ws.h, ws.gate, layer.wDown, null, rows, config.intermediateSize, hidden);
      main.add(ws.x, ws.h, rows * hidden);
    }
    this.pastLen += rows;
    if (!wantLogits) { main.flush(); return; }
    main.copy(ws.last, 0, ws.x, (rows - 1) * hidden, hidden);
    main.rmsnorm(ws.last, ws.last, model.finalNorm, 1, hidden, eps);
    main.matmul(ws.logits, ws.last, model.lmHead, null, 1, hidden, config.vocabSize);
  }

  /** Frees every cache and workspace tensor. */
  dispose(): void {
    const { main, streamingBackend } = this.model;
    for (const c of this.caches) {
      for (const t of [c.kCache, c.vCache]) if (t) main.free(t);
      for (const t of [c.kRing, c.vRing, c.comp?.kSum, c.comp?.vSum]) if (t) streamingBackend.free(t);
    }
    const { retrieval, streaming, remote, packed, ...rest } = this.ws;
    for (const t of Object.values(rest)) main.free(t);
    for (const s of [retrieval, streaming]) if (s) for (const t of Object.values(s)) main.free(t);
    if (remote) for (const t of Object.values(remote)) streamingBackend.free(t);
    if (packed) main.free(packed);
  }
}

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
