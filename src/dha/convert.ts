// The DHA conversion of a multi-head checkpoint on Duet's trainer (CPU): head similarity on task
// data → allocation of K and V heads under the budget → fusion training (ω, the multipliers and
// every weight) → collapse to one head per group → continued training of the tied model. The GQA
// baseline (gqa-meanpool) takes uniform contiguous groups, collapses them by mean at once and
// spends the whole token budget on continued training. The `continued` arm keeps every head and
// only continues training the source, the reference for what the tokens alone buy. All arms see the
// same training sequences (the plan's steps) and are scored on the same fixed validation set.
// Everything before the first step (validation set, similarity, allocation) is a pure function of
// the source and the options, so a run resumes from a ConvertState (the stage's parameters,
// optimizer moments, multipliers and the report so far) and ends exactly as an uninterrupted one.
import { AdamW, type Schedule } from '../train/adamw.js';
import { makeSequence, type DataOptions, type Sequence } from '../train/data.js';
import type { TrainConfig, TrainModel } from '../train/model.js';
import { checkPlan, planLearningRate, stepSequences, type GradientHelper, type TrainPlan } from '../train/trainer.js';
import { Random } from '../tasks/random.js';
import type { TaskKind } from '../tasks/tasks.js';
import { allocateHeads, budgetHeads, groupsLayout, SIDES, type HeadGroups, type Merge, type Side } from './allocate.js';
import type { DhaConfig } from './config.js';
import { HeadFusion } from './fusion.js';
import { meanPoolGroups } from './meanpool.js';
import { meanHeadEnergy, measureHeads, mergeCost } from './similarity.js';

export const DHA_METHODS = ['dha', 'gqa-meanpool', 'continued'] as const;
export type DhaMethod = (typeof DHA_METHODS)[number];

export interface ConvertOptions {
  method: DhaMethod;
  /** Kept fraction of the K+V heads (0.5 halves the KV cache); `continued` keeps every head and needs 1. */
  budget: number;
  /** Training tokens in all (DHA: fusion + continued training; the baseline: continued training). */
  tokens: number;
  /** Tokens per optimizer step (whole sequences; default 8,192). */
  tokensPerStep?: number;
  /** DHA: the share of the steps spent in fusion (default 0.5). */
  fusionShare?: number;
  /** Peak AdamW learning rate of the weights (default 1e-3, warm-up then cosine to 10 %, restarted after the collapse). */
  lr?: number;
  /** Learning rate of the fusion weights ω (default 5e-2; the weights' warm-up, then constant). */
  mixLr?: number;
  /** Ascent rate η of the multipliers (default 10). */
  multiplierLr?: number;
  /** DHA: the share of the fusion steps over which the constraint's target falls linearly to 0 (default 0.5; 0 = target 0 from the start). */
  rampShare?: number;
  /** Longest training sequence (default 2,048 or the model's max_position_embeddings). */
  maxLength?: number;
  /** Task mix (default the bundled recipe's last stage: passkey, niah-single, 4× niah-multikey). */
  tasks?: TaskKind[];
  seed?: number;
  /** Sequences of task data the head similarity is measured on (default 8). */
  similaritySequences?: number;
  /** Fixed validation sequences (default 16). */
  validationSequences?: number;
  /** Validation every this many steps (default: about 8 points per stage). */
  evalEvery?: number;
}

export interface ConvertProgress {
  stage: 'similarity' | 'fusion' | 'train' | 'validation';
  step: number;
  steps: number;
  loss?: number;
  /** Fusion: the mean constraint c over the layer sides that merge heads. */
  constraint?: number;
  tokensPerSecond?: number;
}

export interface CurvePoint { stage: 'fusion' | 'train'; step: number; tokens: number; validationLoss: number; constraint?: number }

/** One optimizer step: its training loss (on that step's sequences) after `tokens` training tokens in all. */
export interface HistoryPoint { stage: 'fusion' | 'train'; step: number; tokens: number; loss: number }

