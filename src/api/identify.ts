// Head identification on a checkpoint: which KV heads are retrieval heads, by DuoAttention's gate
// optimisation, the retrieval score or RazorAttention's echo/induction scores, optionally with the
// ZigzagAttention constraint (whole layers streaming). The result is a pattern (α per KV head) with
// what produced it; the Node entry writes it as a DuoAttention pattern folder.
import type { StreamingWindow } from '../backend/contract.js';
import { fillerStyleFor } from '../eval/evaluate.js';
import { DuetError } from '../errors.js';
import type { GpuContext } from '../gpu/context.js';
import { frozenGpuModel, frozenModel } from '../identify/frozen.js';
import { headScorer } from '../identify/registry.js';
import type { ScorerSettings } from '../identify/scorer.js';
import { zigzag } from '../identify/scores.js';
import { decoupledMaps } from '../engine/layer-groups.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import type { ModelConfig } from '../model/config.js';
import type { ModelFiles } from '../model/files.js';
import { TASK_KINDS, type TaskKind } from '../tasks/tasks.js';
import type { TrainModel } from '../train/model.js';

export const IDENTIFY_METHODS = ['duo', 'retrieval-score', 'razor'] as const;
export type IdentifyMethod = (typeof IDENTIFY_METHODS)[number];

export interface IdentifyOptions {
  method: IdentifyMethod;
  /** Sequence lengths [min, max] in tokens (default [512, 1024]). */
  lengths?: [number, number];
  /** The streaming window the pattern is for (default sink 16, recent 64). */
  window?: Partial<StreamingWindow>;
  seed?: number;
  /** With zigzag: the fraction of KV heads (whole layers) made streaming. Recorded in the pattern's options. */
  sparsity?: number;
  /** ZigzagAttention: every layer all-retrieval or all-streaming (needs sparsity). */
  zigzag?: boolean;
  /** duo: optimisation steps (default 200), AdamW learning rate (0.02), L1 weight on α (0.05). */
  steps?: number;
  lr?: number;
  reg?: number;
  /** duo: 'words' (DuoAttention's passkeys of random words, default) or evaluation task kinds. */
  data?: 'words' | TaskKind[];
  /** retrieval-score: passkey prompts per length (default 4). */
  samples?: number;
  /** razor: fractions of heads kept for their echo (default 0.01) and induction (0.14) scores. */
  echoRatio?: number;
  inductionRatio?: number;
  /** Once the model is loaded and the method starts: the device it runs on and the head grid. */
  onStart?: (info: { method: IdentifyMethod; device: string; layers: number; kvHeads: number }) => void;
  /** weights: tensors read; identify: duo steps (with the loss and its distillation part) or retrieval prompts. */
  onProgress?: (e: { step: 'weights' | 'identify'; done: number; total: number; loss?: number; distill?: number }) => void;
}

/** A pattern found by identification, with what produced it (written by the Node entry's savePattern). */
export interface HeadIdentification {
  /** The method, "+zigzag" when the layer constraint was applied. */
  method: string;
  /** The run's options as recorded in the pattern's config.json and identify.json. */
  options: Record<string, unknown>;
  seed: number;
  /** What the method ran on, in words. */
  data: string;
  /** Score per layer per KV head in [0, 1] (1 = retrieval). */
  alphas: number[][];
  sink: number;
  recent: number;
  seconds: number;
  /** Method details: loss curves, raw scores, the zigzag layers. */
  extra: Record<string, unknown>;
  device: 'cpu' | 'gpu';
}

function int(value: number | undefined, field: string, min: number, fallback: number): number {
  const v = value ?? fallback;
  if (!(Number.isInteger(v) && v >= min)) throw new DuetError(field, `must be an integer ≥ ${min} (got ${v})`);
  return v;
}

function num(value: number | undefined, field: string, fallback: number): number {
  const v = value ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new DuetError(field, `must be a finite number (got ${v})`);
  return v;
}

