// Training Locret's retaining heads with the backbone frozen, after Locret's train.py: each step
// draws one task prompt with its answer (seeded by the step, so a run is reproducible and a longer
// run repeats a shorter one's data), labels it with a full-attention run of the frozen model
// (labels.ts: the answer tokens' queries vote), and takes one AdamW step on Locret's loss over every
// layer (loss.ts). As in Locret: batch of one sequence, betas (0.9, 0.95), weight decay 0.01
// (PyTorch's AdamW default, which Locret keeps), gradients clipped by *value* at 0.5. Unlike Locret:
// Duet's task prompts instead of LongAlpaca conversations, f32 instead of bf16, and Duet's
// schedule (linear warm-up, cosine decay to a floor) instead of 2,000 warm-up steps of 3,000.
import { DuetError } from '../../errors.js';
import { fillerStyleFor, tokenCounter } from '../../eval/evaluate.js';
import { taskSample } from '../../identify/data.js';
import type { GpuContext } from '../../gpu/context.js';
import { frozenGpuModel, frozenModel } from '../../identify/frozen.js';
import { loadCheckpoint } from '../../model/checkpoint.js';
import type { ModelConfig } from '../../model/config.js';
import type { ModelFiles } from '../../model/files.js';
import type { TextTokenizer } from '../../model/tokenizer.js';
import { Random } from '../../tasks/random.js';
import { TASK_KINDS, type TaskKind } from '../../tasks/tasks.js';
import { AdamW, learningRate, type Schedule } from '../../train/adamw.js';
import { MIN_LENGTH } from '../../train/data.js';
import type { NamedTensor, TrainModel } from '../../train/model.js';
import type { LocretTraining } from './file.js';
import { locretExample, type LocretExample } from './labels.js';
import { locretLoss } from './loss.js';
import { rankingQuality, rankingQualityOf, recencyScores, type RankingQuality } from './quality.js';
import {
  initRetainingHeads, retainingBackward, retainingForward, retainingHeadShape, type RetainingHeadShape, type RetainingHeads,
} from './retaining-heads.js';

/** Locret's clip_grad_value_ limit. */
export const LOCRET_GRAD_CLIP = 0.5;

/** Clamps every value to [−limit, limit] in place; returns how many were clamped. */
export function clipByValue(g: Float32Array, limit: number): number {
  let clipped = 0;
  for (let i = 0; i < g.length; i++) {
    if (g[i] > limit) { g[i] = limit; clipped++; } else if (g[i] < -limit) { g[i] = -limit; clipped++; }
  }
  return clipped;
}

export interface LocretOptimizerOptions {
  schedule: Schedule;
  weightDecay: number;
  /** Value clip for every gradient entry. */
  clip: number;
}

export interface LocretStepReport {
  /** 1-based. */
  step: number;
  loss: number;
  smoothL1: number;
  /** Locret's smoothness term before its weight. */
  smoothness: number;
  lr: number;
  /** Gradient entries clamped by the value clip. */
  clipped: number;
  /** Labelled tokens of the step's sequence. */
  tokens: number;
  ms: number;
}

/**
 * Every layer's retaining head in one flat parameter array (layer by layer, fc1 then fc2), its
 * gradient and an AdamW over it. `heads` views the parameters, so it always holds the current weights.
 */
export class LocretTrainer {
  readonly params: Float32Array;
  /** The last step's gradients, after clipping. */
  readonly grads: Float32Array;
  readonly heads: RetainingHeads;
  readonly opt: AdamW;

  constructor(readonly shape: RetainingHeadShape, numLayers: number, seed: number, readonly o: LocretOptimizerOptions) {
    const init = initRetainingHeads(shape, numLayers, seed);
    const per = shape.hidden * shape.inDim + shape.outDim * shape.hidden;
    this.params = new Float32Array(per * numLayers);
    this.grads = new Float32Array(this.params.length);
    const named: NamedTensor[] = [];
    this.heads = {
      layers: init.layers.map((p, l) => {
        const o1 = l * per, o2 = o1 + p.fc1.length;
        const fc1 = this.params.subarray(o1, o2), fc2 = this.params.subarray(o2, o2 + p.fc2.length);
        fc1.set(p.fc1); fc2.set(p.fc2);
        named.push({ name: `layers.${l}.fc1.weight`, shape: [shape.hidden, shape.inDim], data: fc1, decay: true, offset: o1 },
          { name: `layers.${l}.fc2.weight`, shape: [shape.outDim, shape.hidden], data: fc2, decay: true, offset: o2 });
        return { ...shape, fc1, fc2 };
      }),
    };
    // Norm clipping off (Infinity): the value clip is applied before the update.
    this.opt = new AdamW(this.params, named, { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: o.weightDecay, clip: Infinity });
  }