export interface ConvertReport {
  method: DhaMethod;
  budget: number;
  keptHeads: number;
  totalHeads: number;
  layout: DhaConfig;
  groups: HeadGroups[];
  /** DHA: the allocation's merges in the order taken. */
  merges: Merge[];
  /** Output error of replacing each layer side's groups by their means, at the original weights (units: the side's average head). */
  collapseCost: Array<Record<Side, number>>;
  steps: { fusion: number; train: number };
  tokens: { fusion: number; train: number; similarity: number; validation: number };
  losses: {
    /** The source model on the validation set. */
    original: number;
    /** DHA: fusion step 0 (identity ω), which must equal `original`. */
    fusionStart: number | null;
    /** DHA: the fused model at the end of fusion, before the collapse. */
    fused: number | null;
    /** Right after the conversion (collapse). */
    converted: number;
    /** After the continued training. */
    final: number;
  };
  /** DHA: the constraint c per layer side when the collapse happened. */
  constraintsAtCollapse: Array<Record<Side, number>> | null;
  /** Validation loss against training tokens (every evalEvery steps, the conversion's start and each stage's end). */
  curve: CurvePoint[];
  /** Every step's training loss against training tokens. */
  history: HistoryPoint[];
  seconds: number;
}

export interface ConvertResult {
  report: ConvertReport;
  /** The DHA checkpoint's tensors (k_proj/v_proj with the kept heads' rows). */
  tensors: Array<{ name: string; shape: number[]; data: Float32Array }>;
  plan: TrainPlan;
}

/** A conversion after `step` optimizer steps: what a resumed run continues from (views, valid during ConvertRun.save). */
export interface ConvertState {
  stage: 'fusion' | 'train';
  /** Optimizer steps done, fusion and training together. */
  step: number;
  /** The stage's DHA parameters (HeadFusion.params, model-shaped) and their AdamW moments. */
  params: Float32Array;
  m: Float32Array;
  v: Float32Array;
  /** Fusion: ω with its AdamW moments, and the multipliers λ, φ. */
  fusion: { mix: Float32Array; mixM: Float32Array; mixV: Float32Array; lambda: Float64Array; phi: Float64Array } | null;
  /** The report so far. */
  progress: {
    fusionTokens: number; trainTokens: number; fusionStart: number | null; fused: number | null; converted: number | null;
    constraintsAtCollapse: Array<Record<Side, number>> | null; curve: CurvePoint[]; history: HistoryPoint[]; seconds: number;
  };
}

/** Saving and resuming (convertToDha in src/node/dha.ts writes the states to disk). */
export interface ConvertRun {
  /** Continue from this state (saved by a run of the same source, plan and options). */
  resume?: ConvertState;
  /** Steps between saves (default never; the state at `until` is always saved). */
  saveEvery?: number;
  save?: (s: ConvertState) => void | Promise<void>;
  /** Stop after this many steps in all (fewer than the plan's): the state is saved and convertHeads returns null. */
  until?: number;
  /**
   * Computes every step's gradients instead of the model and its helpers (`duet dha --device gpu`:
   * GpuGradients); the model then only validates and measures head similarity.
   */
  gradients?: GradientHelper;
}

const DEFAULT_TASKS: TaskKind[] = ['passkey', 'niah-single', 'niah-multikey', 'niah-multikey', 'niah-multikey', 'niah-multikey'];

const positive = (v: number | undefined, field: string, fallback: number) => {
  if (v === undefined) return fallback;
  if (!(typeof v === 'number' && Number.isFinite(v) && v > 0)) throw new Error(`${field} must be a positive number (got ${v})`);
  return v;
};
const integer = (v: number | undefined, field: string, min: number, fallback: number) => {
  if (v === undefined) return fallback;
  if (!(Number.isInteger(v) && v >= min)) throw new Error(`${field} must be an integer ≥ ${min} (got ${v})`);
  return v;
};

