// Nothing lost, nothing silently wrong (issue 18): atomic checkpoints under injected failures,
// refusals to overwrite, divergence stops, checks on load, and the CLI's exit codes for each.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, utimesSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { nodeWriteFs, recoverFileSet, writeChunksAtomic, writeFileAtomic, writeFileSet, type WriteFs } from '../src/node/atomic.ts';
import { CHECKPOINT_MANIFEST, loadCheckpointState, modelFiles, saveCheckpoint, saveState } from '../src/node/checkpoint-io.ts';
import { parameterCount, type TrainConfig } from '../src/train/model.ts';
import { assertFiniteStep, type TrainerState } from '../src/train/trainer.ts';
import { VOCAB_SIZE } from '../src/train/vocab.ts';
import { claimOutputFolder, removeStale } from '../src/node/output-folder.ts';
import { ensureFreshDist, staleInputs } from './helpers/fresh-dist.ts';
import { rejects } from './helpers/rejects.ts';
import { rewriteTensors, writeCheckpoint } from './helpers/checkpoint.ts';

ensureFreshDist();

const tmp = (tag: string) => mkdtempSync(join(tmpdir(), `duet-rel-${tag}-`));
const ROOT = new URL('..', import.meta.url).pathname;
async function duet(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [join(ROOT, 'bin/duet.mjs'), ...args], { cwd: ROOT, timeout: 120_000 });
    return { stdout, stderr, code: 0 };
  } catch (e) {
    const err = e as { stdout: string; stderr: string; code: number };
    return { stdout: err.stdout, stderr: err.stderr, code: err.code };
  }
}

const C: TrainConfig = { vocab: VOCAB_SIZE, hidden: 16, layers: 1, heads: 2, kvHeads: 1, headDim: 8, intermediate: 24, eps: 1e-5, ropeTheta: 10000, maxRows: 200 };
const N = parameterCount(C);
const state = (step: number, base: number): TrainerState => {
  const f = (k: number) => Float32Array.from({ length: N }, (_, i) => Math.sin(i * 0.37 + base + k) * 0.1);
  return { step, params: f(0), m: f(1), v: f(2).map(Math.abs) };
};
const EXTRA = { plan: { model: C } };

/** A WriteFs that fails at operation `failAt`; a failing write leaves half the bytes, as a kill would. */
function failingFs(failAt: number, counter = { n: 0 }): WriteFs {
  const tick = () => { if (counter.n++ === failAt) throw new Error('injected failure'); };
  return {
    writeDurable(path, data) {
      try { tick(); } catch (e) { writeFileSync(path, typeof data === 'string' ? data.slice(0, data.length >> 1) : data.subarray(0, data.length >> 1)); throw e; }
      nodeWriteFs.writeDurable(path, data);
    },
    rename(a, b) { tick(); nodeWriteFs.rename(a, b); },
    syncDir(d) { tick(); nodeWriteFs.syncDir(d); },
    remove: nodeWriteFs.remove,
  };
}

test('a checkpoint save that fails at any write, fsync or rename leaves the previous checkpoint or the new one, never a mix', async () => {
  const base = tmp('ckpt');
  const A = state(1, 0), B = state(2, 5);
  saveCheckpoint(base, C, A, 256, {}, EXTRA);
  const counter = { n: 0 };
  saveCheckpoint(tmp('count'), C, B, 256, {}, EXTRA, failingFs(-1, counter));
  const ops = counter.n;
  assert.ok(ops >= 10, `a save takes ${ops} operations`);
  const outcomes = new Set<number>();
  for (let k = 0; k < ops; k++) {
    const dir = tmp(`fail${k}`);
    cpSync(base, dir, { recursive: true });
    assert.throws(() => saveCheckpoint(dir, C, B, 256, {}, EXTRA, failingFs(k)), /injected failure/);
    const got = loadCheckpointState(dir, N, C)!;
    const want = got.step === 1 ? A : B;
    assert.ok(got.step === 1 || got.step === 2, `failure at op ${k}: step ${got.step}`);
    assert.equal(Array.from(got.params), Array.from(want.params), `failure at op ${k}: parameters`);
    assert.equal(Array.from(got.v), Array.from(want.v), `failure at op ${k}: second moments`);
    // The model files agree with the optimizer state of the same save.
    const model = modelFiles(C, want.params, 256, {});
    assert.ok(Buffer.from(readFileSync(join(dir, 'model.safetensors'))).equals(Buffer.from(model['model.safetensors'] as Uint8Array)), `failure at op ${k}: model.safetensors of step ${got.step}`);
    // Nothing staged or temporary is left behind once loaded.
    const leftovers = [...readdirSync(dir), ...readdirSync(join(dir, 'training'))].filter((n) => /\.staged$|\.tmp-/.test(n));
    assert.equal(leftovers, [], `failure at op ${k}: leftovers`);
    outcomes.add(got.step);
  }
  assert.equal([...outcomes].sort(), [1, 2], 'failures before the manifest keep the old checkpoint, after it the new one');
});

