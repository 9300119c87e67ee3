// The comparison of `duet dha` arms from their reports (dha.json): one SVG of loss against training
// tokens, one series per arm, and the tokens each arm needs to reach a target loss (by default the
// GQA mean-pool arm's final loss, the "tokens needed to reach GQA's final loss"). Tokens
// count every training token, DHA's fusion included; but only a point where the arm already has its
// final heads (after DHA's collapse) can reach the target: during the fusion the model still holds
// every head, and its first points are the source itself.
import { lineChart } from '../plot/svg.js';
import { DHA_METHODS, type DhaMethod } from './convert.js';

export interface LossPoint {
  tokens: number;
  loss: number;
  /** The model has its final heads here (DHA: after the collapse; the other arms: always). */
  converted: boolean;
}

/** One arm: its method and budget and its losses against training tokens (ascending tokens). */
export interface Arm {
  label: string;
  method: DhaMethod;
  budget: number;
  /** The validation curve, starting at 0 tokens (the source for DHA, the mean-pooled model for GQA). */
  validation: LossPoint[];
  /** Every step's training loss (empty in reports written before it was recorded). */
  training: LossPoint[];
}

export type LossSeries = 'validation' | 'training';

const isNum = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);
/** What a field held, for an error: "missing" or "got <its JSON>". */
const got = (x: unknown): string => (x === undefined ? 'missing' : `got ${JSON.stringify(x).slice(0, 80)}`);

function points(rows: unknown, field: string, where: string, lossKey: string): LossPoint[] {
  if (!Array.isArray(rows)) throw new Error(`${where}: ${field} must be an array of points (is this a \`duet dha\` report?)`);
  return rows.map((p, i) => {
    const r = p as Record<string, unknown> | null;
    if (r === null || typeof r !== 'object' || !isNum(r.tokens) || r.tokens < 0 || !isNum(r[lossKey])) {
      throw new Error(`${where}: ${field}[${i}] needs a tokens count ≥ 0 and a finite ${lossKey} (${got(p)})`);
    }
    if (r.stage !== 'fusion' && r.stage !== 'train') throw new Error(`${where}: ${field}[${i}].stage must be "fusion" or "train" (${got(r.stage)})`);
    return { tokens: r.tokens, loss: r[lossKey] as number, converted: r.stage === 'train' };
  });
}

const METHOD_NAMES: Record<DhaMethod, string> = { dha: 'DHA', 'gqa-meanpool': 'GQA mean-pool', continued: 'source continued' };

/** The arm's default label: method and KV budget ("DHA 50% KV"). */
export function armLabel(method: DhaMethod, budget: number): string {
  return `${METHOD_NAMES[method]} ${Number((budget * 100).toPrecision(4))}% KV`;
}

/**
 * An arm from a parsed dha.json (`where` names the file in errors). The validation curve gets its
 * 0-token point: DHA's fusion step 0 (the source itself), which the report keeps in losses.
 */
export function armFromReport(json: unknown, where: string): Arm {
  const r = json as Record<string, unknown> | null;
  if (r === null || typeof r !== 'object' || Array.isArray(r)) throw new Error(`${where}: not a \`duet dha\` report (a JSON object)`);
  if (!DHA_METHODS.includes(r.method as DhaMethod)) throw new Error(`${where}: method must be one of ${DHA_METHODS.join(', ')} (${got(r.method)})`);
  if (!(isNum(r.budget) && r.budget > 0 && r.budget <= 1)) throw new Error(`${where}: budget must be a number in (0, 1], the kept fraction of the KV heads (${got(r.budget)})`);
  const method = r.method as DhaMethod;
  const validation = points(r.curve, 'curve', where, 'validationLoss');
  const training = r.history === undefined ? [] : points(r.history, 'history', where, 'loss');
  const losses = r.losses ?? {};
  if (typeof losses !== 'object' || losses === null || Array.isArray(losses)) throw new Error(`${where}: losses must be an object (${got(r.losses)})`);
  const start = (losses as Record<string, unknown>).fusionStart;
  if (!(start === undefined || start === null || isNum(start))) throw new Error(`${where}: losses.fusionStart must be a finite number or null (${got(start)})`);
  // In the file's order (point i is the file's [i]), before the 0-token point is put in front.
  for (const [name, s] of [['curve', validation], ['history', training]] as const) {
    for (let i = 1; i < s.length; i++) {
      if (s[i].tokens < s[i - 1].tokens) throw new Error(`${where}: ${name} goes back in tokens at point ${i} (${s[i - 1].tokens} then ${s[i].tokens})`);
      if (s[i - 1].converted && !s[i].converted) throw new Error(`${where}: ${name}[${i}] is a fusion point after the collapse`);
    }
  }
  if (method === 'dha' && isNum(start) && !validation.some((p) => p.tokens === 0)) validation.unshift({ tokens: 0, loss: start, converted: false });
  if (validation.length === 0) throw new Error(`${where}: curve is empty`);
  return { label: armLabel(method, r.budget), method, budget: r.budget, validation, training };
}