  /** Locret's loss of one example and its gradients in `grads`, clipped by value. */
  gradients(ex: LocretExample): Omit<LocretStepReport, 'step' | 'lr' | 'ms'> {
    const layers = this.heads.layers;
    if (ex.layers.length !== layers.length) throw new Error(`locret example has ${ex.layers.length} layers, the retaining heads ${layers.length}`);
    const fwds = layers.map((p, l) => retainingForward(p, ex.layers[l].x, ex.tokens));
    const loss = locretLoss(fwds.map((f, l) => ({ scores: f.scores, labels: ex.layers[l].labels })), ex.tokens, this.shape.outDim);
    const per = this.params.length / layers.length;
    layers.forEach((p, l) => {
      const g = retainingBackward(p, ex.layers[l].x, fwds[l], loss.grads[l]);
      this.grads.set(g.fc1, l * per);
      this.grads.set(g.fc2, l * per + g.fc1.length);
    });
    const clipped = clipByValue(this.grads, this.o.clip);
    return { loss: loss.loss, smoothL1: loss.smoothL1, smoothness: loss.smoothness, clipped, tokens: ex.tokens };
  }

  /** One optimizer step on one example; refuses to update on a non-finite loss or gradient. */
  step(ex: LocretExample): LocretStepReport {
    const t0 = performance.now();
    const step = this.opt.step;
    const r = this.gradients(ex);
    const lr = learningRate(step, this.o.schedule);
    if (!Number.isFinite(r.loss) || !this.grads.every(Number.isFinite)) {
      throw new Error(`locret training diverged at step ${step + 1}: loss ${r.loss} (learning rate ${lr.toExponential(2)}); stopped without saving`);
    }
    this.opt.update(this.grads, lr);
    return { ...r, step: step + 1, lr, ms: performance.now() - t0 };
  }
}

/** A training sequence: a task prompt of about `length` tokens (the labelled prefix) with its answer appended. */
export interface LocretSequence { ids: Int32Array; prefix: number; description: string }

export interface LocretDataOptions {
  tasks: readonly TaskKind[];
  /** [min, max] prompt tokens. */
  lengths: [number, number];
}

/** The data source: prompts from the task generator in the model's tokenizer (src/identify/data.ts). */
export function locretSequences(tokenizer: TextTokenizer, o: LocretDataOptions): (r: Random) => LocretSequence {
  const style = fillerStyleFor(tokenizer), counter = tokenCounter(tokenizer);
  return (r) => {
    const s = taskSample(tokenizer, r, r.int(o.lengths[0], o.lengths[1] + 1), o.tasks, style, counter);
    // answerRows[0] is the last prompt token (it predicts the first answer token): the prompt ends there.
    return { ids: s.ids, prefix: s.answerRows[0] + 1, description: s.description };
  };
}

/** Seeds of the held-out sequences start here, far from any training step's seed. */
const HELD_OUT = 1_000_000_007;

export interface LocretTrainOptions {
  /** Optimizer steps, one sequence each (default 400). */
  steps?: number;
  /** Peak learning rate (default 2e-3). */
  lr?: number;
  /** Warm-up steps (default a tenth of the steps). */
  warmup?: number;
  /** Longest prompt in tokens (default 1024); prompts are drawn from [seqLen/2, seqLen]. */
  seqLen?: number;
  seed?: number;
  /** Retaining-head hidden size (default defaultRetainingHidden). */
  hidden?: number;
  /** Task kinds (default passkey, niah-single, niah-multikey: the bundled model's). */
  tasks?: TaskKind[];
  /** Held-out sequences scored before and after training (default 8; 0 skips). */
  evalSamples?: number;
  onStep?: (r: LocretStepReport) => void;
  /** Held-out scoring: done of total sequences labelled. */
  onEval?: (done: number, total: number) => void;
}

