// The library's tools beyond generation, through the Node entry as a program uses them:
// setHeads/currentHeads, evaluate + comparisonConfigs, identifyHeads + savePattern, trainingPlan +
// trainModel, runBenchmark. Each on the tiny random fixture (or a tiny trained model), on the CPU.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  comparisonConfigs, countStreaming, kvMemory, parseModelConfig, binarize, DuetError, evaluate, identifyHeads, loadModel, loadPattern, nodeModelFiles, runBenchmark,
  savePattern, score, taskPrompt, fillerStyleFor, trainingPlan, trainModel, type EvalConfig, type ProgressEvent,
} from '../src/node.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const TINY = join(ROOT, 'fixtures/tiny-random');
const TINY_PATTERN = join(ROOT, 'fixtures/tiny-random-pattern');
const tmp = (name: string) => mkdtempSync(join(tmpdir(), `duet-${name}-`));

/** The DuetError a call throws (fails the test when it throws nothing or something else). */
async function duetError(f: () => unknown): Promise<DuetError> {
  try { await f(); } catch (e) {
    assert.instance(e, DuetError, String(e));
    return e as DuetError;
  }
  assert.unreachable('expected a DuetError');
  throw new Error('unreachable');
}

const model = await loadModel(TINY, { device: 'cpu', threads: 1 });
const L = model.info.config.numLayers, H = model.info.config.numKvHeads;
const pattern = await loadPattern(nodeModelFiles(TINY_PATTERN), L, H);

test('setHeads re-places the model: a pattern at a sparsity, back to full attention; the same heads are a no-op', async () => {
  assert.is(model.info.streamingHeads, 0);
  await model.setHeads({ pattern, sparsity: 0.5 });
  assert.is(model.info.streamingHeads, L * H / 2);
  assert.equal(model.info.window, { sink: 4, recent: 16 });
  const r = await model.generate([0, 5, 6, 7, 8], { maxTokens: 3, ignoreEos: true }).result();
  // 8 streaming heads × min(sink 4 + recent 16, capacity 5 + 3) slots × head_dim 8 × K,V × 4 bytes.
  assert.is(r.kv.streaming, 8 * 8 * 8 * 2 * 4);
  assert.equal(model.currentHeads().sparsity, 0.5);
  const events: ProgressEvent[] = [];
  await model.setHeads(model.currentHeads(), (e) => events.push(e));
  assert.equal(events, [], 'the heads already placed: nothing reloaded');
  await model.setHeads({}, (e) => events.push(e));
  assert.is(model.info.streamingHeads, 0);
  assert.ok(events.some((e) => e.step === 'weights'), 'a new placement reads the weights again');
  assert.is((await model.generate([0, 5, 6, 7, 8], { maxTokens: 3, ignoreEos: true }).result()).kv.streaming, 0);
  assert.is((await duetError(() => model.setHeads({ sparsity: 0.5 }))).field, 'sparsity');
  assert.is(model.info.streamingHeads, 0, 'a refused setHeads keeps the placement');
});

test('comparisonConfigs: full first, the pattern, streaming only, random patterns of the budget; errors name the option', async () => {
  const configs = comparisonConfigs({ pattern, sparsity: 0.25, streamingOnly: true, randomPattern: { sparsity: 0.5, seeds: 2 } }, L, H);
  assert.equal(configs.map((c) => c.name), ['full', 'pattern@0.25', 'streaming-only', 'random@0.5#0', 'random@0.5#1']);
  assert.equal(configs[2].window, { sink: 4, recent: 16 }, "streaming only takes the pattern's window");
  const [r0, r1] = [configs[3], configs[4]].map((c) => binarize(c.pattern!.alphas, { sparsity: 0.5 }));
  assert.is(countStreaming(r0), L * H / 2);
  assert.is.not(JSON.stringify(r0), JSON.stringify(r1), 'two seeds, two patterns');
  assert.is((await duetError(() => comparisonConfigs({ sparsity: 0.5 }, L, H))).field, 'sparsity');
  const e = await duetError(() => comparisonConfigs({ streamingOnly: true }, L, H));
  assert.equal([e.field, e.detail], ['streamingOnly', 'needs window.sink and window.recent (or pattern)']);
  assert.is((await duetError(() => comparisonConfigs({ randomPattern: { sparsity: 1.5 }, window: { sink: 4, recent: 8 } }, L, H))).field, 'randomPattern.sparsity');
});

