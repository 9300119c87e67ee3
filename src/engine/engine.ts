// The engine: picks the devices for a placement, places a checkpoint on them and generates.
import type { Backend, CpuLike, StreamingWindow } from '../backend/contract.js';
import { DeviceModel, defaultWeightDType, matmulWeightBytes } from './device-model.js';
import { checkCpuPlan, heldWeightBytes, placedWeightBytes, planMemory, type PlacementShape } from './memory-plan.js';
import { Session, type KvMemory } from './session.js';
import { calibratePlacement, choosePlacement, type PlacementCalibration, type PlacementDecision } from './auto-placement.js';
import { Sampler, type SamplingOptions } from './sampler.js';
import { allHeads, countStreaming, type HeadKinds } from '../attention/pattern.js';
import { applySlidingWindow } from '../attention/sliding-window.js';
import { groupHeads, methodsOfKinds, offloadedMethods, type HeadMethods } from '../kv/registry.js';
import { locretMethod } from '../kv/locret/method.js';
import { streamingMethod } from '../kv/streaming/method.js';
import { offloadSettings, withKernels, type MagicPigSettings, type OffloadOptions } from '../kv/magicpig/settings.js';
import { OffloadThreads } from '../kv/magicpig/threads.js';
import type { StartWorker } from '../cpu/threads.js';
import { checkLocretSettings, locretHeadsOf, type LocretSettings } from '../kv/locret/settings.js';
import { retainingHeadShape, type RetainingHeads } from '../kv/locret/retaining-heads.js';
import { createCpuBackend } from '../cpu/backend.js';
import { GpuBackend } from '../gpu/backend.js';
import { counterDelta, type GpuContext, type GpuCounters } from '../gpu/context.js';
import { ropeInvFreq, type ModelConfig } from '../model/config.js';
import { matrixBytes, weightsArePacked, type ModelWeights } from '../model/weights.js';
import { DuetError } from '../errors.js';
import type { WeightDType } from '../model/quant.js';
import { kvDTypeOption } from './kv-dtype.js';
import type { KvDType } from '../backend/kv-dtype.js';

export type { CpuLike };

export type DeviceChoice = 'auto' | 'gpu' | 'cpu';
/** Where streaming heads run: split = CPU (WASM) next to GPU retrieval heads; gpu = all on the GPU; cpu = all on the CPU. */
export type Placement = 'split' | 'gpu' | 'cpu';
/** A placement to place with, or 'auto': split or gpu by a calibration on the devices (src/engine/auto-placement.ts). */
export type PlacementChoice = Placement | 'auto';

export interface EngineOptions {
  device?: DeviceChoice;
  /** Default: 'auto' with a hardware GPU, 'split' with a software one (its timings mean nothing), else 'cpu'. */
  placement?: PlacementChoice;
  /** Retrieval (true) / streaming (false) per layer per KV head; default: all retrieval (full attention). */
  kinds?: HeadKinds;
  window?: StreamingWindow;
  /** RazorAttention's compensation token on every streaming head (default off); see Backend. */
  compensation?: boolean;
  /**
   * Locret's eviction on every head of every layer (src/kv/locret/method.ts): each KV head keeps
   * `budget` positions, the `stabilizers` latest always, the rest by the retaining heads' scores.
   * Every head, because a layer's retaining head scores all of its KV heads from the whole layer's
   * q, k, v; so not with streaming heads (kinds) or a model's own sliding window.
   */
  locret?: { budget: number; stabilizers: number; heads: RetainingHeads };
  /**
   * MagicPIG's offloading (src/kv/magicpig/method.ts): retrieval heads (every head without a
   * pattern) keep their cache in host memory and decode by LSH sampling, except in `denseLayers`
   * (full attention); streaming heads stay on their rings. K, L, sinks, local: defaults from
   * src/kv/magicpig/settings.ts (K and L by the head size).
   */
  offload?: OffloadOptions;
  /**
   * The KV method of each (layer, KV head) by name (src/kv/registry.ts), instead of `kinds`: e.g.
   * DuoAttention's retrieval heads `full` and the rest `locret`. Streaming heads need `window`,
   * locret heads `locret`. Without it: `kinds` (retrieval full, the rest streaming), or every head
   * locret when `locret` is given.
   */
  methods?: HeadMethods;
  /** Storage of the matmul weights on the device (default f32); see src/model/quant.ts. */
  weights?: WeightDType;
  /** Storage of the full KV caches and the streaming rings (default f32); see ./kv-dtype.ts. */
  kvDtype?: KvDType;
  /** Provides a GPU (Node: Dawn; browser: navigator.gpu). */
  acquireGpu?: () => Promise<{ gpu: GpuContext | null; reason: string }>;
  /** Creates the CPU backend (default: the WASM backend in this thread; browsers pass a worker proxy). */
  createCpu?: () => Promise<CpuLike>;
  /** Worker threads for the offloaded caches (count ≥ 2 and how to start a worker here); default: one thread. */
  offloadThreads?: { count: number; startWorker: StartWorker };
  /** Notes for the user (device fallback and the like), e.g. written to stderr. */
  notice?: (message: string) => void;
}

