// `duet identify`: finds retrieval heads (DuoAttention gates, retrieval score, RazorAttention, with
// the ZigzagAttention layer constraint on top) and writes a DuoAttention-format pattern.
import { parseArgs } from 'node:util';
import { fillerStyleFor, tokenCounter } from '../eval/evaluate.js';
import { taskSample } from '../identify/data.js';
import { TASK_KINDS, type TaskKind } from '../tasks/tasks.js';
import { frozenGpuModel, frozenModel } from '../identify/frozen.js';
import type { TrainModel } from '../train/model.js';
import { optimiseGates } from '../identify/duo.js';
import { writePattern } from '../identify/output.js';
import { razorAlphas, razorScores, retrievalScores, zigzag } from '../identify/scores.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { nodeModelFiles } from '../node/files.js';
import { claimOutputFolder, removeStale } from '../node/output-folder.js';
import { PATTERN_FILES } from '../identify/output.js';
import { intOption, numberOption, trainingDevice } from './options.js';
import { Progress } from './progress.js';

const METHODS = ['duo', 'retrieval-score', 'razor'] as const;

const options = {
  model: { type: 'string' }, method: { type: 'string' }, out: { type: 'string' },
  steps: { type: 'string' }, lr: { type: 'string' }, reg: { type: 'string' }, lengths: { type: 'string' },
  sink: { type: 'string' }, recent: { type: 'string' }, seed: { type: 'string' }, samples: { type: 'string' },
  'echo-ratio': { type: 'string' }, 'induction-ratio': { type: 'string' }, zigzag: { type: 'boolean' }, sparsity: { type: 'string' },
  json: { type: 'boolean' }, data: { type: 'string' }, device: { type: 'string' },
} as const;

/**
 * --data for duo: "words" (DuoAttention's passkeys of random words, the default) or evaluation task
 * kinds ("passkey,niah-single") for a model that only knows its own task format.
 */
function taskKindsOption(value: string | undefined): TaskKind[] | undefined {
  if (value === undefined || value === 'words') return undefined;
  const kinds = value.split(',').map((k) => k.trim());
  for (const k of kinds) if (!TASK_KINDS.includes(k as TaskKind)) throw new Error(`--data must be "words" or task kinds from ${TASK_KINDS.join(', ')} (got "${k}")`);
  return kinds as TaskKind[];
}

