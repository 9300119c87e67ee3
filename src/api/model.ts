// The public model object: a checkpoint placed on its devices with a head pattern, generating text
// as an async iterable. Environment-neutral: the entries (src/index.ts for browsers, src/node.ts for
// Node) supply the files, the GPU and the CPU backend.
import { describePromoted, promotedHeads } from '../engine/layer-groups.js';
import { projectModelKv } from './memory.js';
import { allHeads, countStreaming, loadPattern, type HeadPattern, type PatternFiles } from '../attention/pattern.js';
import type { StreamingWindow } from '../backend/contract.js';
import { Engine, type CpuLike, type DeviceChoice, type EngineOptions, type GenerationResult, type OffloadOptions, type Placement, type PlacementChoice } from '../engine/engine.js';
import type { PlacementCalibration } from '../engine/auto-placement.js';
import { DuetError } from '../errors.js';
import { kvDTypeOption } from '../engine/kv-dtype.js';
import type { KvDType } from '../backend/kv-dtype.js';
import type { StartWorker } from '../cpu/threads.js';
import { checkCpuPlan, CPU_PLAN_LIMIT, cpuBackendBytes, describeCpu, maxCpuContext, planMemory, type PlacementShape } from '../engine/memory-plan.js';
import { Sampler } from '../engine/sampler.js';
import { GpuContext, perTokenCounters, type GpuCounters, type PerTokenCounters } from '../gpu/context.js';
import { loadCheckpoint, type Checkpoint } from '../model/checkpoint.js';
import type { LoadWeights } from '../model/weights.js';
import { defaultWeightDType } from '../engine/device-model.js';
import type { ModelConfig } from '../model/config.js';
import { isWeightDType, WEIGHT_DTYPES, type WeightDType } from '../model/quant.js';
import type { ModelFiles } from '../model/files.js';
import type { ChatMessage, StreamDecoder, TextTokenizer } from '../model/tokenizer.js';
import { resolveHeads, type HeadOptions, type ResolvedHeads } from './heads.js';
import { loadLocretHeads } from '../kv/locret/file.js';
import type { RetainingHeads } from '../kv/locret/retaining-heads.js';
import { methodsOfKinds } from '../kv/registry.js';
import { describeOffload } from '../kv/magicpig/settings.js';
import { StopText } from './stop-text.js';
import { ChatCompletions, Completions } from './openai.js';

export type { ChatMessage, DeviceChoice, OffloadOptions, Placement, PlacementCalibration, PlacementChoice, StreamingWindow };

/** A long step of loading: bytes downloaded or read, tensors placed. */
export interface ProgressEvent {
  step: 'download' | 'weights' | 'pattern' | 'engine';
  done: number;
  total: number;
  /** The file or tensor being worked on. */
  detail?: string;
}

export interface ModelOptions extends Omit<HeadOptions, 'pattern'> {
  /** A DuoAttention pattern: parsed, or its folder (full_attention_heads.tsv + config.json). */
  pattern?: HeadPattern | PatternFiles;
  /**
   * MagicPIG's offloading (docs/magicpig.md): retrieval heads (every head without a pattern) keep
   * their KV cache in host memory and decode by LSH sampling (K bits × L tables; default K and L
   * for the head size), prefill exact; `denseLayers` keep full attention; streaming heads stay on
   * their rings. true: every default. Not with locret or a packed kvDtype.
   */
  offload?: boolean | OffloadOptions;
  /** 'auto' (default) takes a hardware GPU and never a software renderer; 'gpu' insists; 'cpu' never asks. */
  device?: DeviceChoice;
  /**
   * Where streaming heads run: 'split' (CPU, next to GPU retrieval heads), 'gpu', 'cpu' (everything),
   * or 'auto': split or gpu, whichever a short calibration on the devices says decodes faster
   * (ModelInfo.autoPlacement says why). Default: 'auto' with a hardware GPU, 'split' with a software one.
   */
  placement?: PlacementChoice;
  /** An existing WebGPU device to run on instead of acquiring one. */
  gpuDevice?: GPUDevice;
  /**
   * Longest prompt + generation in tokens (default: the model's max_position_embeddings, lowered with a
   * notice to what the CPU backend's memory can hold; a length asked for that cannot fit is refused).
   */
  contextLength?: number;
  /** Prefill chunk size in tokens (default 512). */
  prefillChunk?: number;
  /**
   * How matmul weights are stored on the device: 'f32', 'f16', 'q8_0', 'q4_0' or 'q4_k'. Default: a
   * GGUF keeps its tensors' types; other checkpoints f32, or q8_0 when f32 would crowd the CPU.
   */
  weights?: WeightDType;
  /**
   * Storage of the full (retrieval-head) KV caches: 'f32' (default), 'f16' (IEEE half) or 'int8' (one
   * f32 scale per position and KV head); see src/backend/kv-dtype.ts. The streaming rings use the same rows (their compensation sums stay f32).
   */
  kvDtype?: KvDType;
  /** The name requests and responses use for this model (default: the source's name). */
  id?: string;
  onProgress?: (event: ProgressEvent) => void;
  /** Notes worth showing (device fallbacks, a missing chat template); default: none shown. */
  notice?: (message: string) => void;
  /** Passed to the checkpoint loader (room for weight formats and the like). */
  checkpoint?: Record<string, unknown>;
}