export interface GenerateOptions extends SamplingOptions {
  maxTokens?: number;
  /** Stop tokens (eos). */
  stopIds?: number[];
  /** Prefill chunk size in tokens (default 512). */
  prefillChunk?: number;
  onToken?: (id: number) => void;
  /** Stops the generation (between prefill chunks and after each token). */
  signal?: AbortSignal;
}

export type StopReason = 'eos' | 'max_tokens' | 'max_positions' | 'aborted';

export interface GenerationResult {
  tokens: number[];
  promptTokens: number;
  stopReason: StopReason;
  prefillMs: number;
  decodeMsPerToken: number;
  kv: KvMemory;
  /** The GPU's counters for the prefill and for the decode steps (null without a GPU). */
  gpu: { prefill: GpuCounters; decode: GpuCounters; decodeSteps: number } | null;
}

export class Engine {
  private constructor(
    readonly config: ModelConfig,
    readonly model: DeviceModel,
    readonly placement: Placement,
    readonly cpu: CpuLike,
    readonly gpu: GpuBackend | null,
    /** Longest sequence this configuration computes exactly, when shorter than the model's limit. */
    readonly positionLimit: { tokens: number; reason: string } | null = null,
    /** With placement 'auto': what was measured and why this placement. */
    readonly autoPlacement: (PlacementDecision & { calibration: PlacementCalibration }) | null = null,
    /** Storage of the full KV caches of every session. */
    readonly kvDtype: KvDType = 'f32',
  ) {}