test('loading verifies the checkpoint against its manifest; a lone atomic write keeps the old file on failure', () => {
  const dir = tmp('verify');
  saveCheckpoint(dir, C, state(3, 1), 256, {}, EXTRA);
  const bin = join(dir, 'training/optimizer.bin');
  const bytes = readFileSync(bin);
  bytes[100] ^= 0xff;
  writeFileSync(bin, bytes);
  assert.throws(() => loadCheckpointState(dir, N, C), /optimizer\.bin: \d+ bytes with SHA-256 .* but .*manifest\.json records/);
  writeFileSync(join(dir, 'training/optimizer.bin'), new Uint8Array(0));
  assert.throws(() => loadCheckpointState(dir, N, C), /optimizer\.bin: 0 bytes/);
  writeFileSync(join(dir, CHECKPOINT_MANIFEST), '{"format": "x"}');
  assert.throws(() => loadCheckpointState(dir, N, C), /manifest\.json: not a Duet checkpoint manifest/);

  const file = join(tmp('one'), 'a.json');
  writeFileAtomic(file, 'old');
  assert.throws(() => writeFileAtomic(file, 'new content', failingFs(1)), /injected failure/);
  assert.is(readFileSync(file, 'utf8'), 'old');
  assert.equal(readdirSync(join(file, '..')), ['a.json']);
  // A file set commits only through its manifest: a set without one loads as "no checkpoint".
  const set = tmp('set');
  assert.throws(() => writeFileSet(set, { 'x.bin': 'x' }, 'm.json', {}, failingFs(1)), /injected failure/);
  assert.is(recoverFileSet(set, 'm.json'), null);
});

test('a streamed atomic write refuses an existing file unless forced, and a failing source leaves the old file and no temp file', async () => {
  const dir = tmp('chunks');
  const file = join(dir, 'm.gguf');
  const enc = (t: string) => new TextEncoder().encode(t);
  assert.is(await writeChunksAtomic(file, [enc('ab'), enc('cde')]), 5);
  await rejects(writeChunksAtomic(file, [enc('x')]), /m\.gguf exists; pass force: true/);
  function* failing() { yield enc('partial'); throw new Error('source failed'); }
  await rejects(writeChunksAtomic(file, failing(), { force: true }), /source failed/);
  assert.is(readFileSync(file, 'utf8'), 'abcde');
  assert.equal(readdirSync(dir), ['m.gguf']);
  assert.is(await writeChunksAtomic(file, [enc('new')], { force: true }), 3);
  assert.is(readFileSync(file, 'utf8'), 'new');
});

