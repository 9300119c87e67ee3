// A checkpoint's weights placed on the devices: every projection on the main backend, with each
// layer's attention weights split once into one head group per KV method (head-split.ts); each
// group attends on its method's home backend (src/kv/method.ts).
import type { LocretSettings } from '../kv/locret/settings.js';
import type { MagicPigSettings } from '../kv/magicpig/settings.js';
import type { Backend, DeviceTensor, StreamingWindow } from '../backend/contract.js';
import type { HeadKinds } from '../attention/pattern.js';
import { KV_METHODS, methodsOfKinds, type HeadMethods } from '../kv/registry.js';
import type { KvGroupShape, KvMethod } from '../kv/method.js';
import { splitDecoupled, splitGroup, type GroupWeights } from './head-split.js';
import { layerGroups } from './layer-groups.js';
import type { ModelConfig } from '../model/config.js';
import { kvHeadsPerToken, layerKvHeads, ropeInvFreq } from '../model/config.js';
import { asPacked, convertMatrix, matrixBytes, type ModelWeights, type WeightMatrix } from '../model/weights.js';
import type { PackedMatrix, WeightDType } from '../model/quant.js';

/** The KV heads of one layer that share a method, their weights (on the main backend) and where they attend. */
export interface DeviceHeadGroup {
  method: KvMethod;
  /** Where the group's cache lives and its attention runs. */
  backend: Backend;
  kvHeads: number[];
  numHeads: number;
  /** Key heads (= value heads unless decoupled). */
  numKvHeads: number;
  numValueHeads: number;
  /** The shape its caches are created with (src/engine/layer-groups.ts). */
  shape: KvGroupShape;
  wq: DeviceTensor; wk: DeviceTensor; wv: DeviceTensor; wo: DeviceTensor;
  bq: DeviceTensor | null; bk: DeviceTensor | null; bv: DeviceTensor | null;
}

export interface DeviceLayer {
  inputNorm: DeviceTensor;
  postNorm: DeviceTensor;
  wGate: DeviceTensor; wUp: DeviceTensor; wDown: DeviceTensor;
  /** The layer's heads by method, in registry order (their O projections are summed in this order). */
  groups: DeviceHeadGroup[];
}

export interface DeviceModelOptions {
  main: Backend;
  /**
   * The side backend, where methods whose home is 'side' (the streaming heads) attend: the CPU
   * backend for the split placement, else `main`.
   */
  streamingBackend: Backend;
  /** Retrieval (true) / streaming (false) per layer per KV head, as patterns give them. */
  kinds: HeadKinds;
  /** The KV method of each (layer, KV head), by name (src/kv/registry.ts); default: from `kinds`. */
  methods?: HeadMethods;
  window: StreamingWindow;
  /** Streaming heads keep and attend RazorAttention's compensation token (default false). */
  compensation?: boolean;
  /** Budget, stabilizers and retaining heads of heads whose method is locret. */
  locret?: LocretSettings;
  /** LSH parameters and static tokens of heads whose method is magicpig. */
  magicpig?: MagicPigSettings;
  /**
   * Storage of the matmul weights (projections, MLP, LM head; tied embeddings share the LM head's),
   * each converted as it is placed. Default: every matrix as it is stored in `weights` (packed
   * matrices go to the device with their bytes unchanged).
   */
  weights?: WeightDType;
}

