// `duet eval`: long-context accuracy (passkey, needle-in-a-haystack variants, variable tracking) of
// a model under full attention, a DuoAttention pattern, streaming-only or random patterns; a table
// per task, JSON rows, and an SVG heatmap (length × depth) per configuration and task.
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  comparisonConfigs, evaluate, heatmap, loadModel, loadPattern, nodeModelFiles, TASK_KINDS, type EvalRow, type EvaluationResult, type TaskKind,
} from '../node.js';
import { claimOutputFolder, removeStale } from '../node/output-folder.js';
import { writeFileAtomic } from '../node/atomic.js';
import { bareOffload, intOption, locretFlags, locretOptions, methodsFlag, numberList, numberOption, offloadOptions } from './options.js';
import { modelOptions } from './generate.js';
import { Progress } from './progress.js';

const options = {
  model: { type: 'string' },
  pattern: { type: 'string' },
  sparsity: { type: 'string' },
  'streaming-only': { type: 'boolean' },
  'random-pattern': { type: 'string' },
  seeds: { type: 'string' },
  sink: { type: 'string' },
  recent: { type: 'string' },
  compensation: { type: 'boolean' },
  ...locretOptions,
  methods: { type: 'string' },
  chunk: { type: 'string' },
  tasks: { type: 'string' },
  lengths: { type: 'string' },
  depths: { type: 'string' },
  samples: { type: 'string' },
  seed: { type: 'string' },
  device: { type: 'string' },
  placement: { type: 'string' },
  'prefill-chunk': { type: 'string' },
  threads: { type: 'string' },
  weights: { type: 'string' },
  'kv-dtype': { type: 'string' },
  perplexity: { type: 'string' },
  json: { type: 'boolean' },
  out: { type: 'string' },
  ...offloadOptions,
} as const;

function table(rows: EvalRow[], config: string, task: TaskKind): string {
  const mine = rows.filter((r) => r.config === config && r.task === task);
  const lengths = [...new Set(mine.map((r) => r.length))];
  const depths = [...new Set(mine.map((r) => r.depth))];
  const head = `${config} · ${task}\n${'length'.padStart(8)} | ${depths.map((d) => `d=${d}`.padStart(6)).join(' ')} | mean`;
  const lines = lengths.map((len) => {
    const cells = depths.map((d) => mine.find((r) => r.length === len && r.depth === d)!.accuracy);
    const mean = cells.reduce((a, b) => a + b, 0) / cells.length;
    return `${String(len).padStart(8)} | ${cells.map((c) => `${(c * 100).toFixed(0)}%`.padStart(6)).join(' ')} | ${(mean * 100).toFixed(1)}%`;
  });
  return [head, ...lines].join('\n');
}

