// `duet bench`: kernel throughput against a measured roofline, end-to-end prefill/decode of full
// attention vs DuoAttention per placement, and KV memory, on a real checkpoint or on random weights
// with a real model's shapes. Writes results.json and SVG plots, prints tables.
import { parseArgs } from 'node:util';
import { BENCH_SUITES as SUITES, benchReportText, peersReportText, runBenchmark, runPeersBenchmark, writeBenchReport, type BenchSuite as Suite, type DeviceChoice, type Placement } from '../node.js';
import { DuetError } from '../errors.js';
import { shapeSpec } from '../bench/shapes.js';
import { claimOutputFolder, removeStale } from '../node/output-folder.js';
import { bareOffload, intOption, kvDtypeOption, numberList, offloadFlags, threadsOption, weightsOption } from './options.js';
import { offloadReportText, runOffloadBenchmark } from '../node/bench-offload.js';
import { flagMessage, inFlags } from './flags.js';
import { Progress } from './progress.js';
import { serveBenchCommand } from './bench-serve.js';
import { isWeightDType, WEIGHT_DTYPES } from '../model/quant.js';

export const BENCH_DEFAULT_OUT = 'bench-results';

const options = {
  suite: { type: 'string' },
  model: { type: 'string' },
  shape: { type: 'string' },
  layers: { type: 'string' },
  pattern: { type: 'string' },
  contexts: { type: 'string' },
  sparsities: { type: 'string' },
  placements: { type: 'string' },
  device: { type: 'string' },
  sink: { type: 'string' },
  recent: { type: 'string' },
  'prefill-chunk': { type: 'string' },
  'prefill-max': { type: 'string' },
  'decode-tokens': { type: 'string' },
  'warmup-tokens': { type: 'string' },
  seed: { type: 'string' },
  threads: { type: 'string' },
  weights: { type: 'string' },
  'kv-dtype': { type: 'string' },
  out: { type: 'string' },
  json: { type: 'boolean' },
  formats: { type: 'string' },
  'agree-tokens': { type: 'string' },
  offload: { type: 'string' },
} as const;

export async function benchCommand(argv: string[]): Promise<number> {
  try {
    return await bench(argv);
  } catch (e) {
    // benchCommand is also called directly (tests, scripts): library errors in the CLI's words here.
    throw e instanceof DuetError ? new Error(flagMessage(e)) : e;
  }
}