test('evaluate: one row per cell, each the mean score of the same prompts run by hand; KV bytes per configuration; heads restored', async () => {
  const configs: EvalConfig[] = [{ name: 'full' }, { name: 'half', pattern, sparsity: 0.5 }];
  const seen: string[] = [];
  const r = await evaluate(model, { configs, tasks: ['passkey', 'vt'], lengths: [128, 160], depths: [0, 1], samples: 2, seed: 3, onSample: (s) => seen.push(`${s.config}:${s.prediction}`) });
  assert.is(r.rows.length, 2 * 2 * 2 * 2);
  assert.is(seen.length, r.rows.length * 2);
  assert.is(r.filler, fillerStyleFor(model.tokenizer!));
  // KV at the longest length (160): 16 heads of dim 8, K and V in f32; half of them keep sink 4 + recent 16.
  const perToken = 2 * 8 * 4;
  assert.equal(r.configs.map((c) => [c.name, c.streamingHeads, c.kvBytes, c.kvContext]),
    [['full', 0, 16 * 160 * perToken, 160], ['half', 8, 8 * 160 * perToken + 8 * 20 * perToken, 160]]);
  assert.is(model.info.streamingHeads, 0, 'the model is back on its own heads');

  // One cell by hand: the pattern configuration, vt at 160 tokens, depth 1, seed 3's two samples.
  await model.setHeads({ pattern, sparsity: 0.5 });
  let sum = 0;
  for (let s = 0; s < 2; s++) {
    const seed = 3 * 1_000_003 + s * 7919 + 160 * 31 + 1000 + 'vt'.length;
    const { sample, ids } = taskPrompt(model.tokenizer!, { kind: 'vt', length: 160, depth: 1, seed, style: r.filler });
    const g = await model.generate(ids, { maxTokens: sample.maxNewTokens }).result();
    sum += score('vt', model.tokenizer!.decode(g.tokens), sample.answers);
  }
  const row = r.rows.find((x) => x.config === 'half' && x.task === 'vt' && x.length === 160 && x.depth === 1)!;
  assert.is(row.accuracy, sum / 2);
  await model.setHeads({});

  assert.is((await duetError(() => evaluate(model, { tasks: ['needle' as 'vt'] }))).field, 'tasks');
  assert.is((await duetError(() => evaluate(model, { depths: [1.5] }))).field, 'depths');
  const long = await duetError(() => evaluate(model, { lengths: [9000], samples: 1, depths: [0] }));
  assert.equal([long.field, long.code], ['lengths', 'context_length_exceeded']);
});

test('identifyHeads (razor, zigzag) returns a pattern savePattern writes and loadPattern reads back; errors name the option', async () => {
  const r = await identifyHeads(TINY, { method: 'razor', lengths: [128, 160], window: { sink: 4, recent: 16 }, zigzag: true, sparsity: 0.5 });
  assert.is(r.method, 'razor+zigzag');
  assert.is(r.device, 'cpu');
  assert.equal([r.alphas.length, r.alphas[0].length], [L, H]);
  for (const row of r.alphas) assert.ok(row.every((a) => a === row[0]), 'zigzag: whole layers');
  assert.is(r.alphas.filter((row) => row[0] < 0.5).length, L / 2);
  const out = tmp('pattern');
  const files = savePattern(out, r);
  assert.equal(files.map((f) => f.slice(out.length + 1)), ['full_attention_heads.tsv', 'config.json', 'identify.json', 'heads.svg']);
  const back = await loadPattern(nodeModelFiles(out), L, H);
  assert.equal([back.alphas, back.sink, back.recent], [r.alphas, 4, 16]);
  assert.is(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).method, 'razor+zigzag');

  assert.is((await duetError(() => identifyHeads(TINY, { method: 'magic' as 'duo' }))).field, 'method');
  assert.is((await duetError(() => identifyHeads(TINY, { method: 'razor', zigzag: true }))).field, 'zigzag');
  assert.is((await duetError(() => identifyHeads(TINY, { method: 'razor', lengths: [200, 100] }))).field, 'lengths');
  assert.is((await duetError(() => identifyHeads(TINY, { method: 'razor', device: 'npu' as 'cpu' }))).field, 'device');
});

test('trainingPlan: the recipe with another size, tasks, length cap and learning rate; errors name the option', async () => {
  const base = trainingPlan();
  const p = trainingPlan({ steps: 70, hidden: 16, heads: 2, layers: 1, tasks: ['passkey'], maxLength: 256, lr: base.phases[0].schedule!.lr / 2 });
  assert.equal([p.model.hidden, p.model.heads, p.model.kvHeads, p.model.headDim, p.model.layers, p.model.maxRows], [16, 2, 2, 8, 1, 256]);
  assert.equal(p.phases.map((ph) => ph.from), [0, 25, 30, 40, 50, 60]);
  for (const ph of p.phases) {
    assert.is(ph.tasks, undefined, 'tasks replaces every phase mix');
    assert.ok(ph.lengths[1] <= 256);
  }
  base.phases.forEach((ph, i) => { if (ph.schedule) assert.is(p.phases[i].schedule!.lr, ph.schedule.lr / 2); });
  const e = await duetError(() => trainingPlan({ heads: 3 }));
  assert.equal([e.field, e.detail], ['heads', '3: the head size hidden/heads must be an even integer (hidden 64)']);
  assert.is((await duetError(() => trainingPlan({ tasks: ['riddles' as 'vt'] }))).field, 'tasks');
  assert.is((await duetError(() => trainingPlan({ maxLength: 10 }))).field, 'maxLength');
});

