// `duet bench`: kernel throughput against a measured roofline, end-to-end prefill/decode of full
// attention vs DuoAttention per placement, and KV memory, on a real checkpoint or on random weights
// with a real model's shapes. Writes results.json and SVG plots, prints tables.
import { totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { loadPattern } from '../attention/pattern.js';
import type { DeviceChoice, Placement } from '../engine/engine.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { nodeModelFiles } from '../node/files.js';
import { claimOutputFolder, removeStale } from '../node/output-folder.js';
import { createNodeGpu } from '../node/gpu.js';
import { isSoftwareGpu, machineInfo, processMemory } from '../bench/machine.js';
import { randomAlphas, randomWeights } from '../bench/random-weights.js';
import { renderText, writeReport } from '../bench/report.js';
import { e2eSequenceLength } from '../bench/e2e.js';
import { runBench, SUITES, type BenchModel, type Suite } from '../bench/run.js';
import { benchShape, layersText, shapeSpec } from '../bench/shapes.js';
import { intOption, numberList, threadsOption, weightsOption } from './options.js';
import { startNodeKernelWorker } from '../node/kernel-threads.js';
import { Progress } from './progress.js';
import { serveBenchCommand } from './bench-serve.js';
import { renderPeers, runPeers } from './bench-peers.js';
import { isWeightDType, type WeightDType } from '../model/quant.js';
import { availableParallelism } from 'node:os';

export const BENCH_DEFAULT_OUT = 'bench-results';
/** Share of the machine's memory that a shape's f32 host weights may take when only GPU placements run. */
const HOST_WEIGHT_SHARE = 0.5;

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
  out: { type: 'string' },
  json: { type: 'boolean' },
  formats: { type: 'string' },
  'agree-tokens': { type: 'string' },
} as const;

