// `duet locret train`: trains Locret retaining heads for a model (backbone frozen) and saves them
// beside it (locret.json + locret.safetensors, docs/locret.md).
import { parseArgs } from 'node:util';
import { basename, resolve } from 'node:path';
import { trainLocretHeads } from '../kv/locret/train.js';
import { chooseTrainingGpu, type TrainingDevice } from '../api/device.js';
import { nodeModelFiles } from '../node/files.js';
import { createNodeGpu } from '../node/gpu.js';
import type { TaskKind } from '../tasks/tasks.js';
import { existingLocretFiles, locretOutputFolder, saveLocretHeads } from '../node/locret-file.js';
import { intOption, numberOption } from './options.js';
import { inFlags } from './flags.js';
import { Progress } from './progress.js';

const options = {
  model: { type: 'string' }, out: { type: 'string' }, steps: { type: 'string' }, lr: { type: 'string' },
  'seq-len': { type: 'string' }, device: { type: 'string' }, tasks: { type: 'string' }, seed: { type: 'string' }, 'eval-samples': { type: 'string' }, force: { type: 'boolean' },
} as const;

export async function locretCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'train') throw new Error(`duet locret: unknown subcommand ${sub === undefined ? '(none)' : `"${sub}"`}; the one there is: duet locret train --model DIR`);
  const { values: v } = parseArgs({ args: rest, options, strict: true });
  if (!v.model) throw new Error('--model DIR is required');
  const dir = locretOutputFolder(v.out ?? v.model);
  // Checked before any work, and again by the save itself.
  const existing = existingLocretFiles(dir);
  if (existing.length && !v.force) throw new Error(`${existing.join(' and ')} already exist${existing.length === 1 ? 's' : ''}; pass --force to replace them`);
  const loadBar = new Progress('loading');
  let bar: Progress | null = null, evalBar: Progress | null = null;
  const steps = intOption(v.steps, '--steps', 1);
  const say = (m: string) => process.stderr.write(`duet: ${inFlags(m)}\n`);
  const gpu = await chooseTrainingGpu(v.device as TrainingDevice | undefined, () => createNodeGpu(), say);
  const r = await trainLocretHeads(nodeModelFiles(v.model), {
    steps, lr: numberOption(v.lr, '--lr'), seqLen: intOption(v['seq-len'], '--seq-len', 32), seed: intOption(v.seed, '--seed', -(2 ** 31)),
    tasks: v.tasks?.split(',').map((t) => t.trim() as TaskKind),
    evalSamples: intOption(v['eval-samples'], '--eval-samples', 0),
    onLoad: (done, total) => loadBar.update(done, total),
    onEval: (done, total) => (evalBar ??= new Progress('held-out labels')).update(done, total),
    onStep: (s) => {
      (bar ??= new Progress('locret')).update(s.step, steps ?? 400, `loss ${s.loss.toExponential(3)} lr ${s.lr.toExponential(2)}${s.clipped ? ` clipped ${s.clipped}` : ''}`);
    },
  }, gpu).finally(() => gpu?.destroy());
  const held = r.heldOut;
  if (held) {
    const q = (x: { topRecall: number; massRecall: number; spearman: number }) =>
      `top-10% recall ${x.topRecall.toFixed(3)}, label mass kept ${x.massRecall.toFixed(3)}, Spearman ${x.spearman.toFixed(3)}`;
    process.stderr.write(`duet: held-out (${held.samples} sequences): untrained ${q(held.before)}; trained ${q(held.after)}; recency baseline ${q(held.recency)}\n`);
  }
  const files = await saveLocretHeads(dir, r.heads, r.config, { modelName: basename(resolve(v.model)), training: r.training }, { overwrite: v.force });
  process.stderr.write(`duet: trained ${r.training.steps} steps on the ${r.device.toUpperCase()} in ${r.training.seconds} s (loss ${r.reports[0].loss.toExponential(3)} → ${r.reports[r.reports.length - 1].loss.toExponential(3)}); wrote ${files.join(', ')}\n`);
  return 0;
}