/** What an entry provides: how to get a GPU and a CPU backend here, and worker threads for offloaded caches. */
export interface Environment {
  acquireGpu: () => Promise<{ gpu: GpuContext | null; reason: string }>;
  createCpu: () => Promise<CpuLike>;
  offloadThreads?: { count: number; startWorker: StartWorker };
}

export type Prompt = string | number[] | { messages: ChatMessage[] };

export interface GenerateOptions {
  /** Tokens to generate at most (default 256, and never past the context length). */
  maxTokens?: number;
  /** 0 (default) = greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  /** Text that ends the generation (not included in the output). */
  stop?: string | string[];
  /** Token ids that end the generation, besides the model's end-of-sequence ids. */
  stopIds?: number[];
  /** Do not stop at the model's end-of-sequence ids. */
  ignoreEos?: boolean;
  signal?: AbortSignal;
}

export interface TokenDelta {
  /** The sampled token id. */
  id: number;
  /** New text this token completes (may be '' while a character or a possible stop string is incomplete). */
  text: string;
}

export type FinishReason = 'stop' | 'length' | 'abort';

export interface KvStats {
  /** Bytes of KV cache on each device, and split by head kind. */
  gpu: number;
  cpu: number;
  retrieval: number;
  streaming: number;
  /** What full attention would hold at the same capacity. */
  fullAttention: number;
  /** Bytes of the offloaded (magicpig) caches' host stores (part of cpu; their static rings are on their device). */
  offloaded: number;
  /** Offloaded heads: per decode step, the fraction of their offloaded keys sampled (with topk: attended; null without offloading). */
  sampledFraction: number[] | null;
}

/** The mean over decode steps of kv.sampledFraction; null without offloading or without a decode step. */
export function meanSampledFraction(kv: KvStats): number | null {
  const f = kv.sampledFraction;
  return f && f.length ? f.reduce((a, b) => a + b, 0) / f.length : null;
}

export interface GenerationStats {
  text: string;
  tokens: number[];
  /** stop: end-of-sequence or a stop string/id; length: maxTokens or the context; abort: the signal. */
  finishReason: FinishReason;
  /** The detail behind finishReason. */
  stoppedBy: 'eos' | 'stop_id' | 'stop_string' | 'max_tokens' | 'context' | 'signal';
  usage: { promptTokens: number; completionTokens: number; totalTokens: number };
  timings: { prefillMs: number; decodeMsPerToken: number; timeToFirstTokenMs: number; totalMs: number };
  kv: KvStats;
  /** Work done for this generation: WebGPU dispatches and WebAssembly kernel calls. */
  work: { gpuDispatches: number; cpuKernelCalls: number };
  /**
   * The GPU's costs (docs/benchmarks.md "Counters"): per decoded token, and the totals of the
   * prefill and of the decode steps; null when no GPU ran.
   */
  counters: (PerTokenCounters & { decodeTokens: number; prefill: GpuCounters; decode: GpuCounters }) | null;
}

/**
 * The loader's storage for the weights format a user asked for (undefined: the default). Without a
 * format, a model whose f32 matmul weights would crowd the CPU's 4 GiB WebAssembly memory is packed
 * to q8_0 as it loads (unless it is headed for the GPU, whose kernels take f32), and a GGUF keeps
 * its own types.
 */
