// `duet dha`: converts a multi-head checkpoint to decoupled heads (DHA) or, as the baseline, to GQA
// by mean-pooling, with continued training, and writes a checkpoint folder (the library's
// convertToDha does the work), resumable (--resume, state saved every --save-every steps; --until
// stops early). Progress on stderr, a summary on stdout. `duet dha plot` draws the
// arms' losses against training tokens from their folders (plotDhaRuns).
import { parseArgs } from 'node:util';
import { DHA_METHODS, type DhaMethod } from '../dha/convert.js';
import { groupsText } from '../dha/allocate.js';
import { convertToDha } from '../node/dha.js';
import { plotDhaRuns } from '../node/dha-plot.js';
import { TASK_KINDS, type TaskKind } from '../tasks/tasks.js';
import { intOption, numberOption } from './options.js';
import { Progress } from './progress.js';

const options = {
  model: { type: 'string' }, out: { type: 'string' }, budget: { type: 'string' }, tokens: { type: 'string' }, method: { type: 'string' },
  'tokens-per-step': { type: 'string' }, 'fusion-share': { type: 'string' }, lr: { type: 'string' }, 'mix-lr': { type: 'string' },
  'multiplier-lr': { type: 'string' }, 'ramp-share': { type: 'string' }, 'max-len': { type: 'string' }, tasks: { type: 'string' }, seed: { type: 'string' },
  'similarity-sequences': { type: 'string' }, 'validation-sequences': { type: 'string' }, 'eval-every': { type: 'string' },
  threads: { type: 'string' }, device: { type: 'string' }, force: { type: 'boolean' }, json: { type: 'boolean' },
  resume: { type: 'boolean' }, 'save-every': { type: 'string' }, until: { type: 'string' },
} as const;

const plotOptions = { runs: { type: 'string' }, out: { type: 'string' }, target: { type: 'string' }, training: { type: 'boolean' }, smooth: { type: 'string' }, json: { type: 'boolean' } } as const;

function dhaPlotCommand(argv: string[]): number {
  const { values: v } = parseArgs({ args: argv, options: plotOptions, strict: true });
  if (!v.runs) throw new Error('--runs DIR1,DIR2,... is required (`duet dha --out` folders, one per arm)');
  if (!v.out) throw new Error('--out FILE.svg is required');
  const runs = v.runs.split(',').filter((r) => r !== '');
  const { out, comparison: c } = plotDhaRuns({ runs, out: v.out, target: v.target, series: v.training ? 'training' : 'validation', window: intOption(v.smooth, '--smooth', 1) });
  if (v.json) {
    process.stdout.write(`${JSON.stringify({ out, ...c })}\n`);
    return 0;
  }
  const k = (n: number | null) => (n === null ? 'never' : `after ${n} tokens`);
  process.stdout.write([
    `${c.series} loss${c.window > 1 ? ` (trailing mean of ${c.window})` : ''}; target: ${c.targetArm}'s final ${c.target.toFixed(4)}`,
    ...c.arms.map((a) => `  ${a.label}: final ${a.finalLoss.toFixed(4)} after ${a.finalTokens} tokens; reaches the target ${k(a.tokensToTarget)}`),
    `plot: ${out}`,
    '',
  ].join('\n'));
  return 0;
}

