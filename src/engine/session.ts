// One sequence being processed: its KV caches and the forward pass (the coordinator).
// Per layer the main backend computes Q/K/V (the input RMSNorm folded into those matmuls) and RoPE
// for every head group; each group then appends and attends with its KV method (src/kv/) on the
// group's backend, and the groups' O projections add into the residual stream in registry order.
// Groups on another backend than the main one (the streaming heads of the split placement) get their
// q|k|v in one transfer per layer, sent before the main backend's groups attend so that both devices
// work at once.
import type { Backend, DeviceTensor, InputNorm } from '../backend/contract.js';
import type { DeviceHeadGroup, DeviceModel } from './device-model.js';
import type { Sampler } from './sampler.js';
import type { DeviceSampler } from '../backend/device-sampler.js';
import type { KvDType } from '../backend/kv-dtype.js';
import type { KvGroupCache, KvMethod, KvSampling, KvSettings, LayerChunk } from '../kv/method.js';

/** One group's activations of a chunk: q, k, v and the attention output. */
interface GroupBuffers { q: DeviceTensor; k: DeviceTensor; v: DeviceTensor; out: DeviceTensor }

/** A method's workspace: its buffers on the main backend and, when it attends elsewhere, on its backend. */
interface MethodBuffers { local: GroupBuffers; remote: GroupBuffers | null; backend: Backend }

export interface KvMemory {
  /** Bytes allocated for full (retrieval) caches and streaming rings. */
  retrievalBytes: number;
  streamingBytes: number;
  /** Bytes by KV method name (every method, including those two). */
  byMethod: Record<string, number>;
  byDevice: { gpu: number; cpu: number };
  /** Of those, bytes a method keeps in host memory whatever its backend (KvGroupCache.hostBytes: magicpig's offloaded stores). */
  hostBytes: number;
  /** Keys sampled / offloaded per decode step, summed over the sampling caches (magicpig); null without any. */
  sampling: KvSampling | null;
}

export class Session {
  /** Tokens already in the caches. */
  pastLen = 0;
  private capacity: number;
  private readonly limit: { tokens: number; reason: string } | null;
  /** Per layer, one cache per head group (layer.groups' order). */
  private readonly caches: KvGroupCache[][];
  private readonly maxRows: number;
  /** Storage of the full caches and the streaming rings. */
  readonly kvDtype: KvDType;
  /** What the KV methods read of this session's options. */
  readonly kvSettings: KvSettings;
  private readonly ws: {
    /** The residual stream: the O and down projections add into it, the norms are folded into the matmuls reading it. */
    x: DeviceTensor; gate: DeviceTensor; up: DeviceTensor; logits: DeviceTensor;
    methods: Map<KvMethod, MethodBuffers>;
    /** q|k|v of the groups on other backends, packed for one transfer per layer (null when none). */
    packed: DeviceTensor | null;
  };

  constructor(readonly model: DeviceModel, options: {
    capacity: number; maxRows: number; limit?: { tokens: number; reason: string } | null; kvDtype?: KvDType;
  }) {
    const { config, main } = model;
    this.kvDtype = options.kvDtype ?? 'f32';
    this.kvSettings = { kvDtype: this.kvDtype, window: model.window, compensation: model.compensation, locret: model.locret, magicpig: model.magicpig };
    this.maxRows = Math.max(1, options.maxRows);
    this.capacity = Math.max(1, options.capacity);
    this.limit = options.limit ?? null;
    const rows = this.maxRows, D = config.headDim;
    const buffers = (be: Backend, numHeads: number, numKvHeads: number, numValueHeads: number): GroupBuffers => ({
      q: be.alloc(rows * numHeads * D), k: be.alloc(rows * numKvHeads * D),
      v: be.alloc(rows * numValueHeads * D), out: be.alloc(rows * numHeads * D),
    });
    const methods = new Map<KvMethod, MethodBuffers>();
    let packedWords = 0;
    for (const [method, { numHeads, numKvHeads, numValueHeads, backend }] of model.maxHeads()) {
      const remote = backend !== main ? buffers(backend, numHeads, numKvHeads, numValueHeads) : null;
      if (remote) packedWords += rows * (numHeads + numKvHeads + numValueHeads) * D;
      methods.set(method, { local: buffers(main, numHeads, numKvHeads, numValueHeads), remote, backend });
    }
    this.ws = {
      x: main.alloc(rows * config.hiddenSize),
      gate: main.alloc(rows * config.intermediateSize), up: main.alloc(rows * config.intermediateSize),
      logits: main.alloc(config.vocabSize),
      methods, packed: packedWords ? main.alloc(packedWords) : null,
    };
    this.caches = model.layers.map((layer) => layer.groups.map((g) => g.method.create(g.backend, g.shape, this.capacity, this.kvSettings)));
  }