test('trainModel: trains and saves a model loadModel runs, resumes where it stopped, refuses to overwrite', async () => {
  const out = join(tmp('train'), 'm');
  const plan = trainingPlan({ steps: 3, layers: 1, hidden: 16, heads: 2, tokensPerStep: 300, maxLength: 256, tasks: ['passkey'] });
  const steps: number[] = [];
  const first = await trainModel({ out, plan, until: 2, threads: 1, onStep: (r) => steps.push(r.step) });
  assert.equal([first.step, first.resumedAt, steps], [2, null, [1, 2]]);
  assert.ok(Number.isFinite(first.smoothedLoss) && first.smoothedLoss > 0);
  assert.is(JSON.parse(readFileSync(join(out, 'training', 'training_state.json'), 'utf8')).step, 2);
  try { await trainModel({ out, plan, threads: 1 }); assert.unreachable('a trained model was overwritten'); } catch (e) {
    assert.match(String(e), /not empty .*: set resume to continue its training or force to replace it/);
  }
  assert.is((await duetError(() => trainModel({ out, plan, resume: true, force: true }))).field, 'resume');
  const second = await trainModel({ out, plan, resume: true, threads: 1 });
  assert.equal([second.step, second.resumedAt], [3, 2]);
  const trained = await loadModel(out, { device: 'cpu', threads: 1 });
  try {
    assert.is(trained.info.config.numLayers, 1);
    assert.is((await trained.generate('the pass key is', { maxTokens: 2, ignoreEos: true }).result()).tokens.length, 2);
  } finally {
    await trained.dispose();
  }
});

test('runBenchmark: the memory suite on random weights with a shape, runtime KV equal to the projection; errors name the option', async () => {
  const r = await runBenchmark({ suites: ['memory'], shape: 'tiny', contexts: [64], sparsities: [0.5], window: { sink: 4, recent: 16 }, device: 'cpu', threads: 1, prefillChunk: 64 });
  assert.is(r.model.source, 'shape:tiny');
  assert.equal(r.memory.map((m) => m.label), ['full/cpu', 'duo@0.5/cpu']);
  for (const m of r.memory) assert.ok(m.matches, `${m.label}: ${JSON.stringify(m.measured)} vs ${JSON.stringify(m.projected)}`);
  assert.equal(r.e2e, []);
  const e = await duetError(() => runBenchmark({ shape: 'tiny', placements: ['split'], device: 'cpu', contexts: [64] }));
  assert.equal([e.field, e.detail], ['placements', "split need a GPU (device 'cpu')"]);
  assert.is((await duetError(() => runBenchmark({ shape: 'gpt-9', device: 'cpu', contexts: [64] }))).field, 'shape');
  assert.is((await duetError(() => runBenchmark({ shape: 'tiny', model: TINY }))).field, 'shape');
  assert.is((await duetError(() => runBenchmark({ suites: ['speed' as 'e2e'] }))).field, 'suites');
});

test('kvMemory: full vs DuoAttention bytes of a config.json, the sliding window applied; errors name the option', async () => {
  const config = parseModelConfig(JSON.parse(readFileSync(join(TINY, 'config.json'), 'utf8')));
  const m = kvMemory(config, { pattern, sparsity: 0.5, context: 1000, kvDtype: 'f32' });
  // 16 KV heads of dim 8, K and V in f32; 8 streaming heads keep sink 4 + recent 16.
  const perToken = 2 * 8 * 4;
  assert.equal([m.full_bytes, m.duo_bytes, m.cpu_bytes, m.streaming_heads], [16 * 1000 * perToken, 8 * 1000 * perToken + 8 * 20 * perToken, 8 * 20 * perToken, 8]);
  assert.equal([m.kvDtype, m.note], ['f32', null]);
  assert.match(m.heads, /8\/16 KV heads streaming \(sink 4, recent 16\)/);
  const mistral = parseModelConfig({ ...JSON.parse(readFileSync(join(TINY, 'config.json'), 'utf8')), model_type: 'mistral', sliding_window: 64 });
  const w = kvMemory(mistral, { context: 1000 });
  assert.is(w.duo_bytes, 16 * 64 * 2 * 8 * 4, 'every head keeps its last 64 keys (in f32 rings, the default)');
  assert.is(kvMemory(config, { context: 1000, kvDtype: 'int8' }).full_bytes, 16 * 1000 * 2 * (8 + 4), 'int8: 8 codes + a 4-byte scale per row');
  assert.match(w.note!, /sliding_window 64/);
  assert.is((await duetError(() => kvMemory(config, { context: 0 }))).field, 'context');
  assert.is((await duetError(() => kvMemory(config, { context: 10, kvDtype: 'f8' as 'f16' }))).field, 'kvDtype');
  assert.is((await duetError(() => kvMemory(config, { context: 10, sparsity: 0.5 }))).field, 'sparsity');
});

test.after(async () => { await model.dispose(); });
test.run();
