// The long-context evaluation loop: for each head configuration, task, length and depth, generate
// samples from seeds, run them greedily through the engine (chunked prefill; streaming heads keep
// a constant cache) and score the answers.
import type { HeadKinds } from '../attention/pattern.js';
import type { StreamingWindow } from '../engine/backend.js';
import { Engine, type EngineOptions } from '../engine/engine.js';
import type { ModelConfig } from '../model/config.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import type { ModelWeights } from '../model/weights.js';
import type { FillerStyle } from '../tasks/filler.js';
import { generateSample, type TaskKind, type TaskSample } from '../tasks/tasks.js';
import { score } from './score.js';

export interface HeadConfig {
  /** full | pattern@s | streaming-only | random@s#seed */
  name: string;
  kinds?: HeadKinds;
  window?: StreamingWindow;
}

export interface EvalRow {
  config: string;
  task: TaskKind;
  length: number;
  depth: number;
  samples: number;
  /** Mean score in [0, 1]. */
  accuracy: number;
}

export interface EvalOptions {
  config: ModelConfig;
  weights: ModelWeights;
  tokenizer: TextTokenizer;
  heads: HeadConfig[];
  tasks: TaskKind[];
  lengths: number[];
  depths: number[];
  samples: number;
  seed?: number;
  style: FillerStyle;
  prefillChunk?: number;
  stopIds?: number[];
  engine: Omit<EngineOptions, 'kinds' | 'window'>;
  onProgress?: (done: number, total: number, detail: string) => void;
  /** Each finished sample, for logs. */
  onSample?: (info: { config: string; task: TaskKind; length: number; depth: number; prediction: string; answers: string[]; score: number }) => void;
}

/** The filler that suits a tokenizer: lowercase grammar when it cannot spell capitals (the bundled model). */
export function fillerStyleFor(tokenizer: TextTokenizer): FillerStyle {
  const probe = 'The Pass Key';
  return tokenizer.decode(tokenizer.encode(probe, { addSpecialTokens: false })) === probe ? 'english' : 'grammar';
}

/** Token count of a text (no special tokens), memoised: task generators ask for the same filler often. */
export function tokenCounter(tokenizer: TextTokenizer): (text: string) => number {
  const counts = new Map<string, number>();
  return (text) => {
    let n = counts.get(text);
    if (n === undefined) { n = tokenizer.encode(text, { addSpecialTokens: false }).length; counts.set(text, n); }
    return n;
  };
}

/** A task sample whose prompt, with the tokenizer's special tokens (BOS), is `length` tokens; and its ids. */
export function taskPrompt(tokenizer: TextTokenizer, spec: { kind: TaskKind; length: number; depth: number; seed: number; style: FillerStyle },
  countTokens = tokenCounter(tokenizer)): { sample: TaskSample; ids: number[] } {
  const bos = tokenizer.encode('', { addSpecialTokens: true }).length;
  const sample = generateSample({ ...spec, length: spec.length - bos, countTokens });
  return { sample, ids: tokenizer.encode(sample.prompt, { addSpecialTokens: true }) };
}

export async function evaluate(o: EvalOptions): Promise<EvalRow[]> {
  const countTokens = tokenCounter(o.tokenizer);
  const total = o.heads.length * o.tasks.length * o.lengths.length * o.depths.length * o.samples;
  let done = 0;
  const rows: EvalRow[] = [];
  for (const head of o.heads) {
    const engine = await Engine.create(o.config, o.weights, { ...o.engine, kinds: head.kinds, window: head.window });
    try {
      for (const task of o.tasks) {
        for (const length of o.lengths) {
          for (const depth of o.depths) {
            let sum = 0;
            for (let s = 0; s < o.samples; s++) {
              // The same seeds for every head configuration: configurations see identical prompts.
              const seed = (o.seed ?? 0) * 1_000_003 + s * 7919 + length * 31 + Math.round(depth * 1000) + task.length;
              const { sample, ids } = taskPrompt(o.tokenizer, { kind: task, length, depth, seed, style: o.style }, countTokens);
              if (ids.length > o.config.maxPositionEmbeddings) {
                throw new Error(`a ${length}-token ${task} prompt has ${ids.length} tokens, more than the model allows (max_position_embeddings ${o.config.maxPositionEmbeddings})`);
              }
              const result = await engine.generate(ids, { maxTokens: sample.maxNewTokens, prefillChunk: o.prefillChunk, stopIds: o.stopIds });
              const prediction = o.tokenizer.decode(result.tokens);
              const value = score(task, prediction, sample.answers);
              sum += value;
              o.onSample?.({ config: head.name, task, length, depth, prediction, answers: sample.answers, score: value });
              done++;
              o.onProgress?.(done, total, `${head.name} ${task} ${length} @${depth}`);
            }
            rows.push({ config: head.name, task, length, depth, samples: o.samples, accuracy: sum / o.samples });
          }
        }
      }
    } finally {
      engine.dispose();
    }
  }
  return rows;
}
