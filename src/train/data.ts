// Training sequences for the bundled model: task samples (tasks.ts, grammar filler) with the answer
// appended, as character ids. The loss weighs every next-token prediction, plus the answer tokens
// again (answerWeight), so the rare long-range predictions are not drowned by the filler.
// Length curriculum (short first) and PoSE-style position skips (one random jump in the position
// ids) let a model trained on ≤ maxLen tokens see relative distances up to maxPosition.
import { Random } from '../tasks/random.js';
import { answerText, generateSample, type TaskKind } from '../tasks/tasks.js';
import { BOS, EOS, encodeChars } from './vocab.js';

export interface Sequence {
  ids: Int32Array;
  positions: Int32Array;
  targets: Int32Array;
  /** Per-row loss weight (answer rows weigh more; the last row predicts nothing). */
  weights: Float32Array;
  answerRows: number;
}

export interface DataOptions {
  tasks: TaskKind[];
  answerWeight: number;
  /** [minLen, maxLen] tokens of this phase. */
  lengths: [number, number];
  /** Largest position id a PoSE jump may reach; 0 disables the skips. */
  maxPosition: number;
  /** Fraction of sequences that get a position jump. */
  skipFraction: number;
  /**
   * Fraction of sequences whose needle sits at depth 0 or 1 exactly (half each). A uniform depth
   * almost never puts the needle right before the question, where the digits to copy are also in
   * the local heads' view; the model has to learn that case too.
   */
  edgeDepths?: number;
}

/** A needle depth from one uniform draw u: depth 0 or 1 for the first `edge` of [0, 1), else uniform. */
export function needleDepth(u: number, edge = 0): number {
  if (u < edge / 2) return 0;
  if (u < edge) return 1;
  return (u - edge) / (1 - edge);
}

/** Shortest sequence that holds a task's needles and question with some haystack. */
export const MIN_LENGTH: Record<TaskKind, number> = { passkey: 136, 'niah-single': 160, 'niah-multikey': 340, 'niah-multivalue': 340, vt: 200 };

export function makeSequence(r: Random, o: DataOptions): Sequence {
  const kind = r.pick(o.tasks);
  const length = Math.max(r.int(o.lengths[0], o.lengths[1] + 1), MIN_LENGTH[kind]);
  const sample = generateSample({ kind, length: length - 40, depth: needleDepth(r.next(), o.edgeDepths), seed: r.int(0, 2 ** 31), style: 'grammar', countTokens: (t) => t.length });
  const promptIds = encodeChars(sample.prompt);
  const answerIds = [...encodeChars(answerText(sample)), EOS];
  const all = [BOS, ...promptIds, ...answerIds];
  const T = all.length - 1;
  const ids = Int32Array.from(all.slice(0, T));
  const targets = Int32Array.from(all.slice(1));
  const weights = new Float32Array(T).fill(1 / T);
  const firstAnswerRow = T - answerIds.length;
  for (let t = firstAnswerRow; t < T; t++) weights[t] += o.answerWeight / answerIds.length;
  const positions = Int32Array.from({ length: T }, (_, i) => i);
  if (o.maxPosition > T && r.next() < o.skipFraction) {
    const at = r.int(1, T);
    const skip = r.int(1, o.maxPosition - T + 1);
    for (let i = at; i < T; i++) positions[i] += skip;
  }
  return { ids, positions, targets, weights, answerRows: answerIds.length };
}