export function loaderWeights(options: ModelOptions, files: ModelFiles): (config: ModelConfig) => LoadWeights {
  const asked = options.weights;
  const forGpu = options.device === 'gpu' || options.placement === 'gpu' || options.placement === 'split' || options.placement === 'auto';
  return (config) => {
    if (asked) return asked;
    if (files.gguf !== undefined) return 'keep';
    const cpuDefault = defaultWeightDType(config, 'cpu');
    return !forGpu && cpuDefault !== 'f32' ? cpuDefault : 'keep';
  };
}

/** DuetModel.perplexity's answer: the scored tokens, their mean negative log-likelihood (nats) and exp of it. */
export interface PerplexityResult { tokens: number; meanNll: number; perplexity: number }

/** -log softmax(logits)[target], in float64 (a log-sum-exp shifted by the maximum). */
export function negativeLogLikelihood(logits: ArrayLike<number>, target: number): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  return Math.log(sum) + max - logits[target];
}

/** A generation in progress: iterate it for token deltas; result() resolves when it ends. */
export class Generation implements AsyncIterable<TokenDelta> {
  private started = false;
  private readonly iterator: AsyncGenerator<TokenDelta, void>;
  private readonly done: Promise<GenerationStats>;
  private settle!: { resolve: (s: GenerationStats) => void; reject: (e: unknown) => void };

  constructor(run: (finish: (s: GenerationStats) => void) => AsyncGenerator<TokenDelta, void>) {
    this.done = new Promise((resolve, reject) => { this.settle = { resolve, reject }; });
    this.done.catch(() => {});
    const inner = run((s) => this.settle.resolve(s));
    const settle = this.settle;
    this.iterator = (async function* () {
      try { yield* inner; } catch (e) { settle.reject(e); throw e; }
    })();
  }

  [Symbol.asyncIterator](): AsyncIterator<TokenDelta> {
    if (this.started) throw new DuetError(null, 'a generation can be iterated only once');
    this.started = true;
    return this.iterator;
  }

  /** The finished generation's text and statistics (runs it to the end if nobody iterates it). */
  async result(): Promise<GenerationStats> {
    if (!this.started) for await (const _ of this) { /* drain */ }
    return this.done;
  }
}

export interface ModelInfo {
  id: string;
  config: ModelConfig;
  placement: Placement;
  /** The device that runs the main side ("gpu: …" or "cpu: …"). */
  device: string;
  /** The CPU backend (streaming heads with the split placement; everything with cpu). */
  cpu: string;
  heads: string;
  streamingHeads: number;
  kvHeads: number;
  window: StreamingWindow | null;
  contextLength: number;
  hasTokenizer: boolean;
  hasChatTemplate: boolean;
  /** How the matmul weights are stored, and their bytes on the main device. */
  weights: { dtype: WeightDType; bytes: number };
  /** Storage of the full KV caches. */
  kvDtype: KvDType;
  /** With placement 'auto': the choice, why, and what was measured (ms per decoded token); else null. */
  autoPlacement: { placement: 'gpu' | 'split'; reason: string; splitMsPerToken: number; gpuMsPerToken: number; calibration: PlacementCalibration } | null;
  /** The offload option the model was loaded with ({} for MagicPIG's defaults), null without offloading. */
  offload: OffloadOptions | null;
}

export class DuetModel {
  private queue: Promise<unknown> = Promise.resolve();
  private last: GenerationStats | null = null;
  private disposed = false;
  readonly tokenizer: TextTokenizer | null;
  readonly eosTokenIds: number[];
  /** The model and its placement (replaced by setHeads). */
  info: ModelInfo;
  /** OpenAI-shaped chat completions: create({ messages, stream, max_tokens, … }). */
  readonly chat: { completions: ChatCompletions } = { completions: new ChatCompletions(this) };
  /** OpenAI-shaped text completions: create({ prompt, … }). */
  readonly completions: Completions = new Completions(this);

  private constructor(private engine: Engine, checkpoint: Checkpoint, info: ModelInfo, private heads: Heads,
    private readonly placing: Placing, private readonly retaining: RetainingHeadsOf, private readonly prefillChunk: number | undefined, private readonly notice: (m: string) => void) {
    this.tokenizer = checkpoint.tokenizer;
    this.eosTokenIds = checkpoint.eosTokenIds;
    this.info = info;
  }

