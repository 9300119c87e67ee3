// A checkpoint's weights placed on the devices: every projection on the main backend, with each
// layer's attention weights split once into a retrieval side and a streaming side (head-split.ts).
import type { Backend, DeviceTensor, StreamingWindow } from '../backend/contract.js';
import type { HeadKinds } from '../attention/pattern.js';
import { splitSide, type SideWeights } from './head-split.js';
import type { ModelConfig } from '../model/config.js';
import { ropeInvFreq } from '../model/config.js';
import { asPacked, convertMatrix, matrixBytes, type ModelWeights, type WeightMatrix } from '../model/weights.js';
import type { PackedMatrix, WeightDType } from '../model/quant.js';

export interface DeviceSide {
  kvHeads: number[];
  numHeads: number;
  numKvHeads: number;
  wq: DeviceTensor; wk: DeviceTensor; wv: DeviceTensor; wo: DeviceTensor;
  bq: DeviceTensor | null; bk: DeviceTensor | null; bv: DeviceTensor | null;
}

export interface DeviceLayer {
  inputNorm: DeviceTensor;
  postNorm: DeviceTensor;
  wGate: DeviceTensor; wUp: DeviceTensor; wDown: DeviceTensor;
  /** Heads with a full KV cache on the main backend (null when the layer has none). */
  retrieval: DeviceSide | null;
  /** Heads with a sink + recent ring on the streaming backend (null when none). */
  streaming: DeviceSide | null;
}

export interface DeviceModelOptions {
  main: Backend;
  /** Where streaming heads attend: the CPU backend for the split placement, else `main`. */
  streamingBackend: Backend;
  kinds: HeadKinds;
  window: StreamingWindow;
  /** Streaming heads keep and attend RazorAttention's compensation token (default false). */
  compensation?: boolean;
  /**
   * Storage of the matmul weights (projections, MLP, LM head; tied embeddings share the LM head's),
   * each converted as it is placed. Default: every matrix as it is stored in `weights` (packed
   * matrices go to the device with their bytes unchanged).
   */
  weights?: WeightDType;
}

/** f32 bytes of the matmul weights (projections, MLP, LM head) of `config`. */
export function matmulWeightBytes(config: ModelConfig): number {
  const { hiddenSize: H, intermediateSize: I, numHeads, numKvHeads, headDim: D, vocabSize: V } = config;
  return 4 * (config.numLayers * (H * (numHeads + 2 * numKvHeads) * D + numHeads * D * H + 3 * H * I) + V * H);
}

/** Above this many f32 weight bytes the CPU default is q8_0 (f32 would crowd the 4 GiB WebAssembly memory). */
export const CPU_F32_WEIGHT_LIMIT = 2 ** 31;

/**
 * The default weight storage: f32 on the GPU (the packed WGSL kernels are unmeasured on real GPUs); on the CPU f32
 * while it fits comfortably (it decoded fastest with these kernels, README "Weight formats"), else q8_0.
 */
export function defaultWeightDType(config: ModelConfig, device: 'cpu' | 'gpu'): WeightDType {
  return device === 'cpu' && matmulWeightBytes(config) > CPU_F32_WEIGHT_LIMIT ? 'q8_0' : 'f32';
}

export class DeviceModel {
  readonly layers: DeviceLayer[] = [];
  readonly embed: DeviceTensor;
  readonly finalNorm: DeviceTensor;
  readonly lmHead: DeviceTensor;
  readonly invFreq: DeviceTensor;
  readonly main: Backend;
  readonly streamingBackend: Backend;
  readonly kinds: HeadKinds;
  readonly window: StreamingWindow;
  readonly compensation: boolean;
  /** Bytes of weights uploaded to the main backend. */
  readonly weightBytes: number;
  /** The storage of the matmul weights (the format holding most of their bytes, if they mix). */
  readonly weightDType: WeightDType;
  /** Matmul weight bytes per storage format. */
  readonly weightBytesByDType: Partial<Record<WeightDType, number>> = {};