/** Checks the options (before any work) and fills in the defaults. */
function checked(o: IdentifyOptions): ScorerSettings {
  if (!IDENTIFY_METHODS.includes(o.method)) throw new DuetError('method', `must be one of ${IDENTIFY_METHODS.join(', ')} (got ${JSON.stringify(o.method)})`);
  if (o.sparsity !== undefined && !(o.sparsity >= 0 && o.sparsity <= 1)) throw new DuetError('sparsity', `must be in [0, 1] (got ${o.sparsity})`);
  if (o.zigzag && o.sparsity === undefined) throw new DuetError('zigzag', 'needs sparsity (the fraction of KV heads, i.e. layers, made streaming)');
  const lengths = o.lengths ?? [512, 1024];
  if (!Array.isArray(lengths) || lengths.length !== 2) throw new DuetError('lengths', 'must be [min, max]');
  lengths.forEach((n, i) => int(n, `lengths[${i}]`, 32, 0));
  if (lengths[0] > lengths[1]) throw new DuetError('lengths', `must be [min, max] with min ≤ max (got ${lengths.join(', ')})`);
  const data = o.data ?? 'words';
  if (data !== 'words') {
    if (!Array.isArray(data) || data.length === 0) throw new DuetError('data', `must be "words" or a list of task kinds from ${TASK_KINDS.join(', ')}`);
    for (const k of data) if (!TASK_KINDS.includes(k)) throw new DuetError('data', `must be "words" or task kinds from ${TASK_KINDS.join(', ')} (got ${JSON.stringify(k)})`);
  }
  return {
    lengths: [lengths[0], lengths[1]], data,
    seed: int(o.seed, 'seed', -Infinity, 0),
    sink: int(o.window?.sink, 'window.sink', 0, 16), recent: int(o.window?.recent, 'window.recent', 1, 64),
    steps: int(o.steps, 'steps', 1, 200), lr: num(o.lr, 'lr', 0.02), reg: num(o.reg, 'reg', 0.05),
    samples: int(o.samples, 'samples', 1, 4),
    echoRatio: num(o.echoRatio, 'echoRatio', 0.01), inductionRatio: num(o.inductionRatio, 'inductionRatio', 0.14),
  };
}

/**
 * A DHA model's gate ties (ScorerInput.ties): the query heads of a decoupled layer that read one
 * key head share its gate, since the runtime streams a key head only with all its query heads
 * (src/engine/layer-groups.ts); heads of other layers are their own tie.
 */
function keyHeadTies(config: ModelConfig): Int32Array {
  const ties: number[] = [];
  let next = 0;
  config.dha!.layers.forEach((d, l) => {
    if (decoupledMaps(config, l)) {
      ties.push(...d.queryToKey.map((k) => next + k));
      next += d.keyHeads;
    } else {
      for (let h = 0; h < config.numKvHeads; h++) ties.push(next + h);
      next += config.numKvHeads;
    }
  });
  return Int32Array.from(ties);
}

/**
 * Identifies retrieval heads of the checkpoint in `files`, on `gpu` or (null) the CPU. The entries
 * wrap this with their sources and device choice (identifyHeads in 'duet').
 */
export async function identifyHeadsOn(files: ModelFiles, o: IdentifyOptions, gpu: GpuContext | null): Promise<HeadIdentification> {
  const c = checked(o);
  const progress = o.onProgress ?? (() => {});
  const ckpt = await loadCheckpoint(files, { onProgress: (done, total) => progress({ step: 'weights', done, total }) });
  const tokenizer = ckpt.tokenizer;
  if (!tokenizer) throw new DuetError('model', 'has no tokenizer.json: identification data is text', 'unavailable');
  const style = fillerStyleFor(tokenizer);
  const t0 = performance.now();
  const maxRows = c.lengths[1] + 64;
  const config: ModelConfig = ckpt.config;
  // The methods are generic over the device's tensors; either device's model will do.
  // A DHA checkpoint is identified as its multi-head equivalent: gates per query head (its patterns' nominal columns).
  const model: TrainModel<unknown> = gpu ? frozenGpuModel(gpu, config, ckpt.weights, maxRows, 'expand') : await frozenModel(config, ckpt.weights, maxRows, 'expand');
  o.onStart?.({ method: o.method, device: gpu ? `the GPU (${gpu.adapterDescription})` : 'the CPU (WebAssembly SIMD)', layers: config.numLayers, kvHeads: config.numKvHeads });
  const { lengths, seed, sink, recent } = c;
  const ties = config.dha ? keyHeadTies(config) : undefined;
  const r = await headScorer(o.method).score({
    model, tokenizer, style, eosTokenIds: ckpt.eosTokenIds, settings: c, ties,
    onProgress: (done, total, loss, distill) => progress({ step: 'identify', done, total, ...(loss !== undefined ? { loss, distill } : {}) }),
  });
  let alphas = r.scores;
  const data = r.data;
  const runOptions: Record<string, unknown> = { lengths, sink, recent, ...r.options };
  let extra = r.extra;
  if (o.zigzag) {
    const z = zigzag(alphas, o.sparsity!);
    extra = { ...extra, zigzag: { sparsity: o.sparsity, streaming_layers: z.streamingLayers, scores: alphas } };
    alphas = z.alphas;
  }
  return {
    method: o.zigzag ? `${o.method}+zigzag` : o.method,
    options: { ...runOptions, device: gpu ? 'gpu' : 'cpu', ...(o.sparsity !== undefined ? { sparsity: o.sparsity } : {}) },
    seed, data, alphas, sink, recent, seconds: (performance.now() - t0) / 1000, extra, device: gpu ? 'gpu' : 'cpu',
  };
}