  /** Loads a checkpoint from `files` and places it (the entries wrap this with their sources). */
  static async create(files: ModelFiles, options: ModelOptions, env: Environment): Promise<DuetModel> {
    const progress = options.onProgress ?? (() => {});
    const notice = options.notice ?? (() => {});
    if (options.weights !== undefined && !isWeightDType(options.weights)) {
      throw new DuetError('weights', `must be one of ${WEIGHT_DTYPES.join(', ')} (got ${JSON.stringify(options.weights)})`);
    }
    const kvDtype = kvDTypeOption(options.kvDtype);
    const checkpoint = await loadCheckpoint(files, {
      // Matmul weights are stored in their format as each tensor is read (no f32 copy of the model).
      weights: loaderWeights(options, files),
      ...options.checkpoint,
      onProgress: (done, total, tensor) => progress({ step: 'weights', done, total, detail: tensor }),
    });
    const { config } = checkpoint;
    const limit = options.contextLength ?? config.maxPositionEmbeddings;
    if (!(Number.isInteger(limit) && limit >= 1 && limit <= config.maxPositionEmbeddings)) {
      throw new DuetError('contextLength', `must be an integer from 1 to the model's max_position_embeddings ${config.maxPositionEmbeddings} (got ${limit})`);
    }
    const heads = await headsFor(options, config, progress);
    const retaining = new RetainingHeadsOf(files, config);
    const gpuDevice = options.gpuDevice;
    const placing: Placing = {
      files, options, limit,
      engine: {
        weights: options.weights, kvDtype, device: options.device, placement: options.placement, notice,
        offload: options.offload === true ? {} : options.offload || undefined,
        acquireGpu: gpuDevice ? async () => ({ gpu: new GpuContext(gpuDevice, 'the GPUDevice given by the caller', { ownsDevice: false }), reason: '' }) : env.acquireGpu,
        createCpu: env.createCpu, offloadThreads: env.offloadThreads,
      },
    };
    progress({ step: 'engine', done: 0, total: 1 });
    const engine = await Engine.create(config, checkpoint.weights, { ...placing.engine, ...await retaining.engineHeads(heads) });
    try {
      placing.limit = fitContext(engine, options.contextLength, options.prefillChunk, notice);
    } catch (e) {
      engine.dispose();
      throw e;
    }
    progress({ step: 'engine', done: 1, total: 1 });
    return new DuetModel(engine, checkpoint, modelInfo(engine, checkpoint, heads, placing), heads, placing, retaining, options.prefillChunk, notice);
  }

  /**
   * Places the model again with other heads (a pattern, its sparsity, streaming only, the window),
   * keeping the other load options; without head options, full attention. Waits for the generation
   * in progress. The weights are read again from the model's files (no host copy is kept), so the
   * devices never hold two placements at once. A no-op when the heads are those already placed.
   */
  async setHeads(options: HeadSettings = {}, onProgress?: (event: ProgressEvent) => void): Promise<void> {
    const progress = onProgress ?? (() => {});
    const heads = await headsFor(options, this.info.config, progress);
    const engineHeads = await this.retaining.engineHeads(heads);
    if (sameHeads(heads, this.heads)) { this.info = { ...this.info, heads: heads.description + offloadDescription(this.engine) + describePromoted(this.info.config, this.engine.model.methods) }; return; }
    let release!: () => void;
    const turn = this.queue;
    this.queue = new Promise<void>((r) => { release = r; });
    try {
      await turn;
      if (this.disposed) throw new DuetError(null, 'the model was disposed');
      const { files, options: o, engine: engineOptions } = this.placing;
      const checkpoint = await loadCheckpoint(files, {
        weights: loaderWeights(o, files), ...o.checkpoint, onProgress: (done, total, tensor) => progress({ step: 'weights', done, total, detail: tensor }),
      });
      this.engine.dispose();
      try {
        progress({ step: 'engine', done: 0, total: 1 });
        this.engine = await Engine.create(checkpoint.config, checkpoint.weights, { ...engineOptions, ...engineHeads });
        try {
          this.placing.limit = fitContext(this.engine, o.contextLength, this.prefillChunk, this.notice);
        } catch (e) {
          this.engine.dispose();
          throw e;
        }
        progress({ step: 'engine', done: 1, total: 1 });
      } catch (e) {
        // The old placement is gone: the model cannot generate any more.
        this.disposed = true;
        throw e;
      }
      this.heads = heads;
      this.info = modelInfo(this.engine, checkpoint, heads, this.placing);
    } finally {
      release();
    }
  }