export async function benchCommand(argv: string[]): Promise<number> {
  // The server suite has its own options (it measures `duet serve`, not the engine's phases).
  const suiteAt = argv.indexOf('--suite');
  if (argv[suiteAt + 1] === 'serve' || argv.includes('--suite=serve')) return serveBenchCommand(argv);
  const { values: v } = parseArgs({ args: argv, options, strict: true });
  const suiteArg = v.suite ?? 'all';
  if (suiteArg === 'peers') return peersCommand(v, argv);
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
  const layers = intOption(v.layers, '--layers', 1);
  let sink = intOption(v.sink, '--sink');
  let recent = intOption(v.recent, '--recent', 1);
  const outDir = v.out ?? BENCH_DEFAULT_OUT;
  // Checked before any work: a previous bench's results.json and plots are replaced (and said so).
  const previous = claimOutputFolder(outDir, { flag: 'duet bench --out', what: 'benchmark results', owns: (n) => n === 'results.json' || n.endsWith('.svg') });
  if (previous.length) process.stderr.write(`duet: ${outDir} holds a previous benchmark (${previous.length} files); it will be replaced\n`);
  const say = (m: string) => process.stderr.write(`duet: ${m}\n`);

  // The GPU: auto skips software rasterisers (their timings say nothing about GPUs).
  let gpuName: string | null = null, gpuNote = '';
  if (device === 'cpu') gpuNote = '--device cpu';
  else {
    const { gpu, reason } = await createNodeGpu();
    if (!gpu) {
      if (device === 'gpu') throw new Error(`--device gpu: no WebGPU adapter (${reason})`);
      gpuNote = `no WebGPU adapter (${reason})`;
    } else {
      const name = gpu.adapterDescription;
      gpu.destroy();
      if (isSoftwareGpu(name) && device === 'auto') {
        gpuNote = `${name} is a software GPU: skipped (its timings say nothing about GPUs; --device gpu runs it anyway)`;
      } else {
        gpuName = name;
        if (isSoftwareGpu(name)) gpuNote = 'software GPU: its timings mean nothing for GPU speed';
      }
    }
  }
  let placements: Placement[];
  if (gpuName) placements = placementsAsked ?? ['split', 'gpu', 'cpu'];
  else {
    const needGpu = placementsAsked?.filter((p) => p !== 'cpu') ?? [];
    if (needGpu.length) throw new Error(`--placements ${needGpu.join(',')} need a GPU (${gpuNote})`);
    placements = ['cpu'];
  }
  if (gpuNote && device !== 'cpu') say(gpuNote);
  // Every DuoAttention configuration (sparsity × placement) decodes beside the full-attention session of its device.
  const positions = e2eSequenceLength(Math.max(...contexts), warmupTokens, decodeTokens, sparsities.length * placements.length);

  // The model: random weights with a real model's shapes, or a checkpoint directory.
  let model: BenchModel;
  const notes: string[] = [];
  let fullLayers: number;
  if (v.model === undefined) {
    const name = v.shape ?? 'llama-3.2-1b';
    const residency = { engines: sparsities.length ? 2 : 1, kvFactor: 1 + Math.max(0, ...sparsities.map((x) => 1 - x)) };
    // Without the cpu placement the CPU backend holds no weights: the host's memory bounds the layers.
    const hostBudget = placements.includes('cpu') ? undefined : HOST_WEIGHT_SHARE * totalmem();
    const shape = benchShape(name, { layers, positions, chunk, residency, hostBudget });
    const progress = new Progress(`random weights (${name}, ${layersText(shape.config.numLayers)})`);
    const weights = randomWeights(shape.config, seed, (d, t) => progress.update(d, t), weightDType ?? 'keep');
    notes.push(`random weights with the shapes of ${shape.source}`, ...shape.notes);
    model = { source: `shape:${name}`, config: shape.config, fullConfig: shape.full, weights, alphas: [], pattern: '', window: { sink: 0, recent: 1 }, notes };
    fullLayers = shape.full.numLayers;
  } else {
    const progress = new Progress('loading');
    const ckpt = await loadCheckpoint(nodeModelFiles(v.model), { weights: weightDType ?? 'keep', onProgress: (d, t) => progress.update(d, t) });
    let config = ckpt.config, weights = ckpt.weights;
    fullLayers = config.numLayers;
    if (layers !== undefined) {
      if (layers > config.numLayers) throw new Error(`--layers ${layers}: ${v.model} has ${config.numLayers} layers`);
      if (layers < config.numLayers) notes.push(`${layers} of ${config.numLayers} layers; times are for ${layersText(layers)} plus the embedding and LM head`);
      config = { ...config, numLayers: layers };
      weights = { ...weights, layers: weights.layers.slice(0, layers) };
    }
    if (config.maxPositionEmbeddings < positions) {
      notes.push(`max_position_embeddings raised from ${config.maxPositionEmbeddings} to ${positions} for the longest context`);
      config = { ...config, maxPositionEmbeddings: positions };
    }
    model = { source: v.model, config, fullConfig: { ...ckpt.config }, weights, alphas: [], pattern: '', window: { sink: 0, recent: 1 }, notes };
  }
  const { config } = model;
  if (v.pattern !== undefined) {
    const pattern = await loadPattern(nodeModelFiles(v.pattern), fullLayers, config.numKvHeads);
    model.alphas = pattern.alphas.slice(0, config.numLayers);
    sink ??= pattern.sink; recent ??= pattern.recent;
    model.pattern = `${v.pattern}${config.numLayers < fullLayers ? ` (first ${layersText(config.numLayers)})` : ''}`;
  } else {
    model.alphas = randomAlphas(config.numLayers, config.numKvHeads, seed);
    model.pattern = `random gate values (seed ${seed})`;
  }
  model.window = { sink: sink ?? 128, recent: recent ?? 256 };
  model.weightDType = weightDType;

  let current: { suite: string; bar: Progress } | null = null;
  const results = await runBench({
    suites, model, contexts, sparsities, placements, chunk, prefillMax, decodeTokens, warmupTokens, seed,
    machine: machineInfo(gpuName, gpuNote), command: `duet bench ${argv.join(' ')}`.trim(),
    acquireGpu: gpuName ? () => createNodeGpu() : undefined,
    threads, startWorker: startNodeKernelWorker,
    processMemory,
    onProgress: (suite, d, t, detail) => {
      if (current?.suite !== suite) current = { suite, bar: new Progress(suite) };
      current.bar.update(d, t, detail);
    },
  });
  const files = writeReport(results, outDir);
  removeStale(outDir, previous, files);
  if (v.json) process.stdout.write(`${JSON.stringify(results)}\n`);
  else process.stdout.write(`${renderText(results)}\nresults: ${files[0]}${files.length > 1 ? `; plots: ${files.slice(1).join(', ')}` : ''}\n`);
  return 0;
}


