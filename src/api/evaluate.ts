// Long-context evaluation on a loaded model: for each head configuration, task, length and depth,
// generate samples from seeds, run them greedily (chunked prefill; streaming heads keep a constant
// cache) and score the answers. Plus the standard comparison set (full attention, a pattern,
// streaming only, random patterns of the same budget) and each configuration's KV bytes.
import { projectModelKv } from './memory.js';
import { offloadSettings } from '../kv/magicpig/settings.js';
import { allHeads, type HeadPattern } from '../attention/pattern.js';
import type { StreamingWindow } from '../backend/contract.js';
import { fillerStyleFor, heldOutText, taskPrompt, tokenCounter } from '../eval/evaluate.js';
import { score } from '../eval/score.js';
import { DuetError } from '../errors.js';
import type { FillerStyle } from '../tasks/filler.js';
import { Random } from '../tasks/random.js';
import { TASK_KINDS, type TaskKind } from '../tasks/tasks.js';
import { resolveHeads, type HeadOptions, type LocretOptions } from './heads.js';
import type { HeadMethods } from '../kv/registry.js';
import type { DuetModel } from './model.js';

/** A named head configuration to evaluate (the heads as setHeads takes them, with a parsed pattern). */
export interface EvalConfig extends HeadOptions {
  /** The name rows carry: full | pattern@s | streaming-only | random@s#k, or any other. */
  name: string;
}

export interface EvaluateOptions {
  /** Head configurations, in order (default: the model's current heads, named "current"). */
  configs?: EvalConfig[];
  /** Task kinds (default passkey). */
  tasks?: TaskKind[];
  /** Prompt lengths in tokens, BOS included (default 512, 1024, 2048). */
  lengths?: number[];
  /** Needle depths in [0, 1] (default 0, 0.25, 0.5, 0.75, 1). */
  depths?: number[];
  /** Prompts per cell (default 4). */
  samples?: number;
  /** Seed of the prompts; every configuration sees the same ones (default 0). */
  seed?: number;
  /**
   * Also the perplexity of each configuration on `texts` (default 2) held-out haystack texts of
   * `length` tokens (the same texts for every configuration).
   */
  perplexity?: { length: number; texts?: number };
  /** Put the model's own heads back at the end (default true; false leaves the last configuration placed). */
  restoreHeads?: boolean;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number, detail: string) => void;
  /** Each scored prompt, for logs of what the model answered. */
  onSample?: (sample: EvalSample) => void;
}

export interface EvalSample { config: string; task: TaskKind; length: number; depth: number; prediction: string; answers: string[]; score: number }

export interface EvalRow {
  config: string;
  task: TaskKind;
  length: number;
  depth: number;
  samples: number;
  /** Mean score in [0, 1]. */
  accuracy: number;
}

/** A configuration's heads and its KV cache (f32, as the engine stores it) at the longest length. */
export interface EvalConfigSummary {
  name: string;
  streamingHeads: number;
  kvHeads: number;
  window: StreamingWindow | null;
  kvBytes: number;
  kvContext: number;
  /** Heads whose method is locret, and the budget they keep (null without). */
  locretHeads: number;
  locret: { budget: number; stabilizers: number } | null;
}

/** A configuration's perplexity on the held-out texts (tokens: the scored tokens over all texts). */
export interface PerplexityRow { config: string; texts: number; length: number; tokens: number; meanNll: number; perplexity: number }

export interface EvaluationResult {
  /** The filler the prompts were written in ('grammar' for tokenizers that cannot spell capitals). */
  filler: FillerStyle;
  configs: EvalConfigSummary[];
  rows: EvalRow[];
  /** One row per configuration when perplexity was asked for, else empty. */
  perplexity: PerplexityRow[];
}

/** The comparison `duet eval` runs: full attention first (the reference), then the ones asked for. */
export interface ComparisonOptions {
  /** A parsed DuoAttention pattern: adds "pattern@<sparsity>" (α ≥ 0.5 streams without a sparsity). */
  pattern?: HeadPattern;
  sparsity?: number;
  /** Adds "streaming-only": every head streaming. */
  streamingOnly?: boolean;
  /** Adds `seeds` (default 1) random patterns "random@<sparsity>#k" with that fraction of heads streaming. */
  randomPattern?: { sparsity: number; seeds?: number };
  /** Streaming window (default the pattern's); streamingOnly and randomPattern need one or a pattern. */
  window?: Partial<StreamingWindow>;
  /** After each streaming configuration, the same with RazorAttention's compensation token ("<name>+comp"). */
  compensation?: boolean;
  /**
   * Adds Locret's eviction: "locret@<budget>" on every head, and with a pattern
   * "pattern@<sparsity>+locret@<budget>" (the pattern's retrieval heads full, the heads it streams locret).
   */
  locret?: LocretOptions;
  /** Adds "methods": a KV method per head by name (with the window and locret options above as needed). */
  methods?: HeadMethods;
}