  /** The head options of the current placement (its pattern parsed): setHeads(model.currentHeads()) comes back to it. */
  currentHeads(): HeadOptions {
    const o = this.heads.options;
    return { ...o, window: o.window && { ...o.window }, locret: o.locret && { ...o.locret }, methods: o.methods?.map((row) => [...row]) };
  }

  /**
   * Perplexity of the model on `text` under its current heads: every token after the first is
   * predicted from the ones before it, one decode step at a time, so streaming heads see exactly the
   * sink + recent window (and compensation, if any) they see when generating. Natural-log NLL.
   */
  async perplexity(text: Prompt, options: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {}): Promise<PerplexityResult> {
    const ids = this.encode(text);
    if (ids.length < 2) throw new DuetError('text', `needs at least 2 tokens to score (got ${ids.length})`);
    if (ids.length > this.info.contextLength) {
      throw new DuetError('text', `has ${ids.length} tokens, more than the context length ${this.info.contextLength}`, 'context_length_exceeded');
    }
    let release!: () => void;
    const turn = this.queue;
    this.queue = new Promise<void>((r) => { release = r; });
    try {
      await turn;
      if (this.disposed) throw new DuetError(null, 'the model was disposed');
      const session = this.engine.newSession(ids.length, 1);
      try {
        let nll = 0;
        for (let i = 0; i + 1 < ids.length; i++) {
          if (options.signal?.aborted) throw new DuetError(null, 'perplexity was aborted');
          const logits = await session.forward([ids[i]]);
          nll += negativeLogLikelihood(logits, ids[i + 1]);
          options.onProgress?.(i + 1, ids.length - 1);
          if (i % 64 === 63) await yieldToEventLoop();
        }
        const scored = ids.length - 1;
        return { tokens: scored, meanNll: nll / scored, perplexity: Math.exp(nll / scored) };
      } finally {
        session.dispose();
      }
    } finally {
      release();
    }
  }

  /** Prompt token ids: text is tokenized (with BOS), messages go through the chat template. */
  encode(prompt: Prompt): number[] {
    if (Array.isArray(prompt)) {
      const vocab = this.info.config.vocabSize;
      for (const id of prompt) if (!(Number.isInteger(id) && id >= 0 && id < vocab)) throw new DuetError('prompt', `token id ${id} is outside the vocabulary (0..${vocab - 1})`);
      return prompt;
    }
    const tok = this.tokenizer;
    if (!tok) throw new DuetError('prompt', 'must be token ids: the model has no tokenizer.json', 'unavailable');
    if (typeof prompt === 'string') {
      if (prompt === '') throw new DuetError('prompt', 'is empty');
      return tok.encode(prompt);
    }
    if (tok.hasChatTemplate) return tok.encode(tok.applyChatTemplate(prompt.messages, { addGenerationPrompt: true }), { addSpecialTokens: false });
    // No template (the bundled model): the messages' texts one per line, as plain text.
    this.noticeOnce('the model has no chat template; chat messages are joined as plain text');
    return tok.encode(prompt.messages.map((m) => m.content).join('\n'));
  }

  private noticed = new Set<string>();
  private noticeOnce(m: string): void {
    if (!this.noticed.has(m)) { this.noticed.add(m); this.notice(m); }
  }

