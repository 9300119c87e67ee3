// Training plans: the bundled model's recipe (fixtures/duet-passkey) scaled to a step count, and
// the same recipe with another model size, task mix, length cap or learning rate.
import { DuetError } from '../errors.js';
import { TASK_KINDS, type TaskKind } from '../tasks/tasks.js';
import type { TrainPlan } from './trainer.js';
import { VOCAB_SIZE } from './vocab.js';

/**
 * The bundled model's recipe (see fixtures/duet-passkey/README.md), for `steps` (default 7,000)
 * scaled proportionally. Stage 1 (steps 0–3,000, one cosine schedule): 128–384 tokens, from 2,500 on
 * 256–1,024 with PoSE jumps to 2,560 positions. Stage 2 (3,000–4,000, a fresh, lower schedule):
 * 256–2,048 tokens, jumps to 4,096, a fifth of the needles right at the start or end of the haystack.
 * Stage 3 (4,000–6,000, two more restarts): the same lengths with half, then two thirds of the
 * sequences multi-key needles. Stage 4 (6,000–7,000): RoPE θ 10,000 → 500,000. Steps before a stage
 * get the same data and learning rate as in the shorter recipes that stopped there, so a run can
 * resume from a checkpoint of one of them.
 */
export function bundledPlan(overrides: Partial<TrainPlan> = {}): TrainPlan {
  const steps = overrides.steps ?? 7000;
  // Phase starts are written for the full 7,000 steps and scale with --steps.
  const at = (k: number) => Math.round((k * steps) / 7000);
  // Passkey and niah-single once each, multi-key n times (a kind listed n times is drawn n times as often).
  const multikeyMix = (n: number): TaskKind[] => ['passkey', 'niah-single', ...Array<TaskKind>(n).fill('niah-multikey')];
  // A schedule from step `from` to `to`: warm-up, then cosine to 10 % of lr.
  const restart = (lr: number, warmup: number, from: number, to: number) => ({ lr, warmup, steps: to - from, minLrFraction: 0.1 });
  // Stages 2–4 train on long contexts with position jumps and a fifth of the needles at the edges.
  const long = { lengths: [256, 2048] as [number, number], maxPosition: 4096, edgeDepths: 0.2 };
  const shortWarmup = Math.min(50, Math.ceil(steps / 80));
  return {
    model: { vocab: VOCAB_SIZE, hidden: 64, layers: 3, heads: 4, kvHeads: 4, headDim: 16, intermediate: 176, eps: 1e-5, ropeTheta: 10000, maxRows: 2048 },
    seed: 1, tokensPerStep: 8192,
    tasks: ['passkey', 'niah-single', 'niah-multikey'], answerWeight: 2, skipFraction: 0.5,
    phases: [
      // Stage 1: short, then medium lengths with position jumps.
      { from: 0, lengths: [128, 384], maxPosition: 0, schedule: restart(3e-3, Math.min(200, Math.ceil(steps / 20)), 0, at(3000)) },
      { from: at(2500), lengths: [256, 1024], maxPosition: 2560 },
      // Stage 2: long contexts, needles at the edges too.
      { from: at(3000), ...long, schedule: restart(1e-3, shortWarmup, at(3000), at(4000)) },
      // Stage 3: half, then two thirds of the sequences multi-key needles.
      { from: at(4000), ...long, tasks: multikeyMix(2), schedule: restart(2e-3, Math.min(100, Math.ceil(steps / 50)), at(4000), at(5000)) },
      { from: at(5000), ...long, tasks: multikeyMix(4), schedule: restart(1e-3, shortWarmup, at(5000), at(6000)) },
      // Stage 4: RoPE θ raised to 500,000 (Llama 3's), so that more rotation pairs turn slowly enough
      // for matching a key over 2,048 tokens; same data as the last phase.
      { from: at(6000), ...long, tasks: multikeyMix(4), ropeTheta: 500000, schedule: restart(1e-3, shortWarmup, at(6000), steps) },
    ],
    ...overrides, steps,
  };
}

/** The bundled recipe with another size, data or schedule (what `duet train`'s flags set). */
export interface PlanOptions {
  /** Steps of the whole recipe (default 7,000); its phases scale with it. */
  steps?: number;
  seed?: number;
  tokensPerStep?: number;
  /** Replaces every phase's task mix. */
  tasks?: TaskKind[];
  /** Longest sequence in tokens (the model's rows; default 2,048): caps every phase's lengths. */
  maxLength?: number;
  layers?: number;
  hidden?: number;
  /** Attention heads (each its own KV head); hidden / heads must be an even integer. */
  heads?: number;
  /** Peak learning rate of the first schedule; every schedule's peak scales alike. */
  lr?: number;
  /** Loss weight of the answer tokens. */
  answerWeight?: number;
}

function int(value: number | undefined, field: string, min: number): number | undefined {
  if (value !== undefined && !(Number.isInteger(value) && value >= min)) throw new DuetError(field, `must be an integer ≥ ${min} (got ${value})`);
  return value;
}

function finite(value: number | undefined, field: string): number | undefined {
  if (value !== undefined && !(typeof value === 'number' && Number.isFinite(value))) throw new DuetError(field, `must be a number (got ${value})`);
  return value;
}

export function trainingPlan(o: PlanOptions = {}): TrainPlan {
  const base = bundledPlan({ steps: int(o.steps, 'steps', 1) });
  if (o.tasks !== undefined) {
    if (!Array.isArray(o.tasks) || o.tasks.length === 0) throw new DuetError('tasks', 'must be a non-empty list of task kinds');
    for (const t of o.tasks) if (!TASK_KINDS.includes(t)) throw new DuetError('tasks', `unknown task ${JSON.stringify(t)} (known: ${TASK_KINDS.join(', ')})`);
  }
  const tasks = o.tasks ?? base.tasks;
  const maxLen = int(o.maxLength, 'maxLength', 64) ?? base.model.maxRows;
  const hidden = int(o.hidden, 'hidden', 8) ?? base.model.hidden;
  const heads = int(o.heads, 'heads', 1) ?? base.model.heads;
  if (hidden % heads !== 0 || (hidden / heads) % 2 !== 0) throw new DuetError('heads', `${heads}: the head size hidden/heads must be an even integer (hidden ${hidden})`);
  const lr = finite(o.lr, 'lr');
  return {
    ...base, tasks,
    seed: int(o.seed, 'seed', -Infinity) ?? base.seed,
    tokensPerStep: int(o.tokensPerStep, 'tokensPerStep', 1) ?? base.tokensPerStep,
    model: { ...base.model, layers: int(o.layers, 'layers', 1) ?? base.model.layers, hidden, heads, kvHeads: heads, headDim: hidden / heads, maxRows: maxLen },
    answerWeight: finite(o.answerWeight, 'answerWeight') ?? base.answerWeight,
    // tasks replaces every phase's mix; maxLength caps every phase's lengths; lr scales every
    // schedule's peak alike.
    phases: base.phases.map((ph) => ({
      ...ph, tasks: o.tasks ? undefined : ph.tasks, lengths: [Math.min(ph.lengths[0], maxLen), Math.min(ph.lengths[1], maxLen)],
      schedule: ph.schedule && lr !== undefined ? { ...ph.schedule, lr: (ph.schedule.lr * lr) / base.phases[0].schedule!.lr } : ph.schedule,
    })),
  };
}