async function bench(argv: string[]): Promise<number> {
  // The server suite has its own options (it measures `duet serve`, not the engine's phases).
  const suiteAt = argv.indexOf('--suite');
  if (argv[suiteAt + 1] === 'serve' || argv.includes('--suite=serve')) return serveBenchCommand(argv);
  const { values: v } = parseArgs({ args: bareOffload(argv), options, strict: true });
  const suiteArg = v.suite ?? (v.offload !== undefined ? 'offload' : 'all');
  if (suiteArg === 'peers') return peersCommand(v, argv);
  if (suiteArg === 'offload') return offloadCommand(v, argv);
  if (v.offload !== undefined) throw new Error(`--offload goes with --suite offload (the offload suite), not --suite ${suiteArg}`);
  const suites: Suite[] = suiteArg === 'all' ? [...SUITES] : suiteArg.split(',').map((s) => {
    if (!(SUITES as string[]).includes(s)) throw new Error(`--suite must be all or a list of ${SUITES.join(', ')} (got "${s}")`);
    return s as Suite;
  });
  if (v.model !== undefined && v.shape !== undefined) throw new Error('give either --model DIR or --shape NAME, not both');
  if (v.shape !== undefined) shapeSpec(v.shape);
  const contexts = numberList(v.contexts ?? '1024,4096,16384', '--contexts', (n) => Number.isInteger(n) && n >= 2, 'an integer ≥ 2').sort((a, b) => a - b);
  const sparsities = numberList(v.sparsities ?? '0.25,0.5,0.75', '--sparsities', (n) => n >= 0 && n <= 1, 'a sparsity in [0, 1]');
  const device = (v.device ?? 'auto') as DeviceChoice;
  if (!['auto', 'cpu', 'gpu'].includes(device)) throw new Error(`--device must be auto, cpu or gpu (got "${device}")`);
  const placementsAsked = v.placements?.split(',').map((p) => {
    if (!['split', 'gpu', 'cpu'].includes(p)) throw new Error(`--placements: "${p}" is not split, gpu or cpu`);
    return p as Placement;
  });
  const chunk = intOption(v['prefill-chunk'], '--prefill-chunk', 1) ?? 512;
  const prefillMax = intOption(v['prefill-max'], '--prefill-max', 0) ?? 2048;
  const decodeTokens = intOption(v['decode-tokens'], '--decode-tokens', 1) ?? 8;
  const warmupTokens = intOption(v['warmup-tokens'], '--warmup-tokens', 0) ?? 2;
  const seed = intOption(v.seed, '--seed') ?? 0;
  const threads = threadsOption(v.threads);
  const weightDType = weightsOption(v.weights);
  const kvDtypes = v['kv-dtype'] === undefined ? undefined : v['kv-dtype'].split(',').map((d) => kvDtypeOption(d)!);
  const layers = intOption(v.layers, '--layers', 1);
  const sink = intOption(v.sink, '--sink');
  const recent = intOption(v.recent, '--recent', 1);
  const outDir = v.out ?? BENCH_DEFAULT_OUT;
  // Checked before any work: a previous bench's results.json and plots are replaced (and said so).
  const previous = claimOutputFolder(outDir, { flag: 'duet bench --out', what: 'benchmark results', owns: (n) => n === 'results.json' || n.endsWith('.svg') });
  if (previous.length) process.stderr.write(`duet: ${outDir} holds a previous benchmark (${previous.length} files); it will be replaced\n`);

  const bars = new Map<string, Progress>();
  const results = await runBenchmark({
    suites, model: v.model, shape: v.shape, layers, pattern: v.pattern, contexts, sparsities, placements: placementsAsked, device,
    window: { sink, recent }, prefillChunk: chunk, prefillMax, decodeTokens, warmupTokens, seed, threads, weights: weightDType, kvDtypes,
    command: `duet bench ${argv.join(' ')}`.trim(),
    notice: (m) => process.stderr.write(`duet: ${inFlags(m)}\n`),
    onProgress: (what, d, t, detail) => {
      let bar = bars.get(what);
      if (!bar) { bar = new Progress(what); bars.set(what, bar); }
      bar.update(d, t, detail);
    },
  });
  // The GPU note in the CLI's words ("--device cpu" rather than "device 'cpu'").
  results.machine.gpu_note = inFlags(results.machine.gpu_note);
  const files = writeBenchReport(results, outDir);
  removeStale(outDir, previous, files);
  if (v.json) process.stdout.write(`${JSON.stringify(results)}\n`);
  else process.stdout.write(`${benchReportText(results)}\nresults: ${files[0]}${files.length > 1 ? `; plots: ${files.slice(1).join(', ')}` : ''}\n`);
  return 0;
}


type Values = ReturnType<typeof parseArgs<{ args: string[]; options: typeof options; strict: true }>>['values'];