/** f32 bytes of the matmul weights (projections, MLP, LM head) of `config`. */
export function matmulWeightBytes(config: ModelConfig): number {
  const { hiddenSize: H, intermediateSize: I, numHeads, headDim: D, vocabSize: V } = config;
  return 4 * (config.numLayers * (2 * H * numHeads * D + 3 * H * I) + H * kvHeadsPerToken(config) * D + V * H);
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
  readonly methods: HeadMethods;
  readonly window: StreamingWindow;
  readonly compensation: boolean;
  readonly locret: LocretSettings | undefined;
  readonly magicpig: MagicPigSettings | undefined;
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
    this.methods = options.methods ?? methodsOfKinds(options.kinds);
    this.window = options.window;
    this.compensation = options.compensation ?? false;
    this.locret = options.locret;
    this.magicpig = options.magicpig;
    for (const [what, rows] of [['head pattern', options.kinds], ['head methods', this.methods]] as const) {
      if (rows.length !== config.numLayers || rows.some((row) => row.length !== config.numKvHeads)) {
        throw new Error(`${what} shape ${rows.length}×${rows[0]?.length} does not match the model (${config.numLayers} layers × ${config.numKvHeads} KV heads)`);
      }
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
    const upGroup = (method: KvMethod, shape: KvGroupShape, s: GroupWeights, numValueHeads: number): DeviceHeadGroup => ({
      method, backend: method.home === 'main' ? main : options.streamingBackend, kvHeads: s.kvHeads, numHeads: s.numHeads, numKvHeads: s.numKvHeads,
      numValueHeads, shape,
      wq: upW(s.wq, s.numHeads * D, H), wk: upW(s.wk, s.numKvHeads * D, H), wv: upW(s.wv, numValueHeads * D, H), wo: upW(s.wo, H, s.numHeads * D),
      bq: s.bq && up(s.bq), bk: s.bk && up(s.bk), bv: s.bv && up(s.bv),
    });
    const geo = { hidden: config.hiddenSize, numHeads: config.numHeads, numKvHeads: config.numKvHeads, headDim: config.headDim };
    const tied = weights.lmHead === weights.embed;
    this.lmHead = upW(conv(weights.lmHead, V, H), V, H);
    // Untied embeddings keep their own storage (rows are looked up, not multiplied): f32 stays f32.
    if (tied) this.embed = this.lmHead;
    else if (weights.embed instanceof Float32Array) this.embed = up(weights.embed);
    else { const e = asPacked(weights.embed, V, H); bytes += matrixBytes(e); this.embed = main.uploadWeight(e); }
    const { numHeads: NH } = config;
    const plan = layerGroups(config, this.methods);
    weights.layers.forEach((lw, l) => {
      const { keyHeads, valueHeads } = layerKvHeads(config, l);
      const attn = { ...lw, wq: conv(lw.wq, NH * D, H), wk: conv(lw.wk, keyHeads * D, H), wv: conv(lw.wv, valueHeads * D, H), wo: conv(lw.wo, H, NH * D) };
      this.layers.push({
        inputNorm: up(lw.inputNorm), postNorm: up(lw.postNorm),
        wGate: upW(conv(lw.wGate, I, H), I, H), wUp: upW(conv(lw.wUp, I, H), I, H), wDown: upW(conv(lw.wDown, H, I), H, I),
        groups: plan[l].map((g) => (g.heads
          // Decoupled heads: the group's query, key and value heads (the whole layer's matrices when it has them all).
          ? upGroup(g.method, g.shape, splitDecoupled(attn, { hidden: H, numHeads: NH, keyHeads, valueHeads, headDim: D }, g.kvHeads, g.heads), g.heads.value.length)
          : upGroup(g.method, g.shape, splitGroup(attn, geo, g.kvHeads), g.shape.numKvHeads))),
      });
    });
    this.finalNorm = up(weights.finalNorm);
    this.invFreq = up(ropeInvFreq(config));
    this.weightBytes = bytes;
    const formats = Object.entries(byDType) as Array<[WeightDType, number]>;
    this.weightDType = formats.length ? formats.reduce((a, b) => (b[1] > a[1] ? b : a))[0] : 'f32';
  }

  /** Largest per-layer head counts of each method's groups (sizes the workspaces), in registry order. */
  maxHeads(): Map<KvMethod, { numHeads: number; numKvHeads: number; numValueHeads: number; backend: Backend }> {
    const out = new Map<KvMethod, { numHeads: number; numKvHeads: number; numValueHeads: number; backend: Backend }>();
    for (const layer of this.layers) {
      for (const g of layer.groups) {
        const m = out.get(g.method) ?? { numHeads: 0, numKvHeads: 0, numValueHeads: 0, backend: g.backend };
        out.set(g.method, {
          numHeads: Math.max(m.numHeads, g.numHeads), numKvHeads: Math.max(m.numKvHeads, g.numKvHeads),
          numValueHeads: Math.max(m.numValueHeads, g.numValueHeads), backend: g.backend,
        });
      }
    }
    return new Map([...out].sort(([a], [b]) => KV_METHODS.indexOf(a) - KV_METHODS.indexOf(b)));
  }
}