export async function evalCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: bareOffload(argv), options, strict: true });
  if (!v.model) throw new Error('--model DIR is required');
  const tasks = (v.tasks ?? 'passkey').split(',').map((t) => t.trim()) as TaskKind[];
  for (const t of tasks) if (!TASK_KINDS.includes(t)) throw new Error(`--tasks: unknown task "${t}" (known: ${TASK_KINDS.join(', ')})`);
  const lengths = numberList(v.lengths ?? '512,1024,2048', '--lengths', (n) => Number.isInteger(n) && n >= 16, 'an integer ≥ 16');
  const depths = numberList(v.depths ?? '0,0.25,0.5,0.75,1', '--depths', (d) => d >= 0 && d <= 1, 'a depth in [0, 1]');
  const samples = intOption(v.samples, '--samples', 1) ?? 4;
  const seed = intOption(v.seed, '--seed') ?? 0;
  if (v.device !== undefined && !['auto', 'gpu', 'cpu'].includes(v.device)) throw new Error(`--device must be auto, gpu or cpu (got "${v.device}")`);
  const outDir = v.out ?? 'eval-results';
  // Checked before any work: results.json, samples.jsonl and heatmaps of a previous run are
  // replaced (and said so), anything else in the folder is refused.
  const previous = claimOutputFolder(outDir, { flag: 'duet eval --out', what: 'evaluation results', owns: (n) => n === 'results.json' || n === 'samples.jsonl' || n.endsWith('.svg') });
  if (previous.length) process.stderr.write(`duet: ${outDir} holds a previous evaluation (${previous.length} files); it will be replaced\n`);
  // Checked before loading: --method locret's budget, and --chunk (Locret's chunk size: the prefill chunk).
  // (--compensation and --streaming-only add configurations of their own here, so they may come along.)
  const locret = locretFlags({ ...v, compensation: undefined, 'streaming-only': undefined });
  if (v.chunk !== undefined && v['prefill-chunk'] !== undefined && v.chunk !== v['prefill-chunk']) throw new Error('--chunk and --prefill-chunk are the same setting; give one');
  const chunk = v.chunk ?? v['prefill-chunk'];
  intOption(chunk, v.chunk !== undefined ? '--chunk' : '--prefill-chunk', 1);
  const progressLoad = new Progress('loading');
  // Full attention first (the reference); each configuration is placed in turn on the same model.
  const model = await loadModel(v.model, {
    ...modelOptions({ device: v.device, placement: v.placement, threads: v.threads, weights: v.weights, 'kv-dtype': v['kv-dtype'], 'prefill-chunk': chunk, offload: v.offload, 'offload-tables': v['offload-tables'], topk: v.topk, 'dense-layers': v['dense-layers'] }),
    onProgress: (e) => { if (e.step === 'weights') progressLoad.update(e.done, e.total); },
  });
  let evaluation: EvaluationResult;
  let samplesFile: string;
  try {
    if (!model.tokenizer) throw new Error(`${v.model}: eval needs tokenizer.json (tasks are text)`);
    const { numLayers: L, numKvHeads: H } = model.info.config;
    const pattern = v.pattern === undefined ? undefined : await loadPattern(nodeModelFiles(v.pattern), L, H);
    const configs = comparisonConfigs({
      pattern, sparsity: numberOption(v.sparsity, '--sparsity'), streamingOnly: v['streaming-only'],
      randomPattern: v['random-pattern'] === undefined ? undefined
        : { sparsity: numberOption(v['random-pattern'], '--random-pattern')!, seeds: intOption(v.seeds, '--seeds', 1) },
      window: { sink: intOption(v.sink, '--sink'), recent: intOption(v.recent, '--recent', 1) },
      compensation: v.compensation,
      locret, methods: await methodsFlag(v.methods, L, H),
    }, L, H);
    const progress = new Progress('eval');
    // Every sample's prediction, for reading failures (one JSON object per line).
    mkdirSync(outDir, { recursive: true });
    samplesFile = join(outDir, 'samples.jsonl');
    writeFileSync(samplesFile, '');
    evaluation = await evaluate(model, {
      configs, tasks, lengths, depths, samples, seed, restoreHeads: false,
      perplexity: v.perplexity === undefined ? undefined : { length: intOption(v.perplexity, '--perplexity', 2)! },
      onProgress: (d, t, detail) => progress.update(d, t, detail),
      onSample: (info) => appendFileSync(samplesFile, `${JSON.stringify(info)}\n`),
    });
  } finally {
    await model.dispose();
  }
  const { rows } = evaluation;
  const heads = evaluation.configs;

  const plots: string[] = [];
  for (const h of heads) {
    for (const task of tasks) {
      const grid = lengths.map((len) => depths.map((d) => rows.find((r) => r.config === h.name && r.task === task && r.length === len && r.depth === d)!.accuracy));
      const file = join(outDir, `${task}-${h.name.replace(/[^a-zA-Z0-9.@#-]+/g, '_')}.svg`);
      writeFileAtomic(file, heatmap(grid, {
        title: `${task} accuracy, ${h.name}`, rowLabel: 'context length (tokens)', colLabel: 'needle depth',
        rowNames: lengths.map(String), colNames: depths.map(String), annotate: true,
      }));
      plots.push(file);
    }
  }
  const configs = heads.map((h) => ({ name: h.name, streaming_heads: h.streamingHeads, kv_heads: h.kvHeads, window: h.window, kv_bytes: h.kvBytes, kv_context: h.kvContext,
    ...(h.locret ? { locret_heads: h.locretHeads, locret: h.locret } : {}) }));
  const result = { model: v.model, filler: evaluation.filler, samples, seed, configs, results: rows,
    perplexity: evaluation.perplexity.map((p) => ({ config: p.config, texts: p.texts, length: p.length, tokens: p.tokens, mean_nll: p.meanNll, perplexity: p.perplexity })), plots };
  writeFileAtomic(join(outDir, 'results.json'), `${JSON.stringify(result, null, 1)}\n`);
  removeStale(outDir, previous, [samplesFile, join(outDir, 'results.json'), ...plots]);
  if (v.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } else {
    for (const h of heads) for (const task of tasks) process.stdout.write(`${table(rows, h.name, task)}\n\n`);
    for (const p of evaluation.perplexity) {
      process.stdout.write(`${p.config} · perplexity ${p.perplexity.toFixed(4)} (${p.tokens} tokens of ${p.texts} held-out texts of ${p.length})\n`);
    }
    process.stdout.write(`results: ${join(outDir, 'results.json')}; predictions: ${samplesFile}; heatmaps: ${plots.join(', ')}\n`);
  }
  return 0;
}