/** `--suite offload` (or `--offload [K,L]`): one layer's decode attention, full vs offloaded (runOffloadBenchmark). */
async function offloadCommand(v: Values, argv: string[]): Promise<number> {
  for (const f of ['model', 'pattern', 'sparsities', 'placements', 'kv-dtype', 'formats', 'layers', 'prefill-chunk', 'prefill-max', 'sink', 'recent', 'agree-tokens'] as const) {
    if (v[f] !== undefined) throw new Error(`--${f} does not apply to --suite offload (one layer's attention on random keys, --shape NAME, default llama-3.2-1b)`);
  }
  // The main device: no 'auto' here (a GPU is never chosen, nor left out, silently).
  if (v.device !== undefined && v.device !== 'cpu' && v.device !== 'gpu') throw new Error(`--suite offload takes --device cpu (the default) or gpu (got "${v.device}")`);
  const offload = v.offload === undefined ? undefined : offloadFlags({ offload: v.offload });
  const contexts = v.contexts === undefined ? undefined : numberList(v.contexts, '--contexts', (n) => Number.isInteger(n) && n >= 2, 'an integer ≥ 2').sort((a, b) => a - b);
  const progress = new Progress('offload');
  const r = await runOffloadBenchmark({
    out: v.out ?? BENCH_DEFAULT_OUT, shape: v.shape, contexts, offload, device: v.device as 'cpu' | 'gpu' | undefined, threads: threadsOption(v.threads), weights: weightsOption(v.weights),
    decodeTokens: intOption(v['decode-tokens'], '--decode-tokens', 1), warmupTokens: intOption(v['warmup-tokens'], '--warmup-tokens', 0), seed: intOption(v.seed, '--seed'),
    command: `duet bench ${argv.join(' ')}`.trim(), onProgress: (d, t, detail) => progress.update(d, t, detail),
  });
  if (r.machine.gpu_software) process.stderr.write(`duet: ${r.machine.gpu} is a software GPU: its timings mean nothing for GPU speed\n`);
  if (v.json) process.stdout.write(`${JSON.stringify({ machine: r.machine, settings: r.settings, rows: r.rows })}\n`);
  else process.stdout.write(`${offloadReportText(r)}\nresults: ${r.files.join(', ')}\n`);
  return 0;
}

/** `--suite peers`: Duet against llama.cpp on the same GGUF files (runPeersBenchmark). */
async function peersCommand(v: Values, argv: string[]): Promise<number> {
  if (v['kv-dtype'] !== undefined) throw new Error('--kv-dtype is not supported by --suite peers yet (both engines run f32 KV caches there); use it with --suite e2e,memory');
  if (v.model !== undefined) throw new Error('--suite peers runs on random weights (--shape NAME, default qwen2.5-0.5b); --model is not supported there yet');
  const formats = v.formats?.split(',').map((f) => {
    if (!isWeightDType(f)) throw new Error(`--formats: "${f}" is not one of ${WEIGHT_DTYPES.join(', ')}`);
    return f;
  });
  const contexts = v.contexts === undefined ? undefined : numberList(v.contexts, '--contexts', (n) => Number.isInteger(n) && n >= 2, 'an integer ≥ 2');
  const sparsities = v.sparsities === undefined ? undefined : numberList(v.sparsities, '--sparsities', (n) => n >= 0 && n <= 1, 'a sparsity in [0, 1]');
  let progress: Progress | undefined;
  const r = await runPeersBenchmark({
    out: v.out ?? BENCH_DEFAULT_OUT, shape: v.shape, layers: intOption(v.layers, '--layers', 1), formats, contexts, sparsities,
    threads: threadsOption(v.threads), window: { sink: intOption(v.sink, '--sink'), recent: intOption(v.recent, '--recent', 1) },
    prefillChunk: intOption(v['prefill-chunk'], '--prefill-chunk', 1), prefillMax: intOption(v['prefill-max'], '--prefill-max', 0),
    decodeTokens: intOption(v['decode-tokens'], '--decode-tokens', 1), warmupTokens: intOption(v['warmup-tokens'], '--warmup-tokens', 0),
    seed: intOption(v.seed, '--seed'), agreeTokens: intOption(v['agree-tokens'], '--agree-tokens', 1),
    command: `duet bench ${argv.join(' ')}`.trim(),
    notice: (m) => process.stderr.write(`duet: ${m}\n`),
    onProgress: (what, d, t) => { progress ??= new Progress(what); progress.update(d, t); },
  });
  if (v.json) process.stdout.write(`${JSON.stringify({ rows: r.rows, agreement: r.agreement })}\n`);
  else process.stdout.write(`${peersReportText(r)}\n${r.notes.map((n) => `note: ${n}`).join('\n')}\nresults: ${r.files.join(', ')}\n`);
  return 0;
}
