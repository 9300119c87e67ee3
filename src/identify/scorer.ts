// The head-scorer interface of identification: a scorer runs a frozen model (CPU or GPU training
// model, src/train/model.ts) on its own data and says, per (layer, KV head), how much that head is a
// retrieval head. Each scorer lives with its method (./duo.ts, ./scores.ts); ./registry.ts lists
// them; src/api/identify.ts runs one by name and turns its scores into a pattern.
import type { TextTokenizer } from '../model/tokenizer.js';
import type { FillerStyle } from '../tasks/filler.js';
import type { Random } from '../tasks/random.js';
import type { TaskKind } from '../tasks/tasks.js';
import type { TrainModel } from '../train/model.js';
import type { IdentifySample } from './data.js';

/** The run's settings, checked and with their defaults (src/api/identify.ts); each scorer reads its own. */
export interface ScorerSettings {
  /** Sequence lengths [min, max] in tokens. */
  lengths: [number, number];
  seed: number;
  /** The streaming window the pattern is for (duo trains its gates against it). */
  sink: number;
  recent: number;
  /** duo: optimisation steps, learning rate, L1 weight on α, and its data ('words' or task kinds). */
  steps: number;
  lr: number;
  reg: number;
  data: 'words' | TaskKind[];
  /** retrieval-score: passkey prompts per length. */
  samples: number;
  /** razor: fractions of heads kept for their echo and induction scores. */
  echoRatio: number;
  inductionRatio: number;
}

export interface ScorerInput<T = unknown> {
  model: TrainModel<T>;
  tokenizer: TextTokenizer;
  style: FillerStyle;
  /** End-of-sequence ids (retrieval-score stops its greedy answers there). */
  eosTokenIds: number[];
  settings: ScorerSettings;
  /** Replaces the scorer's training sequences where it has them (duo), e.g. a test's hand-made data. */
  sample?: (r: Random, length: number) => IdentifySample;
  /**
   * Heads that run as one (a DHA model's query heads reading one key head, which the runtime
   * streams only together): per (layer, KV head) of the model, layer-major, the index of its tie;
   * ties are numbered from 0. duo gives each tie one gate; other scorers score heads alone.
   */
  ties?: Int32Array;
  /** Steps or prompts done of total (duo adds its loss and distillation part). */
  onProgress?: (done: number, total: number, loss?: number, distill?: number) => void;
}

export interface HeadScores {
  /** [layer][KV head] in [0, 1]: 1 = retrieval. */
  scores: number[][];
  /** The settings this scorer used, as recorded in the pattern (snake_case where they were). */
  options: Record<string, unknown>;
  /** What it ran on, in words. */
  data: string;
  /** Its details: loss curves, raw scores. */
  extra: Record<string, unknown>;
}

export interface HeadScorer {
  readonly name: string;
  score<T>(input: ScorerInput<T>): Promise<HeadScores>;
}