  static async create(config: ModelConfig, weights: ModelWeights, options: EngineOptions = {}): Promise<Engine> {
    const device = options.device ?? 'auto';
    const kvDtype = kvDTypeOption(options.kvDtype);
    const notice = options.notice ?? (() => {});
    let placement: PlacementChoice | undefined = options.placement;
    if (placement === 'cpu' && device === 'gpu') throw new DuetError('placement', "'cpu' runs everything on the CPU; it cannot be combined with device 'gpu'");
    let gpu: GpuBackend | null = null;
    const wantGpu = device !== 'cpu' && placement !== 'cpu';
    if (wantGpu) {
      const { gpu: ctx, reason } = options.acquireGpu ? await options.acquireGpu() : { gpu: null, reason: 'no WebGPU provider in this environment' };
      if (ctx && ctx.software && device === 'auto') {
        // A software rasteriser (SwiftShader, llvmpipe) is far slower than the WASM kernels.
        notice(`the only WebGPU adapter is a software renderer (${ctx.adapterDescription}); running on the CPU, which is faster (device 'gpu' uses it anyway)`);
        ctx.destroy();
        placement = 'cpu';
      } else if (ctx) gpu = new GpuBackend(ctx);
      else if (device === 'gpu' || placement === 'split' || placement === 'gpu') {
        if (device === 'gpu') throw new DuetError('device', `'gpu': no WebGPU adapter (${reason})`, 'unavailable');
        notice(`no WebGPU adapter (${reason}); falling back to the CPU`);
        placement = 'cpu';
      } else {
        notice(`no WebGPU adapter (${reason}); running on the CPU`);
      }
    }
    placement ??= gpu ? (gpu.ctx.software ? 'split' : 'auto') : 'cpu';
    if (placement !== 'cpu' && !gpu) placement = 'cpu';
    let asked = options.kinds ?? allHeads(config.numLayers, config.numKvHeads, true);
    if (options.methods) {
      try {
        asked = kindsOfMethods(config, options.methods, options.kinds, !!options.locret);
      } catch (e) {
        gpu?.destroy();
        throw e;
      }
    }
    if (countStreaming(asked) > 0 && !options.window) {
      gpu?.destroy();
      throw new DuetError('window', 'is needed by streaming heads (sink and recent sizes)');
    }
    // The model's own sliding window (Mistral) runs as streaming heads without sinks.
    const windowed = applySlidingWindow(config.slidingWindow, config.maxPositionEmbeddings, asked, options.window);
    if (windowed.note) notice(windowed.note);
    if (windowed.note && options.methods) {
      gpu?.destroy();
      throw new DuetError('methods', `cannot be combined with the model's own sliding_window (${config.slidingWindow}), which makes every head a window head`);
    }
    const compensation = options.compensation === true && countStreaming(windowed.kinds) > 0;
    if (compensation && windowed.note) {
      gpu?.destroy();
      throw new DuetError('compensation', `cannot be combined with the model's own sliding_window (${config.slidingWindow}): its heads would attend tokens the model never sees`);
    }
    const kinds = windowed.kinds;
    const window = windowed.window ?? { sink: 0, recent: 1 };
    let offload: { settings: MagicPigSettings; denseLayers: number[] } | undefined;
    if (options.offload) {
      try {
        if (options.locret) throw new DuetError('offload', 'cannot be combined with locret (both decide what every head attends)');
        if (options.methods) throw new DuetError('offload', 'cannot be combined with methods (offload names the methods itself: magicpig on retrieval heads)');
        const checked = offloadSettings(options.offload, kinds, config.headDim, kvDtype);
        offload = { settings: await withKernels(checked.settings), denseLayers: checked.denseLayers };
        const t = options.offloadThreads;
        if (t && t.count > 1) offload.settings.threads = await OffloadThreads.create(t.count, t.startWorker);
      } catch (e) {
        gpu?.destroy();
        throw e;
      }
    }
    let locret: LocretSettings | undefined;
    if (options.locret) {
      try {
        locret = engineLocret(config, options.locret, windowed.note !== null, options.methods === undefined && countStreaming(kinds) > 0, kvDtype);
      } catch (e) {
        gpu?.destroy();
        throw e;
      }
    }
    const cpu = await (options.createCpu ?? createCpuBackend)();
    let autoPlacement: Engine['autoPlacement'] = null;
    if (placement === 'auto') {
      try {
        const calibration = await calibratePlacement(gpu!, cpu, {
          streamingPerLayer: kinds.map((row) => row.filter((retrieval) => !retrieval).length),
          group: config.numHeads / config.numKvHeads, headDim: config.headDim, window,
        });
        autoPlacement = { ...choosePlacement(calibration), calibration };
      } catch (e) {
        cpu.destroy();
        gpu?.destroy();
        throw e;
      }
      placement = autoPlacement.placement;
      notice(`placement auto: ${placement} (${autoPlacement.reason})`);
    }
    const main: Backend = placement === 'cpu' ? cpu : gpu!;
    const streamingBackend: Backend = placement === 'gpu' ? gpu! : cpu;
    // Packed weights (a quantized GGUF, quantize-on-load) stay as they are on the CPU by default.
    const keep = !options.weights && main.kind === 'cpu' && weightsArePacked(weights);
    const weightDType = keep ? undefined : options.weights ?? defaultWeightDType(config, main.kind);
    // Planned before anything is allocated: weights that cannot fit the CPU backend's memory are refused
    // here rather than by an allocation failure halfway through placing them.
    // The users' head kinds become per-head KV method names once, here (src/kv/registry.ts).
    const methods = options.methods ?? (locret ? kinds.map((row) => row.map(() => locretMethod.name))
      : offload ? offloadedMethods(kinds, offload.denseLayers) : methodsOfKinds(kinds));
    const magicpig = offload?.settings;
    const shape: PlacementShape = { config, kinds, methods, window, main: main.kind, streaming: streamingBackend.kind, kvDtype, compensation, locret, magicpig };
    const untiedEmbed = weights.embed === weights.lmHead ? undefined : matrixBytes(weights.embed);
    const weightBytes = weightDType ? placedWeightBytes(shape, weightDType, untiedEmbed) : heldWeightBytes(weights);
    let model: DeviceModel;
    try {
      checkCpuPlan(planMemory(shape, weightBytes, 1, 1), 'weights', weightDType ?? 'as stored',
        main.kind === 'cpu' ? "store them smaller (weights 'q4_0' or 'q4_k') or run the model on a GPU" : 'use fewer streaming heads');
      if (!options.weights && weightDType && weightDType !== 'f32') notice(`weights stored as ${weightDType} (f32 would need ${(matmulWeightBytes(config) / 2 ** 30).toFixed(1)} GiB of WebAssembly memory); choose with the weights option`);
      model = new DeviceModel(config, weights, { main, streamingBackend, kinds, methods, window, compensation, locret, magicpig, weights: weightDType });
    } catch (e) {
      magicpig?.threads?.stop();
      cpu.destroy();
      gpu?.destroy();
      throw e;
    }
    if (placement === 'cpu' && gpu) { gpu.destroy(); gpu = null; }
    return new Engine(config, model, placement, cpu, gpu, windowed.limit, autoPlacement, kvDtype);
  }

