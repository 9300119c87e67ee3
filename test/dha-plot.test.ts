// `duet dha plot`: the arms' losses against training tokens from their dha.json reports, the
// tokens-to-target measure (exact values on synthetic histories), the SVG's series and labels, and
// the refusals of missing or malformed run folders.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { armFromReport, compareArms, lossCurveSvg, smoothLosses, tokensToReach, type LossPoint } from '../src/dha/plot.ts';
import { plotDhaRuns } from '../src/node/dha-plot.ts';
import { dhaCommand } from '../src/cli/dha.ts';

const dir = mkdtempSync(join(tmpdir(), 'duet-dha-plot-'));
const pts = (losses: number[], step = 100, converted = true): LossPoint[] => losses.map((loss, i) => ({ tokens: i * step, loss, converted }));

test('smoothLosses: trailing mean over the last window points', () => {
  assert.equal(smoothLosses(pts([5, 4, 3, 2, 1]), 1), [5, 4, 3, 2, 1]);
  assert.equal(smoothLosses(pts([5, 4, 3, 2, 1]), 2), [5, 4.5, 3.5, 2.5, 1.5]);
  assert.equal(smoothLosses(pts([6, 3, 0, 3]), 3), [6, 4.5, 3, 2]);
  assert.throws(() => smoothLosses(pts([1]), 0), /window must be an integer ≥ 1/);
});

test('tokensToReach: the first recorded token count with smoothed loss ≤ target, null if never', () => {
  const s = pts([5, 4, 3, 2, 1]);
  assert.is(tokensToReach(s, 2.5), 300);
  assert.is(tokensToReach(s, 3), 200, 'equal counts as reached');
  assert.is(tokensToReach(s, 2.4, 2), 400);
  assert.is(tokensToReach(s, 0.5), null);
  // A noisy dip reaches the target raw but not smoothed.
  const noisy = pts([3, 1, 3, 3]);
  assert.is(tokensToReach(noisy, 1.5), 100);
  assert.is(tokensToReach(noisy, 1.5, 2), null);
  // Points before the conversion (DHA's fusion, whose start is the source) never count, and are not smoothed in.
  const fused: LossPoint[] = [{ tokens: 0, loss: 1, converted: false }, { tokens: 100, loss: 5, converted: false }, ...pts([4, 2, 1], 100).map((p) => ({ ...p, tokens: p.tokens + 100 }))];
  assert.is(tokensToReach(fused, 2), 200);
  assert.is(tokensToReach(fused, 1.5, 2), 300);
});

// Reports as `duet dha` writes them (dha.json), cut to what the plot reads.
const dhaReport = {
  method: 'dha', budget: 0.5, losses: { original: 1, fusionStart: 1, fused: 5, converted: 4.5, final: 2 },
  curve: [
    { stage: 'fusion', step: 2, tokens: 100, validationLoss: 4, constraint: 0.5 },
    { stage: 'fusion', step: 4, tokens: 200, validationLoss: 5, constraint: 0.05 },
    { stage: 'train', step: 4, tokens: 200, validationLoss: 4.5 },
    { stage: 'train', step: 6, tokens: 300, validationLoss: 2.8 },
    { stage: 'train', step: 8, tokens: 400, validationLoss: 2 },
  ],
  history: [1, 2, 3, 4, 5, 6, 7, 8].map((k) => ({ stage: k <= 4 ? 'fusion' : 'train', step: k, tokens: 50 * k, loss: 10 - k })),
};
const gqaReport = {
  method: 'gqa-meanpool', budget: 0.5, losses: { original: 1, fusionStart: null, fused: null, converted: 9, final: 3 },
  curve: [0, 2, 4, 6, 8].map((k, i) => ({ stage: 'train', step: k, tokens: 50 * k, validationLoss: [9, 4, 3.5, 3.2, 3][i] })),
  history: [1, 2, 3, 4, 5, 6, 7, 8].map((k) => ({ stage: 'train', step: k, tokens: 50 * k, loss: 9 - k / 2 })),
};
const keptReport = {
  method: 'continued', budget: 1, losses: { original: 1, fusionStart: null, fused: null, converted: 1, final: 0.9 },
  curve: [0, 4, 8].map((k, i) => ({ stage: 'train', step: k, tokens: 50 * k, validationLoss: [1, 0.95, 0.9][i] })),
};