  constructor(readonly config: ModelConfig, weights: ModelWeights, options: DeviceModelOptions) {
    const { main } = options;
    this.main = main;
    this.streamingBackend = options.streamingBackend;
    this.kinds = options.kinds;
    this.window = options.window;
    this.compensation = options.compensation ?? false;
    if (options.kinds.length !== config.numLayers || options.kinds.some((row) => row.length !== config.numKvHeads)) {
      throw new Error(`head pattern shape ${options.kinds.length}×${options.kinds[0]?.length} does not match the model (${config.numLayers} layers × ${config.numKvHeads} KV heads)`);
    }
    let bytes = 0;
    const dtype = options.weights ?? 'keep';
    const byDType = this.weightBytesByDType;
    const up = (a: Float32Array): DeviceTensor => { bytes += a.byteLength; return main.upload(a); };
    // A matmul weight [rows][cols] in the chosen storage (one matrix converted at a time).
    const conv = (a: WeightMatrix, rows: number, cols: number): WeightMatrix => convertMatrix(a, rows, cols, dtype);
    const upW = (a: WeightMatrix | PackedMatrix, rows: number, cols: number): DeviceTensor => {
      const m = asPacked(a, rows, cols);
      const n = matrixBytes(m);
      bytes += n;
      byDType[m.dtype] = (byDType[m.dtype] ?? 0) + n;
      return main.uploadWeight(m);
    };
    const { hiddenSize: H, headDim: D, intermediateSize: I, vocabSize: V } = config;
    const upSide = (s: SideWeights): DeviceSide => ({
      kvHeads: s.kvHeads, numHeads: s.numHeads, numKvHeads: s.numKvHeads,
      wq: upW(s.wq, s.numHeads * D, H), wk: upW(s.wk, s.numKvHeads * D, H), wv: upW(s.wv, s.numKvHeads * D, H), wo: upW(s.wo, H, s.numHeads * D),
      bq: s.bq && up(s.bq), bk: s.bk && up(s.bk), bv: s.bv && up(s.bv),
    });
    const geo = { hidden: config.hiddenSize, numHeads: config.numHeads, numKvHeads: config.numKvHeads, headDim: config.headDim };
    const tied = weights.lmHead === weights.embed;
    this.lmHead = upW(conv(weights.lmHead, V, H), V, H);
    // Untied embeddings keep their own storage (rows are looked up, not multiplied): f32 stays f32.
    if (tied) this.embed = this.lmHead;
    else if (weights.embed instanceof Float32Array) this.embed = up(weights.embed);
    else { const e = asPacked(weights.embed, V, H); bytes += matrixBytes(e); this.embed = main.uploadWeight(e); }
    const { numHeads: NH, numKvHeads: NKV } = config;
    weights.layers.forEach((lw, l) => {
      const kinds = options.kinds[l];
      const retrievalHeads = kinds.flatMap((r, h) => (r ? [h] : []));
      const streamingHeads = kinds.flatMap((r, h) => (r ? [] : [h]));
      const attn = { ...lw, wq: conv(lw.wq, NH * D, H), wk: conv(lw.wk, NKV * D, H), wv: conv(lw.wv, NKV * D, H), wo: conv(lw.wo, H, NH * D) };
      this.layers.push({
        inputNorm: up(lw.inputNorm), postNorm: up(lw.postNorm),
        wGate: upW(conv(lw.wGate, I, H), I, H), wUp: upW(conv(lw.wUp, I, H), I, H), wDown: upW(conv(lw.wDown, H, I), H, I),
        retrieval: retrievalHeads.length ? upSide(splitSide(attn, geo, retrievalHeads)) : null,
        streaming: streamingHeads.length ? upSide(splitSide(attn, geo, streamingHeads)) : null,
      });
    });
    this.finalNorm = up(weights.finalNorm);
    this.invFreq = up(ropeInvFreq(config));
    this.weightBytes = bytes;
    const formats = Object.entries(byDType) as Array<[WeightDType, number]>;
    this.weightDType = formats.length ? formats.reduce((a, b) => (b[1] > a[1] ? b : a))[0] : 'f32';
  }

  /** Largest per-layer head counts of each side (sizes the workspaces). */
  maxHeads(side: 'retrieval' | 'streaming'): { numHeads: number; numKvHeads: number } {
    let numHeads = 0, numKvHeads = 0;
    for (const layer of this.layers) {
      const s = layer[side];
      if (s) { numHeads = Math.max(numHeads, s.numHeads); numKvHeads = Math.max(numKvHeads, s.numKvHeads); }
    }
    return { numHeads, numKvHeads };
  }
}