type Values = ReturnType<typeof parseArgs<{ args: string[]; options: typeof options; strict: true }>>['values'];

/** `--suite peers`: Duet against llama.cpp on the same GGUF files (see bench-peers.ts). */
async function peersCommand(v: Values, argv: string[]): Promise<number> {
  const say = (m: string) => process.stderr.write(`duet: ${m}\n`);
  if (v.model !== undefined) throw new Error('--suite peers runs on random weights (--shape NAME, default qwen2.5-0.5b); --model is not supported there yet');
  const formats = (v.formats ?? 'f32,f16,q8_0,q4_0').split(',').map((f) => {
    if (!isWeightDType(f)) throw new Error(`--formats: "${f}" is not one of f32, f16, q8_0, q4_0, q4_k`);
    return f as WeightDType;
  });
  const contexts = numberList(v.contexts ?? '1024,4096,16384', '--contexts', (n) => Number.isInteger(n) && n >= 2, 'an integer ≥ 2').sort((a, b) => a - b);
  const sparsities = numberList(v.sparsities ?? '0.5,0.75', '--sparsities', (n) => n >= 0 && n <= 1, 'a sparsity in [0, 1]');
  const threads = threadsOption(v.threads) ?? availableParallelism();
  const chunk = intOption(v['prefill-chunk'], '--prefill-chunk', 1) ?? 512;
  const prefillMax = intOption(v['prefill-max'], '--prefill-max', 0) ?? 2048;
  const decodeTokens = intOption(v['decode-tokens'], '--decode-tokens', 1) ?? 8;
  const warmupTokens = intOption(v['warmup-tokens'], '--warmup-tokens', 0) ?? 2;
  const seed = intOption(v.seed, '--seed') ?? 0;
  const agreeTokens = intOption(v['agree-tokens'], '--agree-tokens', 1) ?? 32;
  const name = v.shape ?? 'qwen2.5-0.5b';
  const positions = e2eSequenceLength(Math.max(...contexts), warmupTokens, decodeTokens, sparsities.length);
  const shape = benchShape(name, { layers: intOption(v.layers, '--layers', 1), positions, chunk, residency: { engines: 2, kvFactor: 1 + Math.max(0, ...sparsities.map((x) => 1 - x)) } });
  const progress = new Progress(`random weights (${name}, ${layersText(shape.config.numLayers)})`);
  const weights = randomWeights(shape.config, seed, (d, t) => progress.update(d, t));
  const notes = [`random weights with the shapes of ${shape.source}`, ...shape.notes,
    "Duet runs each GGUF file's tensors in the file's format (packed CPU kernels, no dequantize at load)"];
  const { rows, agreement, files } = await runPeers({
    config: shape.config, weights, alphas: randomAlphas(shape.config.numLayers, shape.config.numKvHeads, seed),
    window: { sink: intOption(v.sink, '--sink') ?? 128, recent: intOption(v.recent, '--recent', 1) ?? 256 },
    formats, contexts, sparsities, threads, chunk, prefillMax, decodeTokens, warmupTokens, seed, agreeTokens,
    outDir: v.out ?? BENCH_DEFAULT_OUT, machine: machineInfo(null, 'CPU only'), command: `duet bench ${argv.join(' ')}`.trim(), notes, say,
  });
  if (v.json) process.stdout.write(`${JSON.stringify({ rows, agreement })}\n`);
  else process.stdout.write(`${renderPeers(rows, agreement)}\n${notes.map((n) => `note: ${n}`).join('\n')}\nresults: ${files.join(', ')}\n`);
  return 0;
}