  /**
   * Generates from a prompt. Generations on one model run one at a time, in the order they are
   * first iterated (each waits for the previous to end); one aborted while waiting never prefills.
   */
  generate(prompt: Prompt, options: GenerateOptions = {}): Generation {
    const ids = this.encode(prompt);
    const limit = this.info.contextLength;
    if (ids.length === 0) throw new DuetError('prompt', 'is empty');
    if (ids.length >= limit) {
      throw new DuetError('prompt', `has ${ids.length} tokens; the context length is ${limit}, leaving no room to generate`, 'context_length_exceeded');
    }
    const asked = options.maxTokens ?? 256;
    if (!(Number.isInteger(asked) && asked >= 1)) throw new DuetError('maxTokens', `must be a positive integer (got ${asked})`);
    const maxTokens = Math.min(asked, limit - ids.length);
    const stops = options.stop === undefined ? [] : Array.isArray(options.stop) ? options.stop : [options.stop];
    for (const s of stops) if (typeof s !== 'string' || s === '') throw new DuetError('stop', 'must be non-empty strings');
    const stopIds = options.stopIds ?? [];
    for (const id of stopIds) if (!Number.isInteger(id)) throw new DuetError('stopIds', `must be token ids (got ${id})`);
    const eos = options.ignoreEos ? [] : this.eosTokenIds;
    if (this.disposed) throw new DuetError(null, 'the model was disposed');
    const sampling = { temperature: options.temperature ?? 0, topK: options.topK, topP: options.topP, seed: options.seed ?? 0 };
    // Checked now, so a bad value fails the call rather than the first iteration.
    new Sampler(sampling);

    const self = this;
    return new Generation(async function* (finish) {
      // The turn is taken when the generation starts, so one that is never iterated holds nothing.
      let release!: () => void;
      const turn = self.queue;
      self.queue = new Promise<void>((r) => { release = r; });
      try {
        await turn;
        if (self.disposed) throw new DuetError(null, 'the model was disposed');
        const user = options.signal;
        const control = new AbortController();
        const onAbort = () => control.abort();
        if (user?.aborted) control.abort();
        user?.addEventListener('abort', onAbort);
        try {
          yield* self.run(ids, { ...sampling, maxTokens, stopIds: [...eos, ...stopIds], signal: control.signal }, stops, new Set(eos), maxTokens < asked, control, finish);
        } finally {
          user?.removeEventListener('abort', onAbort);
        }
      } finally {
        release();
      }
    });
  }

  private async *run(ids: number[], o: { maxTokens: number; stopIds: number[]; signal: AbortSignal; temperature: number; topK?: number; topP?: number; seed: number },
    stops: string[], eos: Set<number>, clamped: boolean, control: AbortController, finish: (s: GenerationStats) => void): AsyncGenerator<TokenDelta, void> {
    const t0 = performance.now();
    const before = await this.work();
    const decoder = this.tokenizer?.streamDecoder() ?? null;
    const text = new StopText(stops);
    let firstTokenMs = 0;
    const it = this.engine.stream(ids, { ...o, prefillChunk: this.prefillChunk });
    let step = await it.next();
    let stoppedByString = false, failed = false;
    try {
      while (!step.done) {
        const id = step.value;
        if (!firstTokenMs) firstTokenMs = performance.now() - t0;
        const piece = text.push(decoder ? decoder.push(id) : '');
        yield { id, text: piece };
        // CPU work resolves its promises at once: let timers, I/O and other requests in between tokens.
        await yieldToEventLoop();
        if (text.stoppedAt !== null && !stoppedByString) { stoppedByString = true; control.abort(); }
        step = await it.next();
      }
    } catch (e) {
      failed = true;
      throw e;
    } finally {
      if (!failed) {
        // Stopped by the caller (break): the engine sees the abort, ends and frees its session.
        if (!step.done) { control.abort(); step = await it.next(); }
        if (step.done) finish(await this.summarise(step.value, ids.length, o.maxTokens, { decoder, text, stoppedByString, eos, clamped, before, t0, firstTokenMs }));
      }
    }
  }

  private async summarise(r: GenerationResult, promptTokens: number, maxTokens: number, s: {
    decoder: StreamDecoder | null; text: StopText; stoppedByString: boolean; eos: Set<number>; clamped: boolean;
    before: { gpu: number; cpu: number }; t0: number; firstTokenMs: number;
  }): Promise<GenerationStats> {
    if (s.decoder && r.tokens.length > 0) s.text.push(s.decoder.flush());
    s.text.flush();
    const last = r.tokens[r.tokens.length - 1];
    const stoppedBy: GenerationStats['stoppedBy'] = s.stoppedByString ? 'stop_string'
      : r.stopReason === 'aborted' ? 'signal'
      : r.stopReason === 'eos' ? (s.eos.has(last) ? 'eos' : 'stop_id')
      : r.stopReason === 'max_positions' || s.clamped ? 'context' : 'max_tokens';
    const finishReason: FinishReason = stoppedBy === 'signal' ? 'abort' : stoppedBy === 'max_tokens' || stoppedBy === 'context' ? 'length' : 'stop';
    const after = await this.work();
    const c = this.info.config;
    const capacity = Math.min(this.info.contextLength, promptTokens + maxTokens);
    const fullAttention = projectModelKv(c, allHeads(c.numLayers, c.numKvHeads, true), capacity, { sink: 0, recent: 1 }, this.engine.kvDtype).full_bytes;
    const stats: GenerationStats = {
      text: s.decoder ? s.text.output : '', tokens: r.tokens, finishReason, stoppedBy,
      usage: { promptTokens, completionTokens: r.tokens.length, totalTokens: promptTokens + r.tokens.length },
      timings: { prefillMs: r.prefillMs, decodeMsPerToken: r.decodeMsPerToken, timeToFirstTokenMs: s.firstTokenMs, totalMs: performance.now() - s.t0 },
      kv: {
        gpu: r.kv.byDevice.gpu, cpu: r.kv.byDevice.cpu, retrieval: r.kv.retrievalBytes, streaming: r.kv.streamingBytes, fullAttention,
        offloaded: r.kv.hostBytes,
        sampledFraction: r.kv.sampling && r.kv.sampling.sampled.map((n, t) => (r.kv.sampling!.offloaded[t] ? n / r.kv.sampling!.offloaded[t] : 0)),
      },
      work: { gpuDispatches: after.gpu - s.before.gpu, cpuKernelCalls: after.cpu - s.before.cpu },
      counters: r.gpu ? { ...perTokenCounters(r.gpu.decode, r.gpu.decodeSteps), decodeTokens: r.gpu.decodeSteps, prefill: r.gpu.prefill, decode: r.gpu.decode } : null,
    };
    this.last = stats;
    return stats;
  }