  /** Exact bytes held by the KV caches now. */
  kvMemory(): KvMemory {
    const byDevice = { gpu: 0, cpu: 0 };
    const byMethod: Record<string, number> = {};
    let hostBytes = 0;
    let sampling: KvSampling | null = null;
    this.model.layers.forEach((layer, l) => layer.groups.forEach((g, i) => {
      const cache = this.caches[l][i], b = cache.bytes(), host = cache.hostBytes?.() ?? 0, s = cache.sampling?.();
      if (s) {
        sampling ??= { sampled: s.sampled.map(() => 0), offloaded: s.offloaded.map(() => 0) };
        s.sampled.forEach((n, t) => { sampling!.sampled[t] += n; sampling!.offloaded[t] += s.offloaded[t]; });
      }
      byMethod[g.method.name] = (byMethod[g.method.name] ?? 0) + b;
      byDevice[g.backend.kind] += b - host;
      byDevice.cpu += host;
      hostBytes += host;
    }));
    return { retrievalBytes: byMethod.full ?? 0, streamingBytes: byMethod.streaming ?? 0, byMethod, byDevice, hostBytes, sampling };
  }

  /** Grows every cache so it holds `needed` positions. */
  private ensureCapacity(needed: number): void {
    if (needed <= this.capacity) return;
    const newCapacity = Math.max(needed, Math.min(this.capacity * 2, this.model.config.maxPositionEmbeddings));
    for (const layer of this.caches) for (const c of layer) c.grow(newCapacity, this.pastLen);
    this.capacity = newCapacity;
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
    const { ws, pastLen } = this;
    this.ensureCapacity(pastLen + rows);
    const positions = Int32Array.from({ length: rows }, (_, r) => pastLen + r);

    // No norm runs on its own and no residual add either: each RMSNorm is folded into the matmuls
    // that read its output (Backend.matmul's norm), and the O and down projections accumulate into x.
    main.embed(ws.x, model.embed, ids, hidden);
    for (let l = 0; l < model.layers.length; l++) {
      const layer = model.layers[l], caches = this.caches[l];
      const bufs = layer.groups.map((g) => ws.methods.get(g.method)!);
      const inputNorm: InputNorm = { weight: layer.inputNorm, eps };
      layer.groups.forEach((g, i) => {
        const b = bufs[i].local;
        main.matmul(b.q, ws.x, g.wq, g.bq, rows, hidden, g.numHeads * D, false, 0, inputNorm);
        main.matmul(b.k, ws.x, g.wk, g.bk, rows, hidden, g.numKvHeads * D, false, 0, inputNorm);
        main.matmul(b.v, ws.x, g.wv, g.bv, rows, hidden, g.numValueHeads * D, false, 0, inputNorm);
        main.rope(b.q, rows, g.numHeads, D, positions, model.invFreq);
        main.rope(b.k, rows, g.numKvHeads, D, positions, model.invFreq);
      });

      // The other backends' q|k|v leave first, so their work overlaps the main backend's groups.
      const away = layer.groups.flatMap((g, i) => (g.backend !== main ? [i] : []));
      let transfer: Promise<Float32Array> | null = null;
      if (away.length) {
        let at = 0;
        for (const i of away) at = this.pack(at, layer.groups[i], bufs[i].local, rows);
        transfer = main.read(ws.packed!, 0, at);
      }
      const whole: LayerChunk = { groups: layer.groups.map((g, i) => ({ kvHeads: g.kvHeads, q: bufs[i].local.q, k: bufs[i].local.k, v: bufs[i].local.v })) };
      for (let i = 0; i < layer.groups.length; i++) {
        if (layer.groups[i].backend !== main) continue;
        const b = bufs[i].local;
        const attended = caches[i].attend(b.out, b.q, b.k, b.v, rows, pastLen);
        if (attended) await attended; // only methods that attend on the host (magicpig) return a promise
        const stored = caches[i].append(b.k, b.v, rows, pastLen, b.q, whole);
        if (stored) await stored; // only methods that read back (locret, magicpig) return a promise
      }
      if (transfer) {
        main.flush();
        const data = await transfer;
        let at = 0;
        for (const i of away) {
          const g = layer.groups[i], be = g.backend, rm = bufs[i].remote!;
          const nq = rows * g.numHeads * D, nk = rows * g.numKvHeads * D, nv = rows * g.numValueHeads * D;
          be.write(rm.q, data.subarray(at, at + nq));
          be.write(rm.k, data.subarray(at + nq, at + nq + nk));
          be.write(rm.v, data.subarray(at + nq + nk, at + nq + nk + nv));
          at += nq + nk + nv;
          const attended = caches[i].attend(rm.out, rm.q, rm.k, rm.v, rows, pastLen);
          if (attended) await attended;
          const stored = caches[i].append(rm.k, rm.v, rows, pastLen, rm.q);
          if (stored) await stored;
          main.write(bufs[i].local.out, await be.read(rm.out, 0, nq));
        }
      }
      layer.groups.forEach((g, i) => main.matmul(ws.x, bufs[i].local.out, g.wo, null, rows, g.numHeads * D, hidden, true));
      const postNorm: InputNorm = { weight: layer.postNorm, eps };
      main.matmul(ws.gate, ws.x, layer.wGate, null, rows, hidden, config.intermediateSize, false, 0, postNorm);
      main.matmul(ws.up, ws.x, layer.wUp, null, rows, hidden, config.intermediateSize, false, 0, postNorm);
      main.siluMul(ws.gate, ws.gate, ws.up, rows * config.intermediateSize);
      main.matmul(ws.x, ws.gate, layer.wDown, null, rows, config.intermediateSize, hidden, true);
    }
    this.pastLen += rows;
    if (!wantLogits) { main.flush(); return; }
    // The final norm and the LM head on the last row only.
    main.matmul(ws.logits, ws.x, model.lmHead, null, 1, hidden, config.vocabSize, false, (rows - 1) * hidden, { weight: model.finalNorm, eps });
  }

  /** Copies a group's q, k, v into the packed transfer at word `at`; returns where the next one goes. */
  private pack(at: number, g: DeviceHeadGroup, b: GroupBuffers, rows: number): number {
    const main = this.model.main, D = this.model.config.headDim, packed = this.ws.packed!;
    const nq = rows * g.numHeads * D, nk = rows * g.numKvHeads * D, nv = rows * g.numValueHeads * D;
    main.copy(packed, at, b.q, 0, nq);
    main.copy(packed, at + nq, b.k, 0, nk);
    main.copy(packed, at + nq + nk, b.v, 0, nv);
    return at + nq + nk + nv;
  }

  /** Frees every cache and workspace tensor. */
  dispose(): void {
    const { main } = this.model;
    for (const layer of this.caches) for (const c of layer) c.free();
    const { methods, packed, ...rest } = this.ws;
    for (const t of Object.values(rest)) main.free(t);
    for (const { local, remote, backend } of methods.values()) {
      for (const t of Object.values(local)) main.free(t);
      if (remote) for (const t of Object.values(remote)) backend.free(t);
    }
    if (packed) main.free(packed);
  }
}