test('armFromReport: labels, DHA\'s 0-token point from fusionStart, stages', () => {
  const d = armFromReport(dhaReport, 'dha.json');
  assert.is(d.label, 'DHA 50% KV');
  assert.equal(d.validation.map((p) => [p.tokens, p.loss, p.converted]), [[0, 1, false], [100, 4, false], [200, 5, false], [200, 4.5, true], [300, 2.8, true], [400, 2, true]]);
  assert.is(d.training.length, 8);
  const g = armFromReport(gqaReport, 'g.json');
  assert.is(g.label, 'GQA mean-pool 50% KV');
  assert.is(g.validation[0].tokens, 0);
  const k = armFromReport(keptReport, 'k.json');
  assert.is(k.label, 'source continued 100% KV');
  assert.equal(k.training, [], 'reports without history');
  assert.is(armFromReport({ ...dhaReport, budget: 0.375 }, 'x').label, 'DHA 37.5% KV');
});

test('armFromReport refuses malformed reports with the field named', () => {
  assert.throws(() => armFromReport([], 'f.json'), /f\.json: not a `duet dha` report/);
  assert.throws(() => armFromReport({ ...dhaReport, method: 'x' }, 'f.json'), /f\.json: method must be one of dha, gqa-meanpool, continued \(got "x"\)/);
  assert.throws(() => armFromReport({ ...dhaReport, budget: '0.5' }, 'f.json'), /budget must be a number/);
  assert.throws(() => armFromReport({ ...dhaReport, curve: undefined }, 'f.json'), /f\.json: curve must be an array/);
  assert.throws(() => armFromReport({ ...gqaReport, curve: [{ stage: 'train', tokens: 0 }] }, 'f.json'), /curve\[0\] needs a tokens count ≥ 0 and a finite validationLoss/);
  assert.throws(() => armFromReport({ ...gqaReport, curve: [{ stage: 'x', tokens: 0, validationLoss: 1 }] }, 'f.json'), /curve\[0\]\.stage must be "fusion" or "train"/);
  assert.throws(() => armFromReport({ ...gqaReport, curve: [...gqaReport.curve].reverse() }, 'f.json'), /curve goes back in tokens at point 1 \(400 then 300\)/);
  assert.throws(() => armFromReport({ ...gqaReport, history: [{ stage: 'train', tokens: 1, loss: null }] }, 'f.json'), /history\[0\] needs/);
});

test('compareArms: tokens to reach the GQA arm\'s final loss, on validation and smoothed training losses', () => {
  const arms = [armFromReport(dhaReport, 'd'), armFromReport(gqaReport, 'g'), armFromReport(keptReport, 'k')];
  const c = compareArms(arms, { target: 1 });
  assert.is(c.target, 3);
  assert.is(c.targetArm, 'GQA mean-pool 50% KV');
  // DHA: its fusion points (the source at 0 tokens, 4 at 100) do not count; 2.8 ≤ 3 at 300 tokens.
  assert.equal(c.arms.map((a) => [a.label, a.finalTokens, a.finalLoss, a.tokensToTarget]), [
    ['DHA 50% KV', 400, 2, 300], ['GQA mean-pool 50% KV', 400, 3, 400], ['source continued 100% KV', 400, 0.9, 0],
  ]);
  // Training losses, trailing mean of 2: GQA 9 − k/2 ends at mean(5.5, 5) = 5.25; DHA's converted
  // steps 5..8 (5, 4, 3, 2) smooth to 5, 4.5, 3.5, 2.5, so 5 ≤ 5.25 at its step 5 (250 tokens);
  // GQA itself first gets there at its last step (400 tokens).
  const t = compareArms(arms.slice(0, 2), { target: 1, series: 'training', window: 2 });
  assert.is(t.target, 5.25);
  assert.equal(t.arms.map((a) => a.tokensToTarget), [250, 400]);
  assert.throws(() => compareArms(arms, { target: 0, series: 'training' }), /source continued 100% KV: no training losses recorded/);
  assert.throws(() => compareArms(arms, { target: 3 }), /target arm 3 is not one of the 3 arms/);
});

test('lossCurveSvg: one series per arm with its label and colour, the target line', () => {
  const arms = [armFromReport(dhaReport, 'd'), armFromReport(gqaReport, 'g'), armFromReport(keptReport, 'k')];
  const svg = lossCurveSvg(arms, compareArms(arms, { target: 1 }));
  assert.ok(svg.startsWith('<svg') && svg.endsWith('</svg>'));
  const lines = [...svg.matchAll(/<polyline fill="none" stroke="([^"]+)"[^>]*points="([^"]+)"/g)];
  assert.is(lines.length, 3, 'one polyline per arm');
  assert.equal(lines.map((m) => m[2].split(' ').length), [6, 5, 3], 'every recorded point');
  assert.is(new Set(lines.map((m) => m[1])).size, 3, 'each its own colour');
  const legend = [...svg.matchAll(/<rect x="\d+" y="\d+" width="12" height="12" fill="([^"]+)"\/><text[^>]*>([^<]+)<\/text>/g)];
  assert.equal(legend.map((m) => [m[1], m[2]]), lines.map((m, i) => [m[1], ['DHA 50% KV', 'GQA mean-pool 50% KV', 'source continued 100% KV'][i]]));
  assert.match(svg, /stroke-dasharray="6 4"\/><text[^>]*>GQA mean-pool 50% KV final 3\.000<\/text>/, 'the target in the legend');
  assert.is([...svg.matchAll(/stroke-dasharray/g)].length, 2, 'the target line and its legend sample');
  assert.match(svg, /Validation loss against training tokens/);
});

