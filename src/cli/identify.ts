// `duet identify`: finds retrieval heads (DuoAttention gates, retrieval score, RazorAttention, with
// the ZigzagAttention layer constraint on top) and writes a DuoAttention-format pattern.
import { parseArgs } from 'node:util';
import { IDENTIFY_METHODS, identifyHeads, PATTERN_FILES, savePattern, TASK_KINDS, type IdentifyMethod, type TaskKind } from '../node.js';
import { claimOutputFolder, removeStale } from '../node/output-folder.js';
import { intOption, numberOption } from './options.js';
import { inFlags } from './flags.js';
import { Progress } from './progress.js';

const METHODS = IDENTIFY_METHODS;

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
function taskKindsOption(value: string | undefined): TaskKind[] | 'words' | undefined {
  if (value === undefined || value === 'words') return value;
  const kinds = value.split(',').map((k) => k.trim());
  for (const k of kinds) if (!TASK_KINDS.includes(k as TaskKind)) throw new Error(`--data must be "words" or task kinds from ${TASK_KINDS.join(', ')} (got "${k}")`);
  return kinds as TaskKind[];
}

export async function identifyCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: argv, options, strict: true });
  if (!v.model) throw new Error('--model DIR is required');
  if (!v.out) throw new Error('--out DIR is required');
  const method = v.method as IdentifyMethod;
  if (!METHODS.includes(method)) throw new Error(`--method must be one of ${METHODS.join(', ')} (got "${v.method ?? ''}")`);
  const sparsity = numberOption(v.sparsity, '--sparsity');
  if (sparsity !== undefined && !(sparsity >= 0 && sparsity <= 1)) throw new Error(`--sparsity must be in [0, 1] (got ${sparsity})`);
  if (v.zigzag && sparsity === undefined) throw new Error('--zigzag needs --sparsity (the fraction of KV heads, i.e. layers, made streaming)');
  const seed = intOption(v.seed, '--seed') ?? 0;
  const sink = intOption(v.sink, '--sink'), recent = intOption(v.recent, '--recent', 1);
  const lengths = (v.lengths ?? '512,1024').split(',').map((s) => intOption(s.trim(), '--lengths', 32)!);
  if (lengths.length !== 2 || lengths[0] > lengths[1]) throw new Error('--lengths takes min,max (min ≤ max)');
  // Checked before any work: never into a model's folder or over files that are not a pattern's.
  const previous = claimOutputFolder(v.out, { flag: 'duet identify --out', what: 'a head pattern', owns: (n) => PATTERN_FILES.includes(n) });
  if (previous.length) process.stderr.write(`duet: ${v.out} holds a previous pattern (${previous.join(', ')}); it will be replaced\n`);

  const say = (m: string) => process.stderr.write(`duet: ${inFlags(m)}\n`);
  const loadBar = new Progress('loading');
  let bar: Progress | null = null;
  const r = await identifyHeads(v.model, {
    method, sparsity, zigzag: v.zigzag, seed, window: { sink, recent }, lengths: [lengths[0], lengths[1]],
    steps: intOption(v.steps, '--steps', 1), lr: numberOption(v.lr, '--lr'), reg: numberOption(v.reg, '--reg'), data: taskKindsOption(v.data),
    samples: intOption(v.samples, '--samples', 1),
    echoRatio: numberOption(v['echo-ratio'], '--echo-ratio'), inductionRatio: numberOption(v['induction-ratio'], '--induction-ratio'),
    device: v.device as 'cpu' | 'gpu' | 'auto' | undefined, notice: say,
    onStart: (s) => say(`identifying with ${s.method} on ${s.device}; ${s.layers} layers × ${s.kvHeads} KV heads`),
    onProgress: (e) => {
      if (e.step === 'weights') return loadBar.update(e.done, e.total);
      bar ??= new Progress('identify');
      bar.update(e.done, e.total, e.loss === undefined ? '' : `loss ${e.loss.toFixed(5)} mse ${e.distill!.toExponential(2)}`);
    },
  });
  const files = savePattern(v.out, r);
  removeStale(v.out, previous, files);
  process.stderr.write(`duet: wrote ${files.join(', ')}\n`);
  if (v.json) process.stdout.write(`${JSON.stringify({ method, alphas: r.alphas, files })}\n`);
  return 0;
}
