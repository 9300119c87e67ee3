// `duet dha plot` in Node: reads the dha.json of each `duet dha` output folder, draws the arms'
// losses against training tokens in one SVG (written atomically) and measures the tokens each arm
// needs to reach the target arm's final loss (src/dha/plot.ts does the work).
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { armFromReport, compareArms, lossCurveSvg, type Arm, type Comparison, type LossSeries } from '../dha/plot.js';
import { writeFileAtomic } from './atomic.js';

export interface DhaPlotOptions {
  /** `duet dha` output folders, one per arm. */
  runs: string[];
  /** The SVG written. */
  out: string;
  /** The folder (one of runs) whose final loss is the target; default the one gqa-meanpool run. */
  target?: string;
  series?: LossSeries;
  /** Trailing-mean window (default 1 for validation, 8 for training losses). */
  window?: number;
}

export function readArm(dir: string): Arm {
  if (!existsSync(dir)) throw new Error(`${dir}: no such folder (a \`duet dha --out\` folder)`);
  if (!statSync(dir).isDirectory()) throw new Error(`${dir}: not a folder (a \`duet dha --out\` folder)`);
  const file = join(dir, 'dha.json');
  if (!existsSync(file)) throw new Error(`${dir}: has no dha.json; is it a \`duet dha\` output folder?`);
  let json: unknown;
  try { json = JSON.parse(readFileSync(file, 'utf8')); } catch (e) { throw new Error(`${file}: not valid JSON (${(e as Error).message})`); }
  return armFromReport(json, file);
}

export function plotDhaRuns(o: DhaPlotOptions): { out: string; comparison: Comparison } {
  if (!Array.isArray(o.runs) || o.runs.length === 0) throw new Error('runs must name at least one `duet dha` output folder');
  if (typeof o.out !== 'string' || !o.out.endsWith('.svg')) throw new Error(`out must be a file path ending in .svg (got ${JSON.stringify(o.out)})`);
  const outDir = dirname(resolve(o.out));
  if (!existsSync(outDir) || !statSync(outDir).isDirectory()) throw new Error(`${o.out}: its folder ${outDir} does not exist`);
  const dirs = o.runs.map((d) => resolve(d));
  if (new Set(dirs).size !== dirs.length) throw new Error(`runs names a folder twice: ${o.runs.join(', ')}`);
  const arms = o.runs.map(readArm);
  // Two arms of one method and budget (seeds, learning rates) are told apart by their folders.
  const shared = arms.map((a) => arms.filter((b) => b.label === a.label).length > 1);
  arms.forEach((a, i) => { if (shared[i]) a.label = `${a.label} (${basename(dirs[i])})`; });
  let target: number;
  if (o.target !== undefined) {
    target = dirs.indexOf(resolve(o.target));
    if (target < 0) throw new Error(`target ${o.target} is not one of the runs (${o.runs.join(', ')})`);
  } else {
    const gqa = arms.flatMap((a, i) => (a.method === 'gqa-meanpool' ? [i] : []));
    if (gqa.length !== 1) throw new Error(`${gqa.length === 0 ? 'no' : 'more than one'} gqa-meanpool run among the runs: name the arm whose final loss is the target with --target DIR`);
    target = gqa[0];
  }
  const series = o.series ?? 'validation';
  const comparison = compareArms(arms, { target, series, window: o.window ?? (series === 'training' ? 8 : 1) });
  writeFileAtomic(o.out, `${lossCurveSvg(arms, comparison)}\n`);
  return { out: o.out, comparison };
}