function runFolder(name: string, report: unknown): string {
  const d = join(dir, name);
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, 'dha.json'), JSON.stringify(report));
  return d;
}

test('plotDhaRuns and `duet dha plot`: the SVG from run folders, labels told apart by folder, refusals', async () => {
  const d = runFolder('dha-0.5', dhaReport), g = runFolder('gqa-0.5', gqaReport), k = runFolder('kept', keptReport);
  const out = join(dir, 'loss.svg');
  const r = plotDhaRuns({ runs: [d, g, k], out });
  assert.equal(r.comparison.arms.map((a) => a.tokensToTarget), [300, 400, 0]);
  assert.is(readFileSync(out, 'utf8'), `${lossCurveSvg([armFromReport(dhaReport, ''), armFromReport(gqaReport, ''), armFromReport(keptReport, '')], r.comparison)}\n`);
  // Two seeds of one arm: the folder names tell them apart.
  const d2 = runFolder('dha-0.5-seed2', dhaReport);
  const two = plotDhaRuns({ runs: [d, d2, g], out });
  assert.equal(two.comparison.arms.map((a) => a.label), ['DHA 50% KV (dha-0.5)', 'DHA 50% KV (dha-0.5-seed2)', 'GQA mean-pool 50% KV']);
  assert.is(plotDhaRuns({ runs: [d, k], out, target: k }).comparison.targetArm, 'source continued 100% KV');
  const fails = (o: Parameters<typeof plotDhaRuns>[0], re: RegExp) => assert.throws(() => plotDhaRuns(o), re);
  fails({ runs: [join(dir, 'nope'), g], out }, /nope: no such folder/);
  fails({ runs: [out, g], out }, /loss\.svg: not a folder/);
  mkdirSync(join(dir, 'empty'));
  fails({ runs: [join(dir, 'empty'), g], out }, /empty: has no dha\.json; is it a `duet dha` output folder\?/);
  const bad = join(dir, 'bad');
  mkdirSync(bad);
  writeFileSync(join(bad, 'dha.json'), '{"method": ');
  fails({ runs: [bad, g], out }, /bad[/\\]dha\.json: not valid JSON/);
  fails({ runs: [d, k], out }, /no gqa-meanpool run among the runs: name the arm whose final loss is the target with --target DIR/);
  fails({ runs: [d, g, runFolder('gqa-b', gqaReport)], out }, /more than one gqa-meanpool run/);
  fails({ runs: [d, g], out, target: k }, /target .*kept is not one of the runs/);
  fails({ runs: [d, d], out }, /runs names a folder twice/);
  fails({ runs: [d, g], out: join(dir, 'loss.png') }, /out must be a file path ending in \.svg/);
  fails({ runs: [d, g], out: join(dir, 'missing', 'loss.svg') }, /its folder .*missing does not exist/);
  // The CLI: flags to options, a summary on stdout.
  const write = process.stdout.write.bind(process.stdout);
  let printed = '';
  process.stdout.write = ((s: string) => { printed += s; return true; }) as typeof process.stdout.write;
  try {
    assert.is(await dhaCommand(['plot', '--runs', `${d},${g},${k}`, '--out', out, '--json']), 0);
  } finally { process.stdout.write = write; }
  const j = JSON.parse(printed);
  assert.equal(j.arms.map((a: { tokensToTarget: number | null }) => a.tokensToTarget), [300, 400, 0]);
  assert.is(j.target, 3);
  await dhaCommand(['plot', '--out', out]).then(() => assert.unreachable(), (e: Error) => assert.match(e.message, /--runs DIR1,DIR2,\.\.\. is required/));
  await dhaCommand(['plot', '--runs', d]).then(() => assert.unreachable(), (e: Error) => assert.match(e.message, /--out FILE\.svg is required/));
});

test.after(() => rmSync(dir, { recursive: true, force: true }));

test.run();