  private async work(): Promise<{ gpu: number; cpu: number }> {
    const cpu = this.engine.cpu as CpuLike & { refresh?: () => Promise<void> };
    if (cpu.refresh) await cpu.refresh();
    return { gpu: this.engine.gpu?.dispatches ?? 0, cpu: cpu.kernelCalls };
  }

  /** The model's placement and the last generation's statistics. */
  stats(): { model: ModelInfo; last: GenerationStats | null } {
    return { model: this.info, last: this.last };
  }

  /** Frees the devices (after the generation in progress, if any). */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.queue;
    this.engine.dispose();
  }
}

/** Head options as setHeads takes them: the pattern parsed or as its folder's files. */
export interface HeadSettings extends Omit<HeadOptions, 'pattern'> {
  pattern?: HeadPattern | PatternFiles;
}

/** What a model keeps to place itself again: its files, load options and engine options (without heads). */
interface Placing { files: ModelFiles; options: ModelOptions; limit: number; engine: Omit<EngineOptions, 'kinds' | 'window' | 'compensation' | 'methods' | 'locret'> }

/** The heads resolved, with the options (pattern parsed) that give them. */
type Heads = ResolvedHeads & { options: HeadOptions };

async function headsFor(o: HeadSettings, config: ModelConfig, progress: (e: ProgressEvent) => void): Promise<Heads> {
  let pattern: HeadPattern | undefined, patternName = 'pattern';
  if (o.pattern && 'alphas' in o.pattern) pattern = o.pattern;
  else if (o.pattern) {
    progress({ step: 'pattern', done: 0, total: 1 });
    pattern = await loadPattern(o.pattern, config.numLayers, config.numKvHeads);
    patternName = `pattern ${o.pattern.name}`;
    progress({ step: 'pattern', done: 1, total: 1 });
  }
  const options: HeadOptions = {
    pattern, sparsity: o.sparsity, streamingOnly: o.streamingOnly, window: o.window && { ...o.window }, compensation: o.compensation,
    locret: o.locret && { ...o.locret }, methods: o.methods?.map((row) => [...row]),
  };
  return { ...resolveHeads(options, config.numLayers, config.numKvHeads, patternName), options };
}

function sameHeads(a: ResolvedHeads, b: ResolvedHeads): boolean {
  const ma = a.methods ?? methodsOfKinds(a.kinds), mb = b.methods ?? methodsOfKinds(b.kinds);
  return a.window?.sink === b.window?.sink && a.window?.recent === b.window?.recent && a.compensation === b.compensation
    && a.locret?.budget === b.locret?.budget && a.locret?.stabilizers === b.locret?.stabilizers
    && ma.length === mb.length && ma.every((row, l) => row.length === mb[l].length && row.every((m, h) => m === mb[l][h]));
}