/** Fusion and continued-training steps of a conversion. */
export function stageSteps(o: ConvertOptions, tokensPerStep: number): { fusion: number; train: number } {
  const steps = Math.ceil(o.tokens / tokensPerStep);
  if (o.method !== 'dha') return { fusion: 0, train: steps };
  const share = o.fusionShare ?? 0.5;
  if (!(share >= 0 && share <= 1)) throw new Error(`fusionShare must be from 0 to 1 (got ${share})`);
  const fusion = Math.round(steps * share);
  return { fusion, train: steps - fusion };
}

/**
 * Every option of a conversion with its default filled in (null where the method ignores it): what
 * a resumed run must repeat, recorded in its saved state.
 */
export function conversionSettings(o: ConvertOptions, plan: TrainPlan) {
  const dha = o.method === 'dha';
  const rampShare = o.rampShare ?? 0.5;
  if (!(rampShare >= 0 && rampShare <= 1)) throw new Error(`rampShare must be from 0 to 1 (got ${rampShare})`);
  return {
    method: o.method, budget: o.budget, tokens: o.tokens, tokensPerStep: plan.tokensPerStep, maxLength: plan.model.maxRows,
    lr: plan.phases[0].schedule!.lr, tasks: plan.tasks, seed: plan.seed,
    fusionShare: dha ? o.fusionShare ?? 0.5 : null,
    mixLr: dha ? positive(o.mixLr, 'mixLr', 5e-2) : null,
    multiplierLr: dha ? positive(o.multiplierLr, 'multiplierLr', 10) : null,
    rampShare: dha ? rampShare : null,
    similaritySequences: integer(o.similaritySequences, 'similaritySequences', 1, 8),
    validationSequences: integer(o.validationSequences, 'validationSequences', 1, 16),
    evalEvery: o.evalEvery === undefined ? null : integer(o.evalEvery, 'evalEvery', 1, 1),
  };
}

/**
 * The data and schedules of a conversion (both arms draw step k's sequences from the same plan, so
 * GQA and DHA train on the same tokens). Training helpers (other threads) are built from it.
 */
export function conversionPlan(model: TrainConfig, maxPositions: number, o: ConvertOptions): TrainPlan {
  if (!DHA_METHODS.includes(o.method)) throw new Error(`method must be one of ${DHA_METHODS.join(', ')} (got ${JSON.stringify(o.method)})`);
  const tokensPerStep = integer(o.tokensPerStep, 'tokensPerStep', 1, 8192);
  if (!(Number.isInteger(o.tokens) && o.tokens >= 1)) throw new Error(`tokens must be an integer ≥ 1 (got ${o.tokens})`);
  const maxLength = integer(o.maxLength, 'maxLength', 64, Math.min(2048, maxPositions));
  if (maxLength > maxPositions) throw new Error(`maxLength ${maxLength} exceeds the model's max_position_embeddings ${maxPositions}`);
  const lr = positive(o.lr, 'lr', 1e-3);
  const { fusion, train } = stageSteps(o, tokensPerStep);
  const steps = fusion + train;
  const data = { lengths: [Math.min(256, maxLength), maxLength] as [number, number], maxPosition: maxPositions, edgeDepths: 0.2 };
  const schedule = (from: number, to: number): Schedule => ({ lr, warmup: Math.min(20, Math.max(1, Math.ceil((to - from) / 10))), steps: Math.max(1, to - from), minLrFraction: 0.1 });
  // DHA restarts the schedule at the collapse (a new model starts training there).
  const phases = fusion > 0 && train > 0
    ? [{ from: 0, ...data, schedule: schedule(0, fusion) }, { from: fusion, ...data, schedule: schedule(fusion, steps) }]
    : [{ from: 0, ...data, schedule: schedule(0, steps) }];
  const plan: TrainPlan = {
    model: { ...model, maxRows: maxLength }, seed: integer(o.seed, 'seed', -(2 ** 31), 1), steps, tokensPerStep,
    tasks: o.tasks ?? DEFAULT_TASKS, answerWeight: 2, skipFraction: 0.5, phases,
  };
  checkPlan(plan);
  return plan;
}