test('non-finite parameters or optimizer state are never saved; a diverged step stops training', () => {
  const dir = tmp('nan');
  saveCheckpoint(dir, C, state(1, 0), 256, {}, EXTRA);
  const before = readFileSync(join(dir, 'model.safetensors'));
  const bad = state(2, 1);
  bad.params[7] = NaN;
  assert.throws(() => saveCheckpoint(dir, C, bad, 256, {}, EXTRA), /model parameters: value 7 of \d+ is NaN/);
  const badM = state(2, 1);
  badM.v[3] = Infinity;
  assert.throws(() => saveCheckpoint(dir, C, badM, 256, {}, EXTRA), /optimizer state \(AdamW second moments\): value 3 .* Infinity/);
  assert.ok(readFileSync(join(dir, 'model.safetensors')).equals(before), 'the previous model is untouched');
  assert.is(loadCheckpointState(dir, N, C)!.step, 1);
  // A corrupted optimizer.bin holding NaN in a checkpoint without a manifest (older Duet) is refused on load.
  const legacy = tmp('legacy');
  saveState(join(legacy, 'training'), state(1, 0), EXTRA);
  const raw = new Float32Array(readFileSync(join(legacy, 'training/optimizer.bin')).buffer.slice(0));
  raw[5] = NaN;
  writeFileSync(join(legacy, 'training/optimizer.bin'), new Uint8Array(raw.buffer));
  assert.throws(() => loadCheckpointState(legacy, N, C), /optimizer\.bin: value 5 of \d+ is NaN/);
  assert.throws(() => assertFiniteStep({ step: 9, loss: NaN, lr: 1e30, gradNorm: 1, tokens: 1, ms: 1 }, 8), /training diverged at step 9: loss NaN.*the checkpoint of step 8 is kept/);
  assertFiniteStep({ step: 9, loss: 1, lr: 1, gradNorm: 1, tokens: 1, ms: 1 }, null);
});

test('resume checks the model shape: another head split of the same parameter count is refused', () => {
  const dir = tmp('heads');
  saveCheckpoint(dir, C, state(1, 0), 256, {}, EXTRA);
  const other: TrainConfig = { ...C, heads: 4, kvHeads: 2, headDim: 4 };
  assert.is(parameterCount(other), N, 'same parameter count');
  assert.throws(() => loadCheckpointState(dir, N, other), /training_state\.json: the checkpoint was trained with heads 2, this run asks for 4/);
});

const TRAIN = ['--tokens-per-step', '300', '--max-len', '160', '--layers', '1', '--hidden', '16', '--heads', '2', '--threads', '1', '--tasks', 'passkey', '--device', 'cpu'];

test('duet train: refuses a non-empty --out without --resume/--force, a changed --heads, and stops non-zero on NaN keeping the last checkpoint', async () => {
  const out = join(tmp('train'), 'm');
  let r = await duet('train', '--out', out, '--steps', '2', ...TRAIN);
  assert.is(r.code, 0, r.stderr);
  const model = readFileSync(join(out, 'model.safetensors'));
  r = await duet('train', '--out', out, '--steps', '2', ...TRAIN);
  assert.is(r.code, 1);
  assert.match(r.stderr, /not empty .* it holds a model; refusing to overwrite it with the trained model: add --resume .* or --force/);
  r = await duet('train', '--out', out, '--resume', '--steps', '3', ...TRAIN.map((a) => (a === '2' ? '4' : a)));
  assert.is(r.code, 1);
  assert.match(r.stderr, /trained with heads 2, this run asks for 4/);
  r = await duet('train', '--out', out, '--resume', '--steps', '6', '--lr', '1e30', '--save-every', '1', ...TRAIN);
  assert.is(r.code, 1, 'a diverged run exits non-zero');
  assert.match(r.stderr, /training diverged at step \d+: loss NaN/);
  // Whatever was saved before the divergence loads and is finite.
  const cli: TrainConfig = { ...C, kvHeads: 2, intermediate: 176, maxRows: 160 };
  const saved = loadCheckpointState(out, parameterCount(cli), cli)!;
  assert.ok(saved.params.every(Number.isFinite) && saved.m.every(Number.isFinite));
  assert.ok(saved.step >= 2);
  r = await duet('train', '--out', out, '--force', '--steps', '2', ...TRAIN);
  assert.is(r.code, 0, r.stderr);
  assert.is(readFileSync(join(out, 'model.safetensors')).length, model.length);
});