export function comparisonConfigs(o: ComparisonOptions, layers: number, kvHeads: number): EvalConfig[] {
  if (o.sparsity !== undefined && !o.pattern) throw new DuetError('sparsity', 'needs pattern');
  const sink = o.window?.sink ?? o.pattern?.sink, recent = o.window?.recent ?? o.pattern?.recent;
  const configs: EvalConfig[] = [{ name: 'full' }];
  if (o.pattern) configs.push({ name: `pattern@${o.sparsity ?? 'α≥0.5'}`, pattern: o.pattern, sparsity: o.sparsity, window: { sink, recent } });
  const needWindow = (field: string): StreamingWindow => {
    if (sink === undefined || recent === undefined) throw new DuetError(field, 'needs window.sink and window.recent (or pattern)');
    return { sink, recent };
  };
  if (o.streamingOnly) configs.push({ name: 'streaming-only', streamingOnly: true, window: needWindow('streamingOnly') });
  if (o.randomPattern) {
    const s = o.randomPattern.sparsity;
    if (!(s >= 0 && s <= 1)) throw new DuetError('randomPattern.sparsity', `must be a sparsity in [0, 1] (got ${s})`);
    const seeds = o.randomPattern.seeds ?? 1;
    if (!(Number.isInteger(seeds) && seeds >= 1)) throw new DuetError('randomPattern.seeds', `must be an integer ≥ 1 (got ${seeds})`);
    const window = needWindow('randomPattern');
    for (let k = 0; k < seeds; k++) {
      const r = new Random(1000 + k);
      const alphas = Array.from({ length: layers }, () => Array.from({ length: kvHeads }, () => r.next()));
      configs.push({ name: `random@${s}#${k}`, pattern: { alphas, ...window, config: {} }, sparsity: s, window });
    }
  }
  let out = configs;
  if (o.compensation) {
    if (configs.length === 1) throw new DuetError('compensation', 'needs a streaming configuration (pattern, streamingOnly or randomPattern)');
    out = configs.flatMap((c) => (c.name === 'full' ? [c] : [c, { ...c, name: `${c.name}+comp`, compensation: true }]));
  }
  if (o.methods) out.push({ name: 'methods', methods: o.methods, window: sink === undefined || recent === undefined ? undefined : { sink, recent }, locret: o.locret });
  else if (o.locret) {
    const b = o.locret.budget;
    out.push({ name: `locret@${b}`, locret: o.locret });
    if (o.pattern) out.push({ name: `pattern@${o.sparsity ?? 'α≥0.5'}+locret@${b}`, pattern: o.pattern, sparsity: o.sparsity, locret: o.locret });
  }
  return out;
}

function list<T>(value: T[] | undefined, fallback: T[], field: string, ok: (v: T) => boolean, what: string): T[] {
  const out = value ?? fallback;
  if (!Array.isArray(out) || out.length === 0) throw new DuetError(field, 'must be a non-empty list');
  for (const v of out) if (!ok(v)) throw new DuetError(field, `${JSON.stringify(v)} is not ${what}`);
  return [...new Set(out)];
}

/**
 * Scores the model on every configuration × task × length × depth cell. Each configuration is
 * placed in turn with model.setHeads (one placement on the devices at a time); generation is
 * greedy and stops at the model's end-of-sequence ids or the task's answer length.
 */