function dataOf(plan: TrainPlan): DataOptions {
  const ph = plan.phases[plan.phases.length - 1];
  return { tasks: plan.tasks, answerWeight: plan.answerWeight, lengths: ph.lengths, maxPosition: ph.maxPosition, skipFraction: plan.skipFraction, edgeDepths: ph.edgeDepths };
}

/** n sequences of the plan's data from their own seed stream (never a training step's). */
function fixedSequences(plan: TrainPlan, n: number, stream: number): Sequence[] {
  const r = new Random(plan.seed * 7_919 + stream);
  const seqs = Array.from({ length: n }, () => makeSequence(r, dataOf(plan)));
  for (const s of seqs) for (let i = 0; i < s.weights.length; i++) s.weights[i] /= n;
  return seqs;
}

/**
 * Converts the model held by `model` (a multi-head CPU TrainModel loaded with the source weights
 * and RoPE frequencies) following `plan` (conversionPlan). `helpers` compute shares of each step's
 * gradients on other threads (same plan). `run` saves and resumes (ConvertRun); with `run.until`
 * short of the plan's steps the result is null.
 */
export async function convertHeads(model: TrainModel<Float32Array>, plan: TrainPlan, o: ConvertOptions,
  helpers?: GradientHelper[], onProgress?: (p: ConvertProgress) => void): Promise<ConvertResult>;
export async function convertHeads(model: TrainModel<Float32Array>, plan: TrainPlan, o: ConvertOptions,
  helpers: GradientHelper[], onProgress: (p: ConvertProgress) => void, run: ConvertRun): Promise<ConvertResult | null>;