  get deviceDescription(): string {
    return this.placement === 'cpu' ? `cpu: ${this.cpu.description}` : `gpu: ${this.gpu!.description}`;
  }

  newSession(capacity: number, maxRows = 512): Session {
    return new Session(this.model, { capacity, maxRows, limit: this.positionLimit, kvDtype: this.kvDtype });
  }

  /**
   * Generates token by token: prefills the prompt in chunks, then yields each sampled id. Stops on a
   * stop id, at maxTokens, at the model's last position, or when `signal` aborts (checked between
   * prefill chunks and after every token). The session is freed when the generator ends, also when
   * the caller stops early (return()); the generator's return value is the result.
   */
  async *stream(promptIds: number[], options: GenerateOptions = {}): AsyncGenerator<number, GenerationResult> {
    if (promptIds.length === 0) throw new DuetError('prompt', 'is empty');
    const maxTokens = options.maxTokens ?? 64;
    if (!(Number.isInteger(maxTokens) && maxTokens >= 1)) throw new DuetError('maxTokens', `must be a positive integer (got ${maxTokens})`);
    const limit = this.config.maxPositionEmbeddings;
    if (promptIds.length > limit) {
      throw new DuetError('prompt', `has ${promptIds.length} tokens, more than the model allows (max_position_embeddings ${limit})`, 'context_length_exceeded');
    }
    const chunk = options.prefillChunk ?? 512;
    if (!(Number.isInteger(chunk) && chunk >= 1)) throw new DuetError('prefillChunk', `must be a positive integer (got ${chunk})`);
    const sampler = new Sampler(options);
    const stop = new Set(options.stopIds ?? []);
    const signal = options.signal;
    const session = this.newSession(Math.min(limit, promptIds.length + maxTokens), Math.min(chunk, promptIds.length));
    const tokens: number[] = [];
    let stopReason: StopReason = 'max_tokens';
    let prefillMs = 0, decodeMs = 0, decodeSteps = 0;
    const ctx = this.gpu?.ctx ?? null;
    const c0 = ctx?.snapshot();
    let c1 = c0;
    try {
      const t0 = performance.now();
      let id: number | null = null;
      for (let start = 0; start < promptIds.length; start += chunk) {
        if (signal?.aborted) { stopReason = 'aborted'; break; }
        const ids = promptIds.slice(start, start + chunk);
        if (start + chunk < promptIds.length) await session.forward(ids);
        else id = await session.next(ids, sampler);
      }
      prefillMs = performance.now() - t0;
      c1 = ctx?.snapshot();
      const t1 = performance.now();
      while (id !== null && tokens.length < maxTokens) {
        tokens.push(id);
        options.onToken?.(id);
        yield id;
        if (signal?.aborted) { stopReason = 'aborted'; break; }
        if (stop.has(id)) { stopReason = 'eos'; break; }
        if (tokens.length >= maxTokens) break;
        if (session.pastLen >= limit) { stopReason = 'max_positions'; break; }
        id = await session.next([id], sampler);
        decodeSteps++;
      }
      decodeMs = performance.now() - t1;
      return {
        tokens, promptTokens: promptIds.length, stopReason, prefillMs,
        decodeMsPerToken: decodeSteps ? decodeMs / decodeSteps : 0, kv: session.kvMemory(),
        gpu: ctx && c0 && c1 ? { prefill: counterDelta(c1, c0), decode: counterDelta(ctx.snapshot(), c1), decodeSteps } : null,
      };
    } finally {
      session.dispose();
    }
  }