function modelInfo(engine: Engine, checkpoint: Checkpoint, heads: ResolvedHeads, placing: Placing): ModelInfo {
  const { config } = checkpoint;
  return {
    id: placing.options.id ?? checkpoint.name, config, placement: engine.placement, device: engine.deviceDescription, cpu: engine.cpu.description,
    // A DHA model's marked-streaming query heads that share a key head with a retrieval head attend in full (src/engine/layer-groups.ts).
    heads: heads.description + offloadDescription(engine) + describePromoted(config, engine.model.methods),
    streamingHeads: countStreaming(heads.kinds) - promotedHeads(config, engine.model.methods).reduce((n, p) => n + p.length, 0),
    kvHeads: config.numLayers * config.numKvHeads,
    window: heads.window ?? null, contextLength: placing.limit,
    hasTokenizer: checkpoint.tokenizer !== null, hasChatTemplate: checkpoint.tokenizer?.hasChatTemplate ?? false,
    weights: { dtype: engine.model.weightDType, bytes: engine.model.weightBytes },
    kvDtype: engine.kvDtype,
    autoPlacement: engine.autoPlacement,
    offload: placing.engine.offload ?? null,
  };
}

/**
 * The context length a placement can hold, planned before any KV cache is allocated: the length
 * asked for, refused when its KV cache cannot fit the CPU backend's WebAssembly memory; by default the
 * model's max_position_embeddings, lowered (with a notice) to what fits, so a long prompt is refused
 * up front instead of failing an allocation halfway through a generation.
 */
function fitContext(engine: Engine, asked: number | undefined, prefillChunk: number | undefined, notice: (m: string) => void): number {
  const m = engine.model;
  const shape: PlacementShape = {
    config: engine.config, kinds: m.kinds, methods: m.methods, window: m.window, main: m.main.kind, streaming: m.streamingBackend.kind,
    kvDtype: engine.kvDtype, compensation: m.compensation, locret: m.locret, magicpig: m.magicpig,
  };
  const context = asked ?? engine.config.maxPositionEmbeddings;
  const rows = Math.min(prefillChunk ?? 512, context);
  const plan = planMemory(shape, m.weightBytes, context, rows);
  if (cpuBackendBytes(plan) <= CPU_PLAN_LIMIT) return context;
  const fits = maxCpuContext(shape, m.weightBytes, context, rows);
  if (asked !== undefined || fits === 0) checkCpuPlan(plan, 'contextLength', String(context), fits ? `at most ${fits} tokens fit` : 'not even one token fits');
  notice(`context length ${fits} tokens, not the model's max_position_embeddings ${context}: a KV cache for all of them would need ${describeCpu(plan)} of WebAssembly memory (4 GiB); choose with the contextLength option`);
  return fits;
}

/** Resolves after pending macrotasks (I/O, timers, UI events) had their turn. */
function yieldToEventLoop(): Promise<void> {
  const g = globalThis as { setImmediate?: (f: () => void) => void };
  if (g.setImmediate) return new Promise((r) => g.setImmediate!(r));
  return new Promise((r) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => { channel.port1.close(); r(); };
    channel.port2.postMessage(null);
  });
}

/** "; retrieval heads offloaded (MagicPIG K 10 × L 150, 4 sinks + 64 local, layers 0 dense)" when they are. */
function offloadDescription(engine: Engine): string {
  const s = engine.model.magicpig;
  if (!s) return '';
  const dense = engine.model.methods.flatMap((row, l) => (row.includes('full') && row.every((n) => n !== 'magicpig') ? [l] : []));
  return `; retrieval heads offloaded (${describeOffload(s)}${dense.length ? `, layers ${dense.join(',')} dense` : ''})`;
}

/**
 * The engine's head options for resolved heads: kinds, window, compensation, and for locret heads
 * the method names and the retaining heads, read from beside the model the first time they are needed.
 */
class RetainingHeadsOf {
  private heads: Promise<RetainingHeads> | null = null;
  constructor(private readonly files: ModelFiles, private readonly config: ModelConfig) {}

  async engineHeads(h: ResolvedHeads): Promise<Pick<EngineOptions, 'kinds' | 'window' | 'compensation' | 'methods' | 'locret'>> {
    const base = { window: h.window, compensation: h.compensation };
    if (!h.methods) return { ...base, kinds: h.kinds };
    if (!h.locret) return { ...base, methods: h.methods };
    this.heads ??= loadLocretHeads(this.files, this.config).then((r) => r.heads);
    let heads: RetainingHeads;
    try {
      heads = await this.heads;
    } catch (e) {
      this.heads = null;
      throw new DuetError('locret', `needs the model's retaining heads: ${(e as Error).message}`, 'unavailable');
    }
    return { ...base, methods: h.methods, locret: { ...h.locret, heads } };
  }
}