export interface LocretTrainResult {
  heads: RetainingHeads;
  /** What locret.json records under "training". */
  training: LocretTraining;
  reports: LocretStepReport[];
  /**
   * Held-out ranking quality of the initial and the trained heads, and of a recency baseline (later
   * tokens score higher); null with evalSamples 0.
   */
  heldOut: { before: RankingQuality; after: RankingQuality; recency: RankingQuality; samples: number } | null;
}

function intOpt(v: number | undefined, field: string, min: number, fallback: number): number {
  const x = v ?? fallback;
  if (!Number.isInteger(x) || x < min) throw new DuetError(field, `must be an integer ≥ ${min} (got ${x})`);
  return x;
}

/** Checks the options before any work and fills in the defaults; maxLength: the model's positions. */
export function locretTrainSettings(o: LocretTrainOptions, maxLength: number) {
  const steps = intOpt(o.steps, 'steps', 1, 400);
  const lr = o.lr ?? 2e-3;
  if (!(typeof lr === 'number' && Number.isFinite(lr) && lr > 0)) throw new DuetError('lr', `must be a positive number (got ${lr})`);
  const seqLen = intOpt(o.seqLen, 'seqLen', 32, 1024);
  if (seqLen > maxLength) throw new DuetError('seqLen', `${seqLen} is longer than the model's ${maxLength} positions`);
  const tasks = o.tasks ?? ['passkey', 'niah-single', 'niah-multikey'];
  if (!Array.isArray(tasks) || tasks.length === 0) throw new DuetError('tasks', `must list task kinds from ${TASK_KINDS.join(', ')}`);
  for (const t of tasks) if (!TASK_KINDS.includes(t)) throw new DuetError('tasks', `must be task kinds from ${TASK_KINDS.join(', ')} (got ${JSON.stringify(t)})`);
  const lengths: [number, number] = [Math.ceil(seqLen / 2), seqLen];
  // MIN_LENGTH counts the bundled model's character tokens; subword tokenizers need fewer, so the
  // check errs on the safe side (the generator would otherwise fail mid-run).
  for (const t of tasks) {
    if (MIN_LENGTH[t] > lengths[0]) throw new DuetError('seqLen', `${seqLen} is too short for ${t} prompts (drawn from ${lengths[0]}–${lengths[1]} tokens; ${t} needs ${MIN_LENGTH[t]}): use at least ${2 * MIN_LENGTH[t]} or leave ${t} out of the tasks`);
  }
  return {
    steps, lr, seqLen, tasks, lengths,
    seed: intOpt(o.seed, 'seed', -(2 ** 31), 0),
    warmup: intOpt(o.warmup, 'warmup', 0, Math.ceil(steps / 10)),
    evalSamples: intOpt(o.evalSamples, 'evalSamples', 0, 8),
  };
}

/** Mean loss over ten equal stretches of the run (fewer with fewer steps), for the record. */
function lossCurve(reports: LocretStepReport[]): number[] {
  const parts = Math.min(10, reports.length), out: number[] = [];
  for (let p = 0; p < parts; p++) {
    const a = Math.floor((p * reports.length) / parts), b = Math.floor(((p + 1) * reports.length) / parts);
    out.push(reports.slice(a, b).reduce((s, r) => s + r.loss, 0) / (b - a));
  }
  return out;
}

/** Rows a training model needs beyond the longest prompt, for the appended answer. */
export const ANSWER_ROOM = 64;

/**
 * Trains retaining heads for the frozen `model` (see the top of this file). `model.c.maxRows` must
 * hold the longest prompt plus its answer: seqLen + ANSWER_ROOM.
 */