/** Trailing mean over the last `window` points (fewer at the start); window 1 is the series itself. */
export function smoothLosses(series: LossPoint[], window: number): number[] {
  if (!(Number.isInteger(window) && window >= 1)) throw new Error(`the smoothing window must be an integer ≥ 1 (got ${window})`);
  // Summed afresh per point (not a running sum), so window 1 returns the losses exactly.
  return series.map((_, i) => {
    const from = Math.max(0, i + 1 - window);
    let sum = 0;
    for (let j = from; j <= i; j++) sum += series[j].loss;
    return sum / (i + 1 - from);
  });
}

/**
 * The first recorded token count at which the loss, smoothed over the converted points only, is ≤
 * target; null if it never is.
 */
export function tokensToReach(series: LossPoint[], target: number, window = 1): number | null {
  const kept = series.filter((p) => p.converted);
  const s = smoothLosses(kept, window);
  const i = s.findIndex((v) => v <= target);
  return i < 0 ? null : kept[i].tokens;
}

export interface Comparison {
  series: LossSeries;
  window: number;
  /** The arm whose final (smoothed) loss is the target. */
  targetArm: string;
  target: number;
  arms: Array<{ label: string; method: DhaMethod; budget: number; finalTokens: number; finalLoss: number; tokensToTarget: number | null }>;
}

const seriesOf = (a: Arm, s: LossSeries) => (s === 'validation' ? a.validation : a.training);

/**
 * Tokens each arm needs to reach the target arm's final smoothed loss (the target arm reaches it by
 * definition, at its last point or earlier). Labels are made unique by the caller.
 */
export function compareArms(arms: Arm[], o: { target: number; series?: LossSeries; window?: number }): Comparison {
  const series = o.series ?? 'validation', window = o.window ?? 1;
  if (arms.length === 0) throw new Error('no arms to compare');
  const t = arms[o.target];
  if (!t) throw new Error(`target arm ${o.target} is not one of the ${arms.length} arms`);
  for (const a of arms) {
    const s = seriesOf(a, series);
    if (s.length === 0) throw new Error(`${a.label}: no ${series} losses recorded (training losses are in reports written since \`history\` was added)`);
    if (!s.some((p) => p.converted)) throw new Error(`${a.label}: no ${series} loss after the conversion (a run without continued-training steps)`);
  }
  const final = (a: Arm) => { const s = smoothLosses(seriesOf(a, series).filter((p) => p.converted), window); return s[s.length - 1]; };
  const target = final(t);
  return {
    series, window, targetArm: t.label, target,
    arms: arms.map((a) => {
      const s = seriesOf(a, series);
      return { label: a.label, method: a.method, budget: a.budget, finalTokens: s[s.length - 1].tokens, finalLoss: final(a), tokensToTarget: tokensToReach(s, target, window) };
    }),
  };
}

/** The SVG of the arms' (smoothed) losses against training tokens, with the target as a dashed line. */
export function lossCurveSvg(arms: Arm[], c: Comparison): string {
  const what = c.series === 'validation' ? 'Validation loss' : 'Training loss';
  const smoothed = c.window > 1 ? ` (trailing mean of ${c.window})` : '';
  return lineChart(arms.map((a) => {
    // Smoothed apart before and after the collapse, so the mean does not blur the jump.
    const s = seriesOf(a, c.series), before = s.filter((p) => !p.converted), after = s.filter((p) => p.converted);
    const m = [...smoothLosses(before, c.window), ...smoothLosses(after, c.window)];
    return { label: a.label, points: [...before, ...after].map((p, i): [number, number] => [p.tokens, m[i]]) };
  }), {
    title: `${what} against training tokens`, xLabel: 'training tokens', yLabel: `${what.toLowerCase()}${smoothed}`,
    hLines: [{ y: c.target, label: `${c.targetArm} final ${c.target.toFixed(3)}` }],
  });
}