test('output folders: identify/eval/bench never write into a model folder or over foreign files, and replace only their own', async () => {
  const modelDir = join(ROOT, 'fixtures/tiny-random');
  assert.throws(() => claimOutputFolder(modelDir, { flag: 'duet identify --out', what: 'a head pattern', owns: () => true }), /holds a model; duet identify --out never writes a head pattern into a model's folder/);
  const dir = tmp('own');
  writeFileSync(join(dir, 'results.json'), '{}');
  writeFileSync(join(dir, 'old.svg'), '<svg/>');
  const rule = { flag: 'duet eval --out', what: 'evaluation results', owns: (n: string) => n === 'results.json' || n.endsWith('.svg') };
  const previous = claimOutputFolder(dir, rule);
  assert.equal(previous.sort(), ['old.svg', 'results.json']);
  assert.equal(removeStale(dir, previous, [join(dir, 'results.json')]), ['old.svg']);
  assert.equal(readdirSync(dir), ['results.json']);
  writeFileSync(join(dir, 'notes.txt'), 'mine');
  assert.throws(() => claimOutputFolder(dir, rule), /holds files that are not evaluation results \(notes\.txt\)/);
  assert.equal(claimOutputFolder(join(dir, 'new'), rule), []);

  // Through the CLI, before any work: the model's config.json survives.
  const copy = join(tmp('model'), 'm');
  cpSync(modelDir, copy, { recursive: true });
  const config = readFileSync(join(copy, 'config.json'), 'utf8');
  let r = await duet('identify', '--model', copy, '--method', 'razor', '--out', copy);
  assert.is(r.code, 1);
  assert.match(r.stderr, /holds a model; duet identify --out never writes a head pattern into a model's folder/);
  r = await duet('eval', '--model', copy, '--out', copy, '--lengths', '64', '--samples', '1', '--device', 'cpu');
  assert.is(r.code, 1);
  assert.match(r.stderr, /holds a model; duet eval --out never writes/);
  r = await duet('bench', '--shape', 'tiny', '--out', copy, '--device', 'cpu');
  assert.is(r.code, 1);
  assert.match(r.stderr, /holds a model; duet bench --out never writes benchmark results into a model's folder/);
  assert.is(readFileSync(join(copy, 'config.json'), 'utf8'), config);
});

test('duet generate: NaN weights stop with an error and a non-zero exit, not token 0 repeated', async () => {
  const dir = tmp('nan-model');
  await writeCheckpoint(dir, { layers: 1, tokenizer: true });
  await rewriteTensors(dir, (t) => { (t['model.layers.0.mlp.down_proj.weight'].data as Float32Array)[3] = NaN; });
  const r = await duet('generate', '--model', dir, '--prompt', 'hello', '--max-tokens', '4', '--device', 'cpu');
  assert.is(r.code, 1, r.stdout);
  assert.match(r.stderr, /non-finite logits/);
});

test('CLI tests see a stale dist/: a source file newer than dist/cli.js is found (and triggers a rebuild)', () => {
  const root = tmp('dist');
  mkdirSync(join(root, 'src/cli'), { recursive: true });
  mkdirSync(join(root, 'src/generated'), { recursive: true });
  mkdirSync(join(root, 'dist'));
  writeFileSync(join(root, 'src/cli/main.ts'), '');
  writeFileSync(join(root, 'src/generated/shaders.ts'), '');
  writeFileSync(join(root, 'dist/cli.js'), '');
  const at = (path: string, seconds: number) => utimesSync(join(root, path), seconds, seconds);
  at('src/cli/main.ts', 1000); at('src/generated/shaders.ts', 3000); at('dist/cli.js', 2000);
  assert.equal(staleInputs(root, ['src'], 'dist/cli.js'), [], 'the build\'s own output does not count');
  at('src/cli/main.ts', 2500);
  assert.equal(staleInputs(root, ['src'], 'dist/cli.js'), [join(root, 'src/cli/main.ts')]);
  assert.equal(staleInputs(root, ['src'], 'dist/missing.js'), [join(root, 'src/cli/main.ts')], 'no build: every input is stale');
});

test.run();