export async function trainRetainingHeads<T>(model: TrainModel<T>, tokenizer: TextTokenizer, o: LocretTrainOptions = {}): Promise<LocretTrainResult> {
  const s = locretTrainSettings(o, Infinity);
  if (s.seqLen + ANSWER_ROOM > model.c.maxRows) throw new DuetError('seqLen', `${s.seqLen} needs a model built for ${s.seqLen + ANSWER_ROOM} rows (prompt and answer); this one has ${model.c.maxRows}`);
  const t0 = performance.now();
  const c = model.c;
  const shape = retainingHeadShape({ numHeads: c.heads, numKvHeads: c.kvHeads, headDim: c.headDim, hiddenSize: c.hidden }, o.hidden);
  const trainer = new LocretTrainer(shape, c.layers, s.seed, {
    schedule: { lr: s.lr, warmup: s.warmup, steps: s.steps, minLrFraction: 0.1 }, weightDecay: 0.01, clip: LOCRET_GRAD_CLIP,
  });
  const next = locretSequences(tokenizer, s);
  const example = async (seed: number) => {
    const seq = next(new Random(seed));
    return locretExample(model, seq.ids, seq.prefix);
  };
  const heldOutSeeds = Array.from({ length: s.evalSamples }, (_, i) => HELD_OUT + s.seed * 7_919 + i);
  const heldOutExamples = async () => {
    const out: LocretExample[] = [];
    for (const seed of heldOutSeeds) { out.push(await example(seed)); o.onEval?.(out.length, heldOutSeeds.length); }
    return out;
  };
  const held = s.evalSamples > 0 ? await heldOutExamples() : [];
  const before = held.length ? rankingQuality(trainer.heads, held) : null;
  const recency = held.length ? rankingQualityOf(held, (ex) => recencyScores(ex.tokens, shape.outDim)) : null;
  const reports: LocretStepReport[] = [];
  for (let step = 0; step < s.steps; step++) {
    const r = trainer.step(await example(s.seed * 7_919 + step));
    reports.push(r);
    o.onStep?.(r);
  }
  const after = held.length ? rankingQuality(trainer.heads, held) : null;
  const heldOut = before && after && recency ? { before, after, recency, samples: s.evalSamples } : null;
  const curve = lossCurve(reports);
  const training: LocretTraining = {
    steps: s.steps, seed: s.seed, lr: s.lr, warmup: s.warmup, schedule: 'linear warm-up, cosine to 10%', optimizer: 'AdamW betas 0.9/0.95 weight decay 0.01',
    grad_clip_value: LOCRET_GRAD_CLIP, tasks: s.tasks, prompt_tokens: s.lengths,
    labels: 'max attention of the answer tokens\' queries (strictly later) over each KV head\'s query group',
    loss_first: reports[0].loss, loss_last: reports[reports.length - 1].loss, loss_curve: curve,
    seconds: Math.round((performance.now() - t0) / 100) / 10,
    ...(heldOut ? { held_out: { samples: heldOut.samples, untrained: heldOut.before, trained: heldOut.after, recency: heldOut.recency } } : {}),
  };
  return { heads: trainer.heads, training, reports, heldOut };
}

/**
 * Loads the checkpoint in `files` as a frozen model — on `gpu` when given (the label forward runs
 * there; the retaining heads' own update stays on the host), else on the CPU — and trains its
 * retaining heads. Returns them with the model's config (what saving checks them against).
 */
export async function trainLocretHeads(files: ModelFiles, o: LocretTrainOptions & {
  onLoad?: (done: number, total: number) => void;
} = {}, gpu: GpuContext | null = null): Promise<LocretTrainResult & { config: ModelConfig; modelName: string; device: 'cpu' | 'gpu' }> {
  const ckpt = await loadCheckpoint(files, { onProgress: o.onLoad });
  if (!ckpt.tokenizer) throw new DuetError('model', 'has no tokenizer.json: the training data are text prompts', 'unavailable');
  const s = locretTrainSettings(o, ckpt.config.maxPositionEmbeddings);
  const rows = s.seqLen + ANSWER_ROOM;
  const model: TrainModel<unknown> = gpu ? frozenGpuModel(gpu, ckpt.config, ckpt.weights, rows) : await frozenModel(ckpt.config, ckpt.weights, rows);
  const r = await trainRetainingHeads(model, ckpt.tokenizer, o);
  r.training.device = gpu ? 'gpu' : 'cpu';
  return { ...r, config: ckpt.config, modelName: ckpt.name, device: gpu ? 'gpu' : 'cpu' };
}