  /** Runs stream() to the end (tokens also reach onToken). */
  async generate(promptIds: number[], options: GenerateOptions = {}): Promise<GenerationResult> {
    const it = this.stream(promptIds, options);
    for (;;) {
      const step = await it.next();
      if (step.done) return step.value;
    }
  }

  dispose(): void {
    this.model.magicpig?.threads?.stop();
    this.cpu.destroy();
    this.gpu?.destroy();
  }
}

export type { OffloadOptions };

/** The engine's locret option as KV settings, checked against the model (every field named). */
function engineLocret(config: ModelConfig, o: NonNullable<EngineOptions['locret']>, slidingWindow: boolean, streaming: boolean, kvDtype: KvDType): LocretSettings {
  if (slidingWindow) throw new DuetError('locret', `cannot be combined with the model's own sliding_window (${config.slidingWindow}): its heads must not attend tokens the model never sees`);
  if (streaming) throw new DuetError('locret', 'on every head cannot be combined with streaming heads; to mix them name each head\'s method (methods)');
  // Its kept rows are f32: a packed KV dtype would be silently ignored.
  if (kvDtype !== 'f32') throw new DuetError('locret', `keeps its cache in f32; KV dtype ${kvDtype} is not supported with it`);
  const want = retainingHeadShape(config, o.heads.layers[0]?.hidden ?? 1);
  if (o.heads.layers.length !== config.numLayers) throw new DuetError('locret', `retaining heads have ${o.heads.layers.length} layers, the model has ${config.numLayers}`);
  o.heads.layers.forEach((p, l) => {
    if (p.inDim !== want.inDim || p.outDim !== want.outDim) throw new DuetError('locret', `layer ${l}'s retaining head reads ${p.inDim} values and scores ${p.outDim} KV heads; the model needs ${want.inDim} and ${want.outDim}`);
  });
  try {
    return checkLocretSettings({ budget: o.budget, stabilizers: o.stabilizers, heads: locretHeadsOf(o.heads, ropeInvFreq(config)) });
  } catch (e) { throw new DuetError('locret', (e as Error).message.replace(/^locret: /, '')); }
}

/** Head kinds for the placement from per-head methods (streaming heads are the kind false), checked by name. */
function kindsOfMethods(config: ModelConfig, methods: HeadMethods, kinds: HeadKinds | undefined, locret: boolean): HeadKinds {
  if (kinds) throw new DuetError('methods', 'cannot be combined with kinds (a method per head says both)');
  if (methods.length !== config.numLayers || methods.some((row) => row.length !== config.numKvHeads)) {
    throw new DuetError('methods', `shape ${methods.length}×${methods[0]?.length ?? 0} does not match the model (${config.numLayers} layers × ${config.numKvHeads} KV heads)`);
  }
  for (const row of methods) {
    try { groupHeads(row); } catch (e) { throw new DuetError('methods', (e as Error).message); }
  }
  const uses = methods.some((row) => row.includes(locretMethod.name));
  if (uses && !locret) throw new DuetError('methods', 'name locret heads, which need the locret option (budget, stabilizers, retaining heads)');
  if (!uses && locret) throw new DuetError('locret', 'is given, but no head\'s method is locret');
  return methods.map((row) => row.map((m) => m !== streamingMethod.name));
}