export async function convertHeads(model: TrainModel<Float32Array>, plan: TrainPlan, o: ConvertOptions,
  helpers: GradientHelper[] = [], onProgress: (p: ConvertProgress) => void = () => {}, run: ConvertRun = {}): Promise<ConvertResult | null> {
  const t0 = performance.now();
  const { layers, heads } = model.c;
  if (model.c.kvHeads !== heads) throw new Error(`DHA converts a multi-head model (num_key_value_heads = num_attention_heads); this one has ${model.c.kvHeads} KV heads for ${heads} query heads`);
  const keptHeads = o.method === 'continued' ? keepAll(o.budget, layers, heads) : budgetHeads(o.budget, layers, heads);
  const { fusion: fusionSteps, train: trainSteps } = stageSteps(o, plan.tokensPerStep);
  const settings = conversionSettings(o, plan);
  const mixLr = settings.mixLr ?? 0, eta = settings.multiplierLr ?? 0, rampShare = settings.rampShare ?? 0;
  const evalEvery = (stage: number) => settings.evalEvery ?? Math.max(1, Math.ceil(stage / 8));
  const peakLr = plan.phases[0].schedule!.lr;
  const count = (seqs: Sequence[]) => seqs.reduce((a, s) => a + s.ids.length, 0);
  const r = run.resume ?? null;
  if (r && !(r.stage === 'fusion' ? o.method === 'dha' && r.step <= fusionSteps : r.step >= fusionSteps && r.step < plan.steps)) {
    throw new Error(`resume: a state of the ${r.stage} stage after step ${r.step} does not fit this ${o.method} plan (${fusionSteps} fusion + ${trainSteps} training steps)`);
  }
  const saveEvery = integer(run.saveEvery, 'saveEvery', 1, Infinity);
  const until = Math.min(integer(run.until, 'until', 1, plan.steps), plan.steps);
  if (r && until <= r.step) throw new Error(`until ${until}: the saved state is after step ${r.step} already`);
  const seconds = () => (r?.progress.seconds ?? 0) + (performance.now() - t0) / 1000;

  const validation = fixedSequences(plan, settings.validationSequences, 1_000_003);
  const validate = (): number => {
    let loss = 0;
    for (const s of validation) loss += forwardLoss(model, s);
    if (!Number.isFinite(loss)) throw new Error(`the validation loss is ${loss}: the model diverged; nothing was saved`);
    return loss;
  };
  onProgress({ stage: 'validation', step: 0, steps: 0 });
  const original = validate();

  // Similarity on task data (both arms: the baseline's collapse cost is reported too).
  const similarity = fixedSequences(plan, settings.similaritySequences, 2_000_003);
  onProgress({ stage: 'similarity', step: 0, steps: similarity.length });
  const { sigma, gram } = measureHeads(model, similarity);
  const singletons = () => Array.from({ length: heads }, (_, h) => [h]);
  const allocation = o.method === 'dha' ? allocateHeads(gram, heads, o.budget)
    : { groups: o.method === 'gqa-meanpool' ? meanPoolGroups(layers, heads, o.budget) : Array.from({ length: layers }, () => ({ key: singletons(), value: singletons() })), merges: [] };
  const { groups } = allocation;
  const collapseCost = groups.map((g, l) => ({
    key: g.key.reduce((a, gr) => a + mergeCost(gram[l].key, heads, gr, meanHeadEnergy(gram[l].key, heads)), 0),
    value: g.value.reduce((a, gr) => a + mergeCost(gram[l].value, heads, gr, meanHeadEnergy(gram[l].value, heads)), 0),
  }));

  /** Step k's gradients at the model's current parameters, with the helpers taking shares (as Trainer.trainStepWith). */
  const gradientsAt = async (step: number): Promise<{ loss: number; tokens: number }> => {
    const seqs = stepSequences(plan, step);
    if (run.gradients) {
      const r = await run.gradients.gradients(model.params, step, seqs.map((_, i) => i));
      model.grads.set(r.grads);
      return { loss: r.loss, tokens: count(seqs) };
    }
    const parts = helpers.length + 1;
    const share = (k: number) => seqs.map((_, i) => i).filter((i) => i % parts === k);
    const pending = helpers.map((h, k) => h.gradients(model.params, step, share(k + 1)));
    model.grads.fill(0);
    model.loss[0] = 0;
    for (const i of share(0)) model.step(seqs[i].ids, seqs[i].positions, seqs[i].targets, seqs[i].weights);
    let loss = model.loss[0];
    for (const r of await Promise.all(pending)) {
      const g = model.grads;
      for (let i = 0; i < g.length; i++) g[i] += r.grads[i];
      loss += r.loss;
    }
    return { loss, tokens: count(seqs) };
  };
  const curve: CurvePoint[] = r ? [...r.progress.curve] : [];
  const history: HistoryPoint[] = r ? [...r.progress.history] : [];
  let lastSaved = r?.step ?? null;
  const finite = (stage: string, step: number, loss: number, norm: number) => {
    const kept = lastSaved === null ? 'nothing was saved' : `the state saved after step ${lastSaved} is kept`;
    if (!Number.isFinite(loss) || !Number.isFinite(norm)) throw new Error(`${stage} diverged at step ${step + 1}: loss ${loss}, gradient norm ${norm}; ${kept}`);
  };
  const mergedSides = (c: Float64Array) => {
    const used = groups.flatMap((g) => SIDES.map((s) => g[s].length < heads));
    const vals = [...c].filter((_, i) => used[i]);
    return vals.length ? vals.reduce((a, b) => a + b, 0) / vals.length : 0;
  };

  let fusionStart = r?.progress.fusionStart ?? null, fused = r?.progress.fused ?? null;
  let constraintsAtCollapse = r?.progress.constraintsAtCollapse ?? null;
  let fusionTokens = r?.progress.fusionTokens ?? 0, trainTokens = r?.progress.trainTokens ?? 0;
  let converted: number | null = r?.progress.converted ?? null;
  const progress = (): ConvertState['progress'] => ({
    fusionTokens, trainTokens, fusionStart, fused, converted, constraintsAtCollapse, curve: [...curve], history: [...history], seconds: seconds(),
  });
  /** After `done` steps: saves when due or at `until` (not after the last step: the checkpoint follows); true to stop. */
  const checkpoint = async (done: number, state: () => ConvertState): Promise<boolean> => {
    if (done >= plan.steps) return false;
    if (run.save && (done === until || done % saveEvery === 0)) {
      await run.save(state());
      lastSaved = done;
    }
    return done === until;
  };
  const resumeTraining = r?.stage === 'train';
  const fusion = resumeTraining ? null : HeadFusion.fusion(model, groups, sigma);
  if (o.method === 'dha' && fusion) {
    // The constraint's target: c at the start, falling linearly to 0 at rampShare of the fusion.
    const start = fusion.constraints(), ramp = rampShare * fusionSteps;
    const targets = (step: number) => start.map((c0) => (ramp > 0 ? c0 * Math.max(0, 1 - (step + 1) / ramp) : 0));
    fusion.writeModel(model);
    if (!r) {
      fusionStart = validate();
      if (fusionStart !== original) throw new Error(`internal error: fusion step 0 (identity ω) gives validation loss ${fusionStart}, the source model ${original}`);
    }
    const opt = new AdamW(fusion.params, model.named), mixOpt = new AdamW(fusion.mix, []);
    if (r) {
      if (!r.fusion) throw new Error(`resume: a fusion-stage state (step ${r.step}) without ω and the multipliers`);
      fusion.params.set(r.params); opt.m.set(r.m); opt.v.set(r.v);
      fusion.mix.set(r.fusion.mix); mixOpt.m.set(r.fusion.mixM); mixOpt.v.set(r.fusion.mixV);
      fusion.lambda.set(r.fusion.lambda); fusion.phi.set(r.fusion.phi);
      opt.step = mixOpt.step = r.step;
    }
    const snapshot = (step: number): ConvertState => ({
      stage: 'fusion', step, params: fusion.params, m: opt.m, v: opt.v, progress: progress(),
      fusion: { mix: fusion.mix, mixM: mixOpt.m, mixV: mixOpt.v, lambda: fusion.lambda, phi: fusion.phi },
    });
    const every = evalEvery(fusionSteps);
    for (let step = r?.step ?? 0; step < fusionSteps; step++) {
      const ts = performance.now();
      fusion.writeModel(model);
      const { loss, tokens } = await gradientsAt(step);
      const t = targets(step);
      const g = fusion.gradients(model.grads, t);
      const lr = planLearningRate(plan, step);
      const norm = opt.update(g.params, lr);
      // ω keeps its peak rate after the warm-up: the constraint binds hardest at the end of the fusion.
      mixOpt.update(g.mix, step < plan.phases[0].schedule!.warmup ? (mixLr * lr) / peakLr : mixLr);
      fusion.ascend(g.constraints, eta, t);
      finite('fusion', step, loss, norm);
      fusionTokens += tokens;
      history.push({ stage: 'fusion', step: step + 1, tokens: fusionTokens, loss });
      const constraint = mergedSides(g.constraints);
      onProgress({ stage: 'fusion', step: step + 1, steps: fusionSteps, loss, constraint, tokensPerSecond: tokens / ((performance.now() - ts) / 1000) });
      if ((step + 1) % every === 0 || step + 1 === fusionSteps) {
        fusion.writeModel(model);
        curve.push({ stage: 'fusion', step: step + 1, tokens: fusionTokens, validationLoss: validate(), constraint: mergedSides(fusion.constraints()) });
      }
      if (await checkpoint(step + 1, () => snapshot(step + 1))) return null;
    }
    fusion.writeModel(model);
    fused = fusionSteps > 0 ? curve[curve.length - 1].validationLoss : validate();
    const c = fusion.constraints();
    constraintsAtCollapse = groups.map((_, l) => ({ key: c[l * 2], value: c[l * 2 + 1] }));
  }

  // The collapse, or the collapsed model a training-stage state holds.
  const tied = fusion ? fusion.collapse(model) : HeadFusion.tied(model, Float32Array.from(r!.params), groups);
  tied.writeModel(model);
  if (fusion) {
    converted = validate();
    curve.push({ stage: 'train', step: fusionSteps, tokens: fusionTokens, validationLoss: converted });
  }
  const opt = new AdamW(tied.params, model.named);
  if (resumeTraining) { opt.m.set(r!.m); opt.v.set(r!.v); opt.step = r!.step - fusionSteps; }
  const every = evalEvery(trainSteps);
  for (let k = resumeTraining ? r!.step - fusionSteps : 0; k < trainSteps; k++) {
    const step = fusionSteps + k, ts = performance.now();
    tied.writeModel(model);
    const { loss, tokens } = await gradientsAt(step);
    const g = tied.gradients(model.grads);
    const norm = opt.update(g.params, planLearningRate(plan, step));
    finite('continued training', step, loss, norm);
    trainTokens += tokens;
    history.push({ stage: 'train', step: step + 1, tokens: fusionTokens + trainTokens, loss });
    onProgress({ stage: 'train', step: k + 1, steps: trainSteps, loss, tokensPerSecond: tokens / ((performance.now() - ts) / 1000) });
    if ((k + 1) % every === 0 || k + 1 === trainSteps) {
      tied.writeModel(model);
      curve.push({ stage: 'train', step: step + 1, tokens: fusionTokens + trainTokens, validationLoss: validate() });
    }
    if (await checkpoint(step + 1, () => ({ stage: 'train', step: step + 1, params: tied.params, m: opt.m, v: opt.v, fusion: null, progress: progress() }))) return null;
  }
  tied.writeModel(model);
  const final = trainSteps > 0 ? curve[curve.length - 1].validationLoss : converted!;
  const tensors = tied.checkpointTensors(model.named);
  for (const t of tensors) {
    for (let i = 0; i < t.data.length; i++) if (!Number.isFinite(t.data[i])) throw new Error(`${t.name}: value ${i} is ${t.data[i]} after the conversion; nothing was saved`);
  }
  return {
    plan, tensors,
    report: {
      method: o.method, budget: o.budget, keptHeads, totalHeads: 2 * layers * heads,
      layout: groupsLayout(groups, heads), groups, merges: allocation.merges, collapseCost,
      steps: { fusion: fusionSteps, train: trainSteps },
      tokens: { fusion: fusionTokens, train: trainTokens, similarity: count(similarity), validation: count(validation) },
      losses: { original, fusionStart, fused, converted: converted!, final },
      constraintsAtCollapse, curve, history, seconds: seconds(),
    },
  };
}

