// `duet eval`: long-context accuracy (passkey, needle-in-a-haystack variants, variable tracking) of
// a model under full attention, a DuoAttention pattern, streaming-only or random patterns; a table
// per task, JSON rows, and an SVG heatmap (length × depth) per configuration and task.
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { allHeads, binarize, loadPattern } from '../attention/pattern.js';
import { projectKvMemory } from '../attention/memory.js';
import type { DeviceChoice, Placement } from '../engine/engine.js';
import { evaluate, fillerStyleFor, type EvalRow, type HeadConfig } from '../eval/evaluate.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { nodeModelFiles } from '../node/files.js';
import { claimOutputFolder, removeStale } from '../node/output-folder.js';
import { writeFileAtomic } from '../node/atomic.js';
import { createNodeGpu } from '../node/gpu.js';
import { heatmap } from '../plot/svg.js';
import { Random } from '../tasks/random.js';
import { TASK_KINDS, type TaskKind } from '../tasks/tasks.js';
import { intOption, numberList, numberOption, threadsOption, weightsOption } from './options.js';
import { createNodeCpu } from '../node/kernel-threads.js';
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
  json: { type: 'boolean' },
  out: { type: 'string' },
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
  const { values: v } = parseArgs({ args: argv, options, strict: true });
  if (!v.model) throw new Error('--model DIR is required');
  const tasks = (v.tasks ?? 'passkey').split(',').map((t) => t.trim()) as TaskKind[];
  for (const t of tasks) if (!TASK_KINDS.includes(t)) throw new Error(`--tasks: unknown task "${t}" (known: ${TASK_KINDS.join(', ')})`);
  const lengths = numberList(v.lengths ?? '512,1024,2048', '--lengths', (n) => Number.isInteger(n) && n >= 16, 'an integer ≥ 16');
  const depths = numberList(v.depths ?? '0,0.25,0.5,0.75,1', '--depths', (d) => d >= 0 && d <= 1, 'a depth in [0, 1]');
  const samples = intOption(v.samples, '--samples', 1) ?? 4;
  const seed = intOption(v.seed, '--seed') ?? 0;
  const device = (v.device ?? 'auto') as DeviceChoice;
  if (!['auto', 'gpu', 'cpu'].includes(device)) throw new Error(`--device must be auto, gpu or cpu (got "${device}")`);
  const placement = v.placement as Placement | undefined;
  if (placement && !['split', 'gpu', 'cpu'].includes(placement)) throw new Error(`--placement must be split, gpu or cpu (got "${placement}")`);
  const outDir = v.out ?? 'eval-results';
  // Checked before any work: results.json, samples.jsonl and heatmaps of a previous run are
  // replaced (and said so), anything else in the folder is refused.
  const previous = claimOutputFolder(outDir, { flag: 'duet eval --out', what: 'evaluation results', owns: (n) => n === 'results.json' || n === 'samples.jsonl' || n.endsWith('.svg') });
  if (previous.length) process.stderr.write(`duet: ${outDir} holds a previous evaluation (${previous.length} files); it will be replaced\n`);
  const threads = threadsOption(v.threads);
  const weights = weightsOption(v.weights);

  const progressLoad = new Progress('loading');
  const checkpoint = await loadCheckpoint(nodeModelFiles(v.model), { weights: weights ?? 'keep', onProgress: (d, t) => progressLoad.update(d, t) });
  const { config, tokenizer } = checkpoint;
  if (!tokenizer) throw new Error(`${v.model}: eval needs tokenizer.json (tasks are text)`);
  const L = config.numLayers, H = config.numKvHeads;
  let sink = intOption(v.sink, '--sink');
  let recent = intOption(v.recent, '--recent', 1);

  // The configurations to compare: full attention always first, as the reference.
  const heads: HeadConfig[] = [{ name: 'full', kinds: allHeads(L, H, true) }];
  if (v.pattern !== undefined) {
    const pattern = await loadPattern(nodeModelFiles(v.pattern), L, H);
    sink ??= pattern.sink; recent ??= pattern.recent;
    const sparsity = numberOption(v.sparsity, '--sparsity');
    heads.push({ name: `pattern@${sparsity ?? 'α≥0.5'}`, kinds: binarize(pattern.alphas, { sparsity }), window: { sink, recent } });
  } else if (v.sparsity !== undefined) throw new Error('--sparsity needs --pattern');
  const needWindow = (what: string) => {
    if (sink === undefined || recent === undefined) throw new Error(`${what} needs --sink and --recent (or --pattern)`);
    return { sink, recent };
  };
  if (v['streaming-only']) heads.push({ name: 'streaming-only', kinds: allHeads(L, H, false), window: needWindow('--streaming-only') });
  if (v['random-pattern'] !== undefined) {
    const s = numberOption(v['random-pattern'], '--random-pattern')!;
    if (!(s >= 0 && s <= 1)) throw new Error(`--random-pattern must be a sparsity in [0, 1] (got ${s})`);
    const window = needWindow('--random-pattern');
    const seeds = intOption(v.seeds, '--seeds', 1) ?? 1;
    for (let k = 0; k < seeds; k++) {
      const r = new Random(1000 + k);
      const alphas = Array.from({ length: L }, () => Array.from({ length: H }, () => r.next()));
      heads.push({ name: `random@${s}#${k}`, kinds: binarize(alphas, { sparsity: s }), window });
    }
  }

  const style = fillerStyleFor(tokenizer);
  const progress = new Progress('eval');
  // Every sample's prediction, for reading failures (one JSON object per line).
  mkdirSync(outDir, { recursive: true });
  const samplesFile = join(outDir, 'samples.jsonl');
  writeFileSync(samplesFile, '');
  const rows = await evaluate({
    config, weights: checkpoint.weights, tokenizer, heads, tasks, lengths, depths, samples, seed, style,
    prefillChunk: intOption(v['prefill-chunk'], '--prefill-chunk', 1), stopIds: checkpoint.eosTokenIds,
    engine: { device, placement, weights, acquireGpu: () => createNodeGpu(), createCpu: () => createNodeCpu(threads), notice: (m) => process.stderr.write(`duet: ${m}\n`) },
    onProgress: (d, t, detail) => progress.update(d, t, detail),
    onSample: (info) => appendFileSync(samplesFile, `${JSON.stringify(info)}\n`),
  });

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
  // Per configuration: its streaming heads and KV memory (f32, as the engine stores it) at the
  // longest evaluated length.
  const longest = Math.max(...lengths);
  const configs = heads.map((h) => {
    const kv = projectKvMemory(h.kinds ?? allHeads(L, H, true), config.headDim, longest, h.window ?? { sink: 0, recent: 1 }, 4);
    return { name: h.name, streaming_heads: kv.streaming_heads, kv_heads: L * H, window: h.window ?? null, kv_bytes: kv.duo_bytes, kv_context: longest };
  });
  const result = { model: v.model, filler: style, samples, seed, configs, results: rows, plots };
  writeFileAtomic(join(outDir, 'results.json'), `${JSON.stringify(result, null, 1)}\n`);
  removeStale(outDir, previous, [samplesFile, join(outDir, 'results.json'), ...plots]);
  if (v.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } else {
    for (const h of heads) for (const task of tasks) process.stdout.write(`${table(rows, h.name, task)}\n\n`);
    process.stdout.write(`results: ${join(outDir, 'results.json')}; predictions: ${samplesFile}; heatmaps: ${plots.join(', ')}\n`);
  }
  return 0;
}
