// `duet dha` resumes: a conversion stopped (convertToDha's `until`) or crashed in the fusion or the
// training stage and resumed ends with the same bytes (weights, config, report but its seconds,
// card) as an uninterrupted run, for DHA and the GQA baseline; the refusals (resume with force, no
// state, a finished conversion, other arguments or source, a corrupted state, a fresh run into an
// unfinished folder); the CLI's --until / --resume with "resumed at" on stderr. A tiny random model,
// 6 steps of 300 tokens (DHA: 3 fusion + 3 training), one thread (runs agree bit for bit at one count).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dhaCommand } from '../src/cli/dha.ts';
import type { ConvertOptions, ConvertReport } from '../src/dha/convert.ts';
import { saveModel } from '../src/node/checkpoint-io.ts';
import { convertToDha, DHA_STATE } from '../src/node/dha.ts';
import { holdsModel } from '../src/node/output-folder.ts';
import { Arena } from '../src/train/arena.ts';
import { TrainModel, cpuTrainModel, type TrainConfig } from '../src/train/model.ts';
import { VOCAB_SIZE } from '../src/train/vocab.ts';

const c: TrainConfig = { vocab: VOCAB_SIZE, hidden: 16, layers: 2, heads: 4, kvHeads: 4, headDim: 4, intermediate: 24, eps: 1e-5, ropeTheta: 10000, maxRows: 160 };
const base: ConvertOptions = { method: 'dha', budget: 0.375, tokens: 1800, tokensPerStep: 300, maxLength: 160, tasks: ['passkey'], similaritySequences: 2, validationSequences: 2, seed: 3 };
const gqa: ConvertOptions = { ...base, method: 'gqa-meanpool', budget: 0.5 };
const dir = mkdtempSync(join(tmpdir(), 'duet-dha-resume-'));

async function sourceFolder(name: string, seed: number): Promise<string> {
  const m = cpuTrainModel(await Arena.create((k) => TrainModel.arenaBytes(c, k)), c);
  m.initialise(seed);
  const path = join(dir, name);
  saveModel(path, c, Float32Array.from(m.params), 4096, {});
  return path;
}

const src = await sourceFolder('src', 8);
const fresh = (name: string) => join(dir, name);

/** What a finished folder holds, less the wall-clock seconds. */
function finished(out: string) {
  const read = (f: string) => readFileSync(join(out, f));
  const { seconds, ...report } = JSON.parse(read('dha.json').toString()) as ConvertReport & { source: string };
  assert.ok(seconds >= 0);
  return {
    weights: read('model.safetensors'), config: read('config.json').toString(), report,
    card: read('README.md').toString().replace(/\d+ s\./, 'N s.'), state: existsSync(join(out, DHA_STATE)),
  };
}

function assertSameAsUninterrupted(out: string, ref: string): void {
  const a = finished(out), b = finished(ref);
  assert.ok(a.weights.equals(b.weights), 'model.safetensors bit for bit');
  assert.is(a.config, b.config);
  assert.equal({ ...a.report, source: '' }, { ...b.report, source: '' });
  assert.is(a.card, b.card);
  assert.is(a.state, false, `${DHA_STATE}/ removed once the model is written`);
}

const stateJson = (out: string) => JSON.parse(readFileSync(join(out, DHA_STATE, 'training_state.json'), 'utf8'));

async function message(p: Promise<unknown>): Promise<string> {
  try { await p; } catch (e) { return (e as Error).message; }
  return '(no error)';
}

const refs = { dha: fresh('ref-dha'), gqa: fresh('ref-gqa') };
const refReports: Record<string, ConvertReport> = {};

test('uninterrupted references (dha: 3 fusion + 3 training steps; gqa-meanpool: 6 training steps)', async () => {
  refReports.dha = (await convertToDha({ ...base, model: src, out: refs.dha, threads: 1 })).report;
  refReports.gqa = (await convertToDha({ ...gqa, model: src, out: refs.gqa, threads: 1 })).report;
  assert.equal(refReports.dha.steps, { fusion: 3, train: 3 });
  assert.equal(refReports.gqa.steps, { fusion: 0, train: 6 });
  assert.ok(!existsSync(join(refs.dha, DHA_STATE)));
});