export async function dhaCommand(argv: string[]): Promise<number> {
  if (argv[0] === 'plot') return dhaPlotCommand(argv.slice(1));
  const { values: v } = parseArgs({ args: argv, options, strict: true });
  if (!v.model) throw new Error('--model DIR is required (a multi-head checkpoint)');
  if (!v.out) throw new Error('--out DIR is required');
  const method = (v.method ?? 'dha') as DhaMethod;
  if (!DHA_METHODS.includes(method)) throw new Error(`--method must be one of ${DHA_METHODS.join(', ')} (got "${v.method}")`);
  // The continued arm keeps every head: its budget is 1.
  if (v.budget === undefined && method !== 'continued') throw new Error('--budget B is required (the kept fraction of the K+V heads, e.g. 0.5)');
  if (v.device !== undefined && v.device !== 'cpu' && v.device !== 'gpu') throw new Error(`--device must be cpu or gpu (got "${v.device}")`);
  if (v.device === 'gpu' && v.threads !== undefined) throw new Error('--threads sets the CPU replicas; with --device gpu the GPU computes each step (give one or the other)');
  const tasks = v.tasks ? v.tasks.split(',') as TaskKind[] : undefined;
  for (const t of tasks ?? []) if (!TASK_KINDS.includes(t)) throw new Error(`--tasks: unknown task "${t}"`);
  if (v.resume && v.force) throw new Error('--resume continues the conversion saved in --out, --force replaces it: give one');
  const say = (m: string) => process.stderr.write(`duet: ${m}\n`);
  const bars = { fusion: new Progress('fusion'), train: new Progress('train') };
  // A resumed stage's bar counts from where it resumed (its rate and eta are this run's).
  const first = { fusion: 0, train: 0 };
  const r = await convertToDha({
    model: v.model, out: v.out, force: v.force, resume: v.resume, method, budget: numberOption(v.budget, '--budget') ?? 1,
    saveEvery: intOption(v['save-every'], '--save-every', 1), until: intOption(v.until, '--until', 1),
    tokens: intOption(v.tokens, '--tokens', 1) ?? 262_144, tokensPerStep: intOption(v['tokens-per-step'], '--tokens-per-step', 1),
    fusionShare: numberOption(v['fusion-share'], '--fusion-share'), lr: numberOption(v.lr, '--lr'), mixLr: numberOption(v['mix-lr'], '--mix-lr'),
    multiplierLr: numberOption(v['multiplier-lr'], '--multiplier-lr'), rampShare: numberOption(v['ramp-share'], '--ramp-share'), maxLength: intOption(v['max-len'], '--max-len', 64), tasks,
    seed: intOption(v.seed, '--seed', -(2 ** 31)), similaritySequences: intOption(v['similarity-sequences'], '--similarity-sequences', 1),
    validationSequences: intOption(v['validation-sequences'], '--validation-sequences', 1), evalEvery: intOption(v['eval-every'], '--eval-every', 1),
    // The card records the conversion's command: a resumed run's is the uninterrupted one's.
    threads: intOption(v.threads, '--threads', 1), device: v.device as 'cpu' | 'gpu' | undefined, command: `duet dha ${argv.filter((a) => a !== '--resume').join(' ')}`, notice: say,
    onStart: (s) => {
      if (s.resumedAt) {
        say(`resumed at ${s.resumedAt.stage} step ${s.resumedAt.step}/${s.resumedAt.steps}`);
        first[s.resumedAt.stage] = s.resumedAt.step;
      }
      const where = s.device === 'gpu' ? `gradients on the GPU (${s.adapter}), the rest on the CPU` : `on the CPU, ${s.threads} thread${s.threads > 1 ? 's' : ''}`;
      say(`${method}: ${s.parameters} parameters, ${s.steps} steps of ~${s.tokensPerStep} tokens (sequences up to ${s.maxLength}), ${where}`);
    },
    onProgress: (p) => {
      if (p.stage === 'similarity') say(`head similarity on ${p.steps} sequences`);
      if (p.stage === 'fusion' || p.stage === 'train') {
        const c = p.constraint === undefined ? '' : ` c ${p.constraint.toFixed(4)}`;
        bars[p.stage].update(p.step - first[p.stage], p.steps - first[p.stage], `step ${p.step}/${p.steps} loss ${p.loss!.toFixed(3)}${c} ${(p.tokensPerSecond ?? 0).toFixed(0)} tok/s`);
      }
    },
  });
  if (!r.report) {
    say(`stopped after step ${r.step}; the state is saved in ${r.out}: the same command with --resume goes on`);
    return 0;
  }
  const { report, out } = r;
  if (v.json) {
    process.stdout.write(`${JSON.stringify(report)}\n`);
    return 0;
  }
  const l = report.losses;
  process.stdout.write([
    `${method} at budget ${report.budget}: ${report.keptHeads} of ${report.totalHeads} K+V heads, saved ${out}`,
    ...report.groups.map((g, i) => `  layer ${i}: ${g.key.length} K (${groupsText(g.key)}), ${g.value.length} V (${groupsText(g.value)})`),
    `  validation loss: source ${l.original.toFixed(4)}${l.fused === null ? '' : `, fused ${l.fused.toFixed(4)}`}, after conversion ${l.converted.toFixed(4)}, after training ${l.final.toFixed(4)} (${report.tokens.fusion + report.tokens.train} tokens, ${report.seconds.toFixed(0)} s)`,
    '',
  ].join('\n'));
  return 0;
}