export async function evaluate(model: DuetModel, o: EvaluateOptions = {}): Promise<EvaluationResult> {
  const tokenizer = model.tokenizer;
  if (!tokenizer) throw new DuetError('model', 'has no tokenizer.json: evaluation tasks are text', 'unavailable');
  const tasks = list<TaskKind>(o.tasks, ['passkey'], 'tasks', (t) => TASK_KINDS.includes(t), `a task kind (${TASK_KINDS.join(', ')})`);
  const lengths = list(o.lengths, [512, 1024, 2048], 'lengths', (n) => Number.isInteger(n) && n >= 16, 'an integer ≥ 16');
  const depths = list(o.depths, [0, 0.25, 0.5, 0.75, 1], 'depths', (d) => typeof d === 'number' && d >= 0 && d <= 1, 'a depth in [0, 1]');
  const samples = o.samples ?? 4;
  if (!(Number.isInteger(samples) && samples >= 1)) throw new DuetError('samples', `must be an integer ≥ 1 (got ${samples})`);
  const seed = o.seed ?? 0;
  if (!Number.isInteger(seed)) throw new DuetError('seed', `must be an integer (got ${seed})`);
  const { config } = model.info;
  const L = config.numLayers, H = config.numKvHeads;
  const original = model.currentHeads();
  const configs = o.configs ?? [{ name: 'current', ...original }];
  if (configs.length === 0) throw new DuetError('configs', 'must be a non-empty list');
  // Resolved up front, so a bad configuration fails before any work.
  const resolved = configs.map((c) => resolveHeads(c, L, H));
  const style = fillerStyleFor(tokenizer);
  const countTokens = tokenCounter(tokenizer);
  const limit = model.info.contextLength;
  const ppl = o.perplexity;
  const texts = ppl?.texts ?? 2;
  if (ppl) {
    if (!(Number.isInteger(ppl.length) && ppl.length >= 2 && ppl.length <= limit)) {
      throw new DuetError('perplexity.length', `must be an integer from 2 to the context length ${limit} (got ${ppl.length})`);
    }
    if (!(Number.isInteger(texts) && texts >= 1)) throw new DuetError('perplexity.texts', `must be an integer ≥ 1 (got ${texts})`);
  }
  // Held-out texts from seeds of their own (far from the task prompts' seeds).
  const pplTexts = ppl ? Array.from({ length: texts }, (_, k) => heldOutText(tokenizer, ppl.length, 0x7e57_0000 + seed * 101 + k, style)) : [];
  const total = configs.length * (tasks.length * lengths.length * depths.length * samples + pplTexts.length);
  let done = 0;
  const rows: EvalRow[] = [];
  const perplexity: PerplexityRow[] = [];
  const restore = () => (o.restoreHeads === false ? undefined : model.setHeads(original));
  try {
    for (const c of configs) {
      await model.setHeads(c);
      for (const task of tasks) {
        for (const length of lengths) {
          for (const depth of depths) {
            let sum = 0;
            for (let s = 0; s < samples; s++) {
              // The same seeds for every head configuration: configurations see identical prompts.
              const sampleSeed = seed * 1_000_003 + s * 7919 + length * 31 + Math.round(depth * 1000) + task.length;
              const { sample, ids } = taskPrompt(tokenizer, { kind: task, length, depth, seed: sampleSeed, style }, countTokens);
              if (ids.length >= limit) {
                throw new DuetError('lengths', `${length} is too long: its ${task} prompts have ${ids.length} tokens, more than the model allows (context length ${limit})`, 'context_length_exceeded');
              }
              const r = await model.generate(ids, { maxTokens: sample.maxNewTokens, signal: o.signal }).result();
              if (r.finishReason === 'abort') throw new DuetError(null, 'the evaluation was aborted');
              const prediction = tokenizer.decode(r.tokens);
              const value = score(task, prediction, sample.answers);
              sum += value;
              o.onSample?.({ config: c.name, task, length, depth, prediction, answers: sample.answers, score: value });
              done++;
              o.onProgress?.(done, total, `${c.name} ${task} ${length} @${depth}`);
            }
            rows.push({ config: c.name, task, length, depth, samples, accuracy: sum / samples });
          }
        }
      }
      if (ppl) {
        let nll = 0, tokens = 0;
        for (const ids of pplTexts) {
          const r = await model.perplexity(ids, { signal: o.signal });
          nll += r.meanNll * r.tokens; tokens += r.tokens;
          done++;
          o.onProgress?.(done, total, `${c.name} perplexity`);
        }
        perplexity.push({ config: c.name, texts, length: ppl.length, tokens, meanNll: nll / tokens, perplexity: Math.exp(nll / tokens) });
      }
    }
  } catch (e) {
    // Best effort: the evaluation's error is the one worth reporting.
    await Promise.resolve(restore()).catch(() => {});
    throw e;
  }
  await restore();
  const longest = Math.max(...lengths);
  const summaries = configs.map((c, i): EvalConfigSummary => {
    const { kinds, window, compensation, methods, locret } = resolved[i];
    const all = kinds ?? allHeads(L, H, true);
    // Offloaded configurations count their host stores (the model's offload applies to every configuration).
    const offload = model.info.offload && all.some((row) => row.some((retrieval) => retrieval))
      ? { offload: offloadSettings(model.info.offload, all, config.headDim, model.info.kvDtype) } : undefined;
    const kv = projectModelKv(config, all, longest, window ?? { sink: 0, recent: 1 }, 'f32', compensation,
      offload ?? (methods && { methods, locret }));
    return { name: c.name, streamingHeads: kv.streaming_heads, kvHeads: L * H, window: window ?? null, kvBytes: kv.duo_bytes, kvContext: longest,
      locretHeads: kv.locret_heads, locret: locret ?? null };
  });
  return { filler: style, configs: summaries, rows, perplexity };
}
