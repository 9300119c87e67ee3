// `duet train`: trains the bundled long-context model (fixtures/duet-passkey) from a seed, with a
// progress bar (loss, step rate), checkpoints every --save-every steps and --resume; the recipe
// and the loop are the library's (trainingPlan, trainModel in the Node entry).
import { parseArgs } from 'node:util';
import { TASK_KINDS, trainingPlan, trainModel, type TaskKind } from '../node.js';
import { assertOutputFolder } from '../node/output-folder.js';
import { inFlags } from './flags.js';
import { intOption, numberOption } from './options.js';
import { Progress } from './progress.js';

const options = {
  out: { type: 'string' }, steps: { type: 'string' }, seed: { type: 'string' }, resume: { type: 'boolean' }, force: { type: 'boolean' },
  'save-every': { type: 'string' }, 'tokens-per-step': { type: 'string' }, 'max-len': { type: 'string' },
  tasks: { type: 'string' }, lr: { type: 'string' }, layers: { type: 'string' }, hidden: { type: 'string' }, heads: { type: 'string' },
  'answer-weight': { type: 'string' },
  threads: { type: 'string' }, until: { type: 'string' }, device: { type: 'string' },
} as const;

export async function trainCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: argv, options, strict: true });
  if (!v.out) throw new Error('--out DIR is required');
  if (v.resume && v.force) throw new Error('--resume continues the checkpoint in --out, --force replaces it: give one');
  // A folder holding anything (a trained model above all) is only replaced when asked to.
  if (!v.resume) assertOutputFolder(v.out, { force: v.force, what: 'the trained model', hint: 'add --resume to continue its training or --force to replace it' });
  const tasks = v.tasks ? v.tasks.split(',') as TaskKind[] : undefined;
  for (const t of tasks ?? []) if (!TASK_KINDS.includes(t)) throw new Error(`--tasks: unknown task "${t}"`);
  const plan = trainingPlan({
    steps: intOption(v.steps, '--steps', 1), tasks, maxLength: intOption(v['max-len'], '--max-len', 64),
    hidden: intOption(v.hidden, '--hidden', 8), heads: intOption(v.heads, '--heads', 1), lr: numberOption(v.lr, '--lr'),
    seed: intOption(v.seed, '--seed'), tokensPerStep: intOption(v['tokens-per-step'], '--tokens-per-step', 1),
    layers: intOption(v.layers, '--layers', 1), answerWeight: numberOption(v['answer-weight'], '--answer-weight'),
  });
  const saveEvery = intOption(v['save-every'], '--save-every', 1);
  const until = intOption(v.until, '--until', 1);
  if (v.device !== undefined && !['cpu', 'gpu', 'auto'].includes(v.device)) throw new Error(`--device must be cpu, gpu or auto (got "${v.device}")`);
  const say = (m: string) => process.stderr.write(`duet: ${inFlags(m)}\n`);
  const progress = new Progress('train');
  let last = until ?? plan.steps, first = 0;
  try {
    const r = await trainModel({
      out: v.out, plan, until, saveEvery, resume: v.resume, force: v.force, device: v.device as 'cpu' | 'gpu' | 'auto' | undefined,
      threads: intOption(v.threads, '--threads', 1), notice: say,
      onStart: (s) => {
        if (s.resumedAt !== null) say(`resumed at step ${s.resumedAt}`);
        say(`training ${s.parameters} parameters (${s.plan.model.layers} layers × ${s.plan.model.kvHeads} KV heads, d ${s.plan.model.hidden}) for ${s.plan.steps} steps of ~${s.plan.tokensPerStep} tokens`);
        say(s.device === 'gpu' ? `on the GPU (${s.adapter})` : `on the CPU, ${s.threads} thread${s.threads > 1 ? 's (data-parallel replicas)' : ''}`);
        first = s.resumedAt ?? 0;
        last = Math.min(until ?? plan.steps, plan.steps);
      },
      onStep: (s, ema) => progress.update(s.step - first, last - first,
        `step ${s.step}/${plan.steps} loss ${ema.toFixed(3)} lr ${s.lr.toExponential(1)} |g| ${s.gradNorm.toFixed(2)} ${(s.tokens / s.ms * 1000).toFixed(0)} tok/s`),
    });
    say(`saved ${v.out} (final loss ${r.smoothedLoss.toFixed(4)})`);
  } catch (e) {
    // The plan's row count is --max-len here.
    if (e instanceof Error) e.message = e.message.replace('(model.maxRows)', '(--max-len)');
    throw e;
  }
  return 0;
}