test('dha stopped in the fusion stage and resumed: the same weights, losses and report', async () => {
  const out = fresh('fusion');
  const stop = await convertToDha({ ...base, model: src, out, threads: 1, until: 2 });
  assert.is(stop.report, null);
  // Only the state: the folder does not pass for a model.
  assert.ok(existsSync(join(out, DHA_STATE, 'manifest.json')));
  assert.ok(!existsSync(join(out, 'config.json')) && !existsSync(join(out, 'dha-manifest.json')) && !holdsModel(out));
  const s = stateJson(out);
  assert.is(s.stage, 'fusion');
  assert.is(s.step, 2);
  assert.equal(s.progress.history.map((p: { loss: number }) => p.loss), refReports.dha.history.slice(0, 2).map((p) => p.loss));
  const r = await convertToDha({ ...base, model: src, out, threads: 1, resume: true });
  assert.equal(r.resumedAt, { stage: 'fusion', step: 2, steps: 3 });
  assert.equal(r.report!.history, refReports.dha.history);
  assert.equal(r.report!.losses, refReports.dha.losses);
  assertSameAsUninterrupted(out, refs.dha);
});

test('dha resumed twice (fusion step 1, then training step 1 of 3), and after a crash past a periodic save', async () => {
  const out = fresh('train');
  await convertToDha({ ...base, model: src, out, threads: 1, until: 1 });
  const mid = await convertToDha({ ...base, model: src, out, threads: 1, resume: true, until: 4 });
  assert.equal(mid.resumedAt, { stage: 'fusion', step: 1, steps: 3 });
  assert.is(stateJson(out).stage, 'train');
  const r = await convertToDha({ ...base, model: src, out, threads: 1, resume: true });
  assert.equal(r.resumedAt, { stage: 'train', step: 1, steps: 3 });
  assertSameAsUninterrupted(out, refs.dha);
  // Saves every 2 steps; an error at step 5 leaves the state of step 4.
  const crash = fresh('crash');
  const err = await message(convertToDha({
    ...base, model: src, out: crash, threads: 1, saveEvery: 2,
    onProgress: (p) => { if (p.stage === 'train' && p.step === 2) throw new Error('crash'); },
  }));
  assert.is(err, 'crash');
  assert.is(stateJson(crash).step, 4);
  assert.ok(!holdsModel(crash));
  const again = await convertToDha({ ...base, model: src, out: crash, threads: 1, resume: true });
  assert.equal(again.resumedAt, { stage: 'train', step: 1, steps: 3 });
  assertSameAsUninterrupted(crash, refs.dha);
});

test('gqa-meanpool (training only) stopped and resumed: the same result', async () => {
  const out = fresh('gqa');
  await convertToDha({ ...gqa, model: src, out, threads: 1, until: 2 });
  const r = await convertToDha({ ...gqa, model: src, out, threads: 1, resume: true });
  assert.equal(r.resumedAt, { stage: 'train', step: 2, steps: 6 });
  assert.equal(r.report!.losses, refReports.gqa.losses);
  assertSameAsUninterrupted(out, refs.gqa);
});