/** The `continued` arm keeps all 2·L·H heads: its budget must be 1. */
function keepAll(budget: number, layers: number, heads: number): number {
  if (budget !== 1) throw new Error(`budget must be 1 for the continued arm, which keeps every head (got ${budget}); --method dha or gqa-meanpool convert to a smaller budget`);
  return 2 * layers * heads;
}

/**
 * Σ_t weights[t]·CE(logits[t], targets[t]) of one sequence by a forward pass only (logits from the
 * final hidden states in float64; the training step's loss without its backward pass).
 */
export function forwardLoss(model: TrainModel<Float32Array>, s: Sequence): number {
  model.forward(s.ids, s.positions);
  const { hidden: d, vocab: V } = model.c;
  const x = model.hidden, w = model.p.lmHead;
  const logits = new Float64Array(V);
  let loss = 0;
  for (let t = 0; t < s.ids.length; t++) {
    if (s.weights[t] === 0) continue;
    let max = -Infinity;
    for (let v = 0; v < V; v++) {
      let z = 0;
      for (let e = 0; e < d; e++) z += x[t * d + e] * w[v * d + e];
      logits[v] = z;
      if (z > max) max = z;
    }
    let sum = 0;
    for (let v = 0; v < V; v++) sum += Math.exp(logits[v] - max);
    loss += s.weights[t] * (max + Math.log(sum) - logits[s.targets[t]]);
  }
  return loss;
}