export async function identifyCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: argv, options, strict: true });
  if (!v.model) throw new Error('--model DIR is required');
  if (!v.out) throw new Error('--out DIR is required');
  const method = v.method as (typeof METHODS)[number];
  if (!METHODS.includes(method)) throw new Error(`--method must be one of ${METHODS.join(', ')} (got "${v.method ?? ''}")`);
  const sparsity = numberOption(v.sparsity, '--sparsity');
  if (sparsity !== undefined && !(sparsity >= 0 && sparsity <= 1)) throw new Error(`--sparsity must be in [0, 1] (got ${sparsity})`);
  if (v.zigzag && sparsity === undefined) throw new Error('--zigzag needs --sparsity (the fraction of KV heads, i.e. layers, made streaming)');
  const seed = intOption(v.seed, '--seed') ?? 0;
  const sink = intOption(v.sink, '--sink') ?? 16, recent = intOption(v.recent, '--recent', 1) ?? 64;
  const lengths = (v.lengths ?? '512,1024').split(',').map((s) => intOption(s.trim(), '--lengths', 32)!);
  if (lengths.length !== 2 || lengths[0] > lengths[1]) throw new Error('--lengths takes min,max (min ≤ max)');
  // Checked before any work: never into a model's folder or over files that are not a pattern's.
  const previous = claimOutputFolder(v.out, { flag: 'duet identify --out', what: 'a head pattern', owns: (n) => PATTERN_FILES.includes(n) });
  if (previous.length) process.stderr.write(`duet: ${v.out} holds a previous pattern (${previous.join(', ')}); it will be replaced\n`);

  const gpu = await trainingDevice(v.device, (m) => process.stderr.write(`duet: ${m}\n`));
  const loadBar = new Progress('loading');
  const ckpt = await loadCheckpoint(nodeModelFiles(v.model), { onProgress: (d, t) => loadBar.update(d, t) });
  if (!ckpt.tokenizer) throw new Error(`${v.model}: identification needs tokenizer.json (its data is text)`);
  const tokenizer = ckpt.tokenizer;
  const style = fillerStyleFor(tokenizer);
  const t0 = performance.now();
  const maxRows = lengths[1] + 64;
  // The methods are generic over the device's tensors; here either device's model will do.
  const model: TrainModel<unknown> = gpu ? frozenGpuModel(gpu, ckpt.config, ckpt.weights, maxRows) : await frozenModel(ckpt.config, ckpt.weights, maxRows);
  const where = gpu ? `the GPU (${gpu.adapterDescription})` : 'the CPU (WebAssembly SIMD)';
  process.stderr.write(`duet: identifying with ${method} on ${where}; ${ckpt.config.numLayers} layers × ${ckpt.config.numKvHeads} KV heads\n`);
  let alphas: number[][];
  let data: string;
  const runOptions: Record<string, unknown> = { lengths, sink, recent };
  let extra: Record<string, unknown> = {};
  if (method === 'duo') {
    const steps = intOption(v.steps, '--steps', 1) ?? 200;
    const lr = numberOption(v.lr, '--lr') ?? 0.02, reg = numberOption(v.reg, '--reg') ?? 0.05;
    const kinds = taskKindsOption(v.data);
    Object.assign(runOptions, { steps, lr, reg, data: v.data ?? 'words' });
    const bar = new Progress('identify');
    const counter = tokenCounter(tokenizer);
    const r = await optimiseGates(model, tokenizer, {
      steps, lr, reg, lengths: [lengths[0], lengths[1]], window: { sink, recent }, seed, style,
      sample: kinds ? (rng, length) => taskSample(tokenizer, rng, length, kinds, style, counter) : undefined,
      onStep: (s, loss, mse) => bar.update(s, steps, `loss ${loss.toFixed(5)} mse ${mse.toExponential(2)}`),
    });
    alphas = r.alphas;
    data = `${kinds ? 'evaluation tasks' : 'synthetic passkeys'}: ${r.data.join('; ')}…`;
    extra = { loss: r.losses, distill_loss: r.distill };
  } else if (method === 'razor') {
    const echoRatio = numberOption(v['echo-ratio'], '--echo-ratio') ?? 0.01, inductionRatio = numberOption(v['induction-ratio'], '--induction-ratio') ?? 0.14;
    const segment = Math.max(16, Math.floor(lengths[0] / 4));
    const bos = tokenizer.encode('', { addSpecialTokens: true });
    const scores = await razorScores(model, { seed, segment, repeats: 4, firstId: 2, bos });
    const a = razorAlphas(scores, echoRatio, inductionRatio);
    alphas = a.alphas;
    Object.assign(runOptions, { echo_ratio: echoRatio, induction_ratio: inductionRatio });
    data = `random segment of ${segment} tokens repeated 4 times`;
    extra = { echo: scores.echo, induction: scores.induction, selected: a.selected };
  } else {
    const samples = intOption(v.samples, '--samples', 1) ?? 4;
    const bar = new Progress('identify');
    const r = await retrievalScores(model, tokenizer, { seed, samples, lengths, style, stopIds: ckpt.eosTokenIds, onProgress: (d, t) => bar.update(d, t) });
    const max = Math.max(...r.scores.flat()) || 1;
    alphas = r.scores.map((row) => row.map((s) => s / max));
    Object.assign(runOptions, { samples });
    data = `${r.runs} passkey prompts at lengths ${lengths.join(', ')}, ${r.successful} answered correctly`;
    extra = { retrieval_scores: r.scores, runs: r.runs, successful: r.successful };
  }
  if (v.zigzag) {
    const z = zigzag(alphas, sparsity!);
    extra = { ...extra, zigzag: { sparsity, streaming_layers: z.streamingLayers, scores: alphas } };
    alphas = z.alphas;
  }
  const files = writePattern(v.out, {
    method: v.zigzag ? `${method}+zigzag` : method, options: { ...runOptions, device: gpu ? 'gpu' : 'cpu', ...(sparsity !== undefined ? { sparsity } : {}) },
    seed, data, alphas, sink, recent, seconds: (performance.now() - t0) / 1000, extra,
  });
  removeStale(v.out, previous, files);
  process.stderr.write(`duet: wrote ${files.join(', ')}\n`);
  if (v.json) process.stdout.write(`${JSON.stringify({ method, alphas, files })}\n`);
  return 0;
}