test('refusals: resume with force, no state, a finished conversion, other arguments or source, a corrupted state, a fresh run into an unfinished folder', async () => {
  const out = fresh('errors');
  const run = (o: Partial<Parameters<typeof convertToDha>[0]> = {}) => message(convertToDha({ ...base, model: src, out, threads: 1, ...o }));
  assert.match(await run({ resume: true, force: true }), /^resume continues the conversion saved in out, force replaces it: set one/);
  assert.match(await run({ resume: true }), /resume is set but .*errors holds no saved conversion state \(dha-state\/manifest\.json\)/);
  assert.match(await run({ out: refs.dha, resume: true }), /resume is set but .*ref-dha holds a finished conversion \(dha-manifest\.json, no dha-state\/\): nothing to resume/);
  await convertToDha({ ...base, model: src, out, threads: 1, until: 2 });
  assert.match(await run(), /errors: not empty \(dha-state\); refusing to overwrite it with the converted model: add --force to replace it or --resume to continue the unfinished conversion it holds/);
  assert.match(await run({ resume: true, budget: 0.5, seed: 4, tokens: 2400 }),
    /training_state\.json: the saved conversion was made with other arguments: this run has budget 0\.5 \(saved: 0\.375\), tokens 2400 \(saved: 1800\), seed 4 \(saved: 3\); resume with the same arguments/);
  assert.match(await run({ resume: true, method: 'gqa-meanpool', budget: 0.5 }), /method "gqa-meanpool" \(saved: "dha"\), budget 0\.5 \(saved: 0\.375\), fusionShare null \(saved: 0\.5\)/);
  assert.match(await run({ resume: true, tasks: ['niah-single'], mixLr: 0.1 }), /tasks \["niah-single"\] \(saved: \["passkey"\]\), mixLr 0\.1 \(saved: 0\.05\)/);
  assert.match(await run({ resume: true, until: 2 }), /until 2: the saved state is after step 2 already/);
  const other = await sourceFolder('other', 9);
  assert.match(await run({ resume: true, model: other }), /this run has the source model's weights \(saved from .*src\)/);
  // Nothing was lost by the refusals: the state still resumes.
  const s = readFileSync(join(out, DHA_STATE, 'optimizer.bin'));
  s[100] ^= 1;
  writeFileSync(join(out, DHA_STATE, 'optimizer.bin'), s);
  assert.match(await run({ resume: true }), /optimizer\.bin: .* \(changed or corrupted since it was saved\)/);
  s[100] ^= 1;
  writeFileSync(join(out, DHA_STATE, 'optimizer.bin'), s);
  await convertToDha({ ...base, model: src, out, threads: 1, resume: true });
  assertSameAsUninterrupted(out, refs.dha);
  // force starts again from the source, dropping an unfinished state.
  const forced = fresh('forced');
  await convertToDha({ ...gqa, model: src, out: forced, threads: 1, until: 3 });
  await convertToDha({ ...base, model: src, out: forced, threads: 1, force: true });
  assertSameAsUninterrupted(forced, refs.dha);
  assert.match(await message(convertToDha({ ...base, model: src, out: forced, threads: 1, saveEvery: 0 })), /saveEvery must be an integer ≥ 1/);
});

test('duet dha --until, then --resume: "resumed at" on stderr, the uninterrupted result; --resume with --force refused', async () => {
  const out = fresh('cli');
  const args = ['--model', src, '--out', out, '--budget', '0.375', '--tokens', '1800', '--tokens-per-step', '300', '--max-len', '160',
    '--tasks', 'passkey', '--similarity-sequences', '2', '--validation-sequences', '2', '--seed', '3', '--threads', '1'];
  let stderr = '';
  const write = process.stderr.write;
  process.stderr.write = ((s: string) => { stderr += s; return true; }) as typeof process.stderr.write;
  const stdout = process.stdout.write;
  process.stdout.write = (() => true) as typeof process.stdout.write;
  try {
    assert.is(await dhaCommand([...args, '--until', '4', '--save-every', '2']), 0);
    assert.match(stderr, /stopped after step 4; the state is saved in .*cli: the same command with --resume goes on/);
    assert.is(await dhaCommand([...args, '--resume']), 0);
    assert.match(stderr, /duet: resumed at train step 1\/3\n/);
    assert.match(await message(dhaCommand([...args, '--resume', '--force'])), /--resume continues the conversion saved in --out, --force replaces it: give one/);
  } finally {
    process.stderr.write = write;
    process.stdout.write = stdout;
  }
  const a = finished(out);
  assert.ok(a.weights.equals(finished(refs.dha).weights));
  assert.match(a.card, /Made by `duet dha --model .* --threads 1`/);
  assert.is(a.state, false);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));

test.run();
