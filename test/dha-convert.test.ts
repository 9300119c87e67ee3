// The DHA conversion end to end on a tiny random model (a few steps): the driver's report and
// tensors, the GQA baseline on the same plan, and `duet dha`'s folder (config.json with a valid
// duet_dha, k_proj/v_proj with the kept heads' rows, the model card, the atomic file set) with its
// refusals (overwrite without --force, non-multi-head, DHA or foreign-vocabulary sources, bad budgets);
// the converted folder loads in the engine and matches the trainer's own forward of it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dhaCacheHeads, parseDhaConfig } from '../src/dha/config.ts';
import { conversionPlan, convertHeads, forwardLoss, type ConvertOptions } from '../src/dha/convert.ts';
import { makeSequence } from '../src/train/data.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { readSafetensorsHeader } from '../src/model/safetensors.ts';
import { saveModel } from '../src/node/checkpoint-io.ts';
import { convertToDha } from '../src/node/dha.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { Arena } from '../src/train/arena.ts';
import { TrainModel, cpuTrainModel, type TrainConfig } from '../src/train/model.ts';
import { VOCAB_SIZE } from '../src/train/vocab.ts';
import { Random } from '../src/tasks/random.ts';
import { Engine } from '../src/engine/engine.ts';
import { assertClose } from './helpers/conformance.ts';
import { sharedGpu } from './helpers/engine.ts';

const c: TrainConfig = { vocab: VOCAB_SIZE, hidden: 16, layers: 2, heads: 4, kvHeads: 4, headDim: 4, intermediate: 24, eps: 1e-5, ropeTheta: 10000, maxRows: 0 };
const base: ConvertOptions = { method: 'dha', budget: 0.375, tokens: 1200, tokensPerStep: 300, maxLength: 160, tasks: ['passkey'], similaritySequences: 2, validationSequences: 2, seed: 3 };
const dir = mkdtempSync(join(tmpdir(), 'duet-dha-'));

async function tinyModel(maxRows: number) {
  const m = cpuTrainModel(await Arena.create((k) => TrainModel.arenaBytes({ ...c, maxRows }, k)), { ...c, maxRows });
  m.initialise(4);
  return m;
}

test('forwardLoss (validation) equals the training step\'s loss', async () => {
  const m = await tinyModel(200);
  const s = makeSequence(new Random(5), { tasks: ['passkey'], answerWeight: 2, lengths: [150, 190], maxPosition: 0, skipFraction: 0 });
  m.loss[0] = 0;
  m.step(s.ids, s.positions, s.targets, s.weights);
  const f = forwardLoss(m, s);
  assert.ok(Math.abs(f - m.loss[0]) <= 1e-5 * Math.abs(f), `${f} vs ${m.loss[0]}`);
});

test('convertHeads (dha at 0.375 and gqa-meanpool at 0.5): budgets, step 0 = the source, tensors with the kept rows, deterministic', async () => {
  const plan = conversionPlan(c, 4096, base);
  assert.equal(plan.steps, 4);
  const m = await tinyModel(plan.model.maxRows);
  const source = Float32Array.from(m.params);
  const r = await convertHeads(m, plan, base);
  const { report } = r;
  assert.is(report.keptHeads, 6);
  assert.is(dhaCacheHeads(report.layout), 6);
  assert.equal(report.steps, { fusion: 2, train: 2 });
  assert.is(report.merges.length, 10);
  assert.is(report.losses.fusionStart, report.losses.original);
  for (const v of Object.values(report.losses)) assert.ok(v !== null && Number.isFinite(v));
  assert.is(report.curve.filter((p) => p.stage === 'fusion').length, 2);
  assert.ok(report.curve.every((p) => Number.isFinite(p.validationLoss)));
  // Every step's training loss, after the training tokens so far; the last point has them all.
  assert.equal(report.history.map((p) => [p.stage, p.step]), [['fusion', 1], ['fusion', 2], ['train', 3], ['train', 4]]);
  assert.ok(report.history.every((p, i) => Number.isFinite(p.loss) && p.tokens > (i ? report.history[i - 1].tokens : 0)));
  assert.is(report.history[1].tokens, report.tokens.fusion);
  assert.is(report.history[3].tokens, report.tokens.fusion + report.tokens.train);
  assert.is(report.curve[report.curve.length - 1].tokens, report.history[3].tokens);
  report.layout.layers.forEach((l, i) => {
    assert.equal(r.tensors.find((t) => t.name === `model.layers.${i}.self_attn.k_proj.weight`)!.shape, [l.keyHeads * 4, 16]);
    assert.equal(r.tensors.find((t) => t.name === `model.layers.${i}.self_attn.v_proj.weight`)!.shape, [l.valueHeads * 4, 16]);
  });
  // Same source, same plan: the same result.
  m.params.set(source);
  const again = await convertHeads(m, plan, base);
  assert.equal(again.report.losses, report.losses);
  assert.equal([...again.tensors[3].data], [...r.tensors[3].data]);
  // The baseline: uniform 2K + 2V per layer, no fusion, all steps training.
  const gqaOptions: ConvertOptions = { ...base, method: 'gqa-meanpool', budget: 0.5 };
  const gplan = conversionPlan(c, 4096, gqaOptions);
  m.params.set(source);
  const g = await convertHeads(m, gplan, gqaOptions);
  assert.equal(g.report.steps, { fusion: 0, train: 4 });
  assert.equal(g.report.layout.layers.map((l) => [l.keyHeads, l.valueHeads, l.queryToKey.join('')]), [[2, 2, '0011'], [2, 2, '0011']]);
  assert.is(g.report.losses.fused, null);
  // Both arms draw the same training sequences for the same step.
  assert.equal(gplan.seed, plan.seed);
  assert.equal(g.report.history.map((p) => p.tokens), report.history.map((p) => p.tokens));
  // The reference arm: every head kept, the source itself right after the "conversion", all steps training.
  const keep: ConvertOptions = { ...base, method: 'continued', budget: 1 };
  m.params.set(source);
  const k = await convertHeads(m, conversionPlan(c, 4096, keep), keep);
  assert.is(k.report.keptHeads, 16);
  assert.equal(k.report.steps, { fusion: 0, train: 4 });
  assert.is(k.report.losses.converted, k.report.losses.original);
  assert.ok(k.report.collapseCost.every((x) => x.key === 0 && x.value === 0));
  assert.equal(k.tensors.find((t) => t.name === 'model.layers.1.self_attn.v_proj.weight')!.shape, [16, 16]);
  assert.equal(k.report.history.map((p) => p.tokens), report.history.map((p) => p.tokens));
});

test('bad options are refused with the field named', async () => {
  assert.throws(() => conversionPlan(c, 4096, { ...base, tokens: 0 }), /tokens must be an integer ≥ 1/);
  assert.throws(() => conversionPlan(c, 4096, { ...base, method: 'mean' as never }), /method must be one of dha, gqa-meanpool/);
  assert.throws(() => conversionPlan(c, 4096, { ...base, fusionShare: 2 }), /fusionShare must be from 0 to 1/);
  assert.throws(() => conversionPlan(c, 100, { ...base, maxLength: 160 }), /maxLength 160 exceeds the model's max_position_embeddings 100/);
  assert.throws(() => conversionPlan(c, 4096, { ...base, tasks: ['niah-multikey'] }), /niah-multikey sequences need 340 tokens/);
  const m = await tinyModel(160);
  const plan = conversionPlan(c, 4096, base);
  let msg = '';
  try { await convertHeads(m, plan, { ...base, budget: 0.3 }); } catch (e) { msg = (e as Error).message; }
  assert.match(msg, /budget 0\.3 keeps 4\.800 of the model's 16 K\+V heads/);
  try { await convertHeads(m, plan, { ...base, budget: 0.125 }); } catch (e) { msg = (e as Error).message; }
  assert.match(msg, /fewer than one key and one value head per layer \(4\)/);
  try { await convertHeads(m, plan, { ...base, method: 'gqa-meanpool' }); } catch (e) { msg = (e as Error).message; }
  assert.match(msg, /budget 0\.375 is not a uniform GQA layout.*--method dha/);
  try { await convertHeads(m, plan, { ...base, method: 'continued', budget: 0.5 }); } catch (e) { msg = (e as Error).message; }
  assert.match(msg, /budget must be 1 for the continued arm/);
});

/**
 * The converted folder through the engine (CPU; and the GPU split placement when an adapter exists)
 * against the trainer's own forward of the same model: the multi-head TrainModel with tied rows that
 * the continued training runs (every query head reads its key and value head's rows). Prefill of 30
 * tokens, then 5 decode steps; |Δlogit| ≤ 1e-3·(1 + |trainer|) (two f32 forwards).
 */
async function engineMatchesTrainer(out: string): Promise<void> {
  const ckpt = await loadCheckpoint(nodeModelFiles(out));
  const dha = ckpt.config.dha!;
  const ids = Array.from({ length: 35 }, (_, i) => (i * 7 + 3) % VOCAB_SIZE);
  const m = await tinyModel(ids.length);
  const f = (x: unknown) => x as Float32Array;
  m.p.embed.set(f(ckpt.weights.embed)); m.p.finalNorm.set(ckpt.weights.finalNorm); m.p.lmHead.set(f(ckpt.weights.lmHead));
  const D = c.headDim, row = D * c.hidden;
  ckpt.weights.layers.forEach((lw, l) => {
    const p = m.p.layers[l], d = dha.layers[l];
    p.inputNorm.set(lw.inputNorm); p.wq.set(f(lw.wq)); p.wo.set(f(lw.wo)); p.postNorm.set(lw.postNorm);
    p.wGate.set(f(lw.wGate)); p.wUp.set(f(lw.wUp)); p.wDown.set(f(lw.wDown));
    for (let h = 0; h < c.heads; h++) {
      p.wk.set(f(lw.wk).subarray(d.queryToKey[h] * row, (d.queryToKey[h] + 1) * row), h * row);
      p.wv.set(f(lw.wv).subarray(d.queryToValue[h] * row, (d.queryToValue[h] + 1) * row), h * row);
    }
  });
  m.forward(Int32Array.from(ids), Int32Array.from(ids, (_, i) => i));
  const trainerLogits = (t: number) => Float64Array.from({ length: c.vocab }, (_, v) => {
    let z = 0;
    for (let e = 0; e < c.hidden; e++) z += m.hidden[t * c.hidden + e] * m.p.lmHead[v * c.hidden + e];
    return z;
  });
  const gpu = (await sharedGpu()).gpu !== null;
  for (const placement of gpu ? ['cpu', 'split'] as const : ['cpu'] as const) {
    const engine = await Engine.create(ckpt.config, ckpt.weights, { device: placement === 'cpu' ? 'cpu' : 'gpu', placement, acquireGpu: sharedGpu });
    try {
      const session = engine.newSession(64, 16);
      assertClose(await session.forward(ids.slice(0, 30)), trainerLogits(29), `${placement} prefill`, 1e-3);
      for (let t = 30; t < ids.length; t++) assertClose(await session.forward([ids[t]]), trainerLogits(t), `${placement} decode ${t}`, 1e-3);
      assert.is(session.kvMemory().byMethod.full, dhaCacheHeads(dha) * 64 * D * 4);
      session.dispose();
    } finally { engine.dispose(); }
  }
}

async function sourceFolder(name: string, over: Partial<TrainConfig> = {}): Promise<string> {
  const cfg = { ...c, ...over, maxRows: 160 };
  const m = cpuTrainModel(await Arena.create((k) => TrainModel.arenaBytes(cfg, k)), cfg);
  m.initialise(8);
  const path = join(dir, name);
  saveModel(path, cfg, Float32Array.from(m.params), 4096, {});
  return path;
}

test('duet dha\'s folder: duet_dha config, kept rows in the safetensors, tokenizer copied, model card; the engine runs it as the trainer does; overwrite needs force', async () => {
  const src = await sourceFolder('src');
  const out = join(dir, 'out');
  const { report } = await convertToDha({ ...base, model: src, out, threads: 1 });
  const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  const layout = parseDhaConfig(cfg.duet_dha, 2, 4);
  assert.equal(layout, report.layout);
  assert.is(cfg.num_key_value_heads, 4);
  const header = await readSafetensorsHeader(nodeModelFiles(out), 'model.safetensors');
  layout.layers.forEach((l, i) => {
    assert.equal(header.find((t) => t.name === `model.layers.${i}.self_attn.k_proj.weight`)!.shape, [l.keyHeads * 4, 16]);
    assert.equal(header.find((t) => t.name === `model.layers.${i}.self_attn.v_proj.weight`)!.shape, [l.valueHeads * 4, 16]);
  });
  assert.is(readFileSync(join(out, 'tokenizer.json'), 'utf8'), readFileSync(join(src, 'tokenizer.json'), 'utf8'));
  const card = readFileSync(join(out, 'README.md'), 'utf8');
  assert.match(card, /KV budget 0\.375: 6 of 16 key \+ value heads kept/);
  assert.match(card, /\| 0 \| \d \| [0-9+ ]+ \| \d \|/);
  assert.match(card, /continues where it was saved with the same command and `--resume`/);
  const saved = JSON.parse(readFileSync(join(out, 'dha.json'), 'utf8'));
  assert.equal(saved.history, report.history);
  assert.equal(saved.curve, report.curve);
  assert.ok(existsSync(join(out, 'dha-manifest.json')));
  assert.ok(!readFileSync(join(out, 'dha-manifest.json'), 'utf8').includes('.staged'));
  await engineMatchesTrainer(out);
  let msg = '';
  // A second run into the same folder needs force.
  try { await convertToDha({ ...base, model: src, out, threads: 1 }); msg = ''; } catch (e) { msg = (e as Error).message; }
  assert.match(msg, /not empty .*it holds a model; refusing to overwrite it with the converted model: add --force/);
  const again = await convertToDha({ ...base, model: src, out, threads: 1, force: true });
  assert.equal(again.report.losses, report.losses);
  try { await convertToDha({ ...base, model: src, out: src, threads: 1 }); } catch (e) { msg = (e as Error).message; }
  assert.match(msg, /is the source model's folder/);
  // The continued arm's folder is a plain multi-head checkpoint.
  const kept = join(dir, 'kept');
  await convertToDha({ ...base, method: 'continued', budget: 1, model: src, out: kept, threads: 1 });
  const kc = JSON.parse(readFileSync(join(kept, 'config.json'), 'utf8'));
  assert.ok(!('duet_dha' in kc));
  const kck = await loadCheckpoint(nodeModelFiles(kept));
  assert.is(kck.config.dha, null);
  assert.is(kck.config.numKvHeads, 4);
});

test('duet dha refuses GQA sources and checkpoints of another vocabulary', async () => {
  const gqa = await sourceFolder('gqa', { kvHeads: 2 });
  let msg = '';
  try { await convertToDha({ ...base, model: gqa, out: join(dir, 'o2'), threads: 1 }); } catch (e) { msg = (e as Error).message; }
  assert.match(msg, /num_key_value_heads 2 ≠ num_attention_heads 4; DHA converts a multi-head checkpoint/);
  // A converted model is not a source: its nominal multi-head shape hides decoupled heads.
  try { await convertToDha({ ...base, model: join(dir, 'out'), out: join(dir, 'o4'), threads: 1 }); } catch (e) { msg = (e as Error).message; }
  assert.match(msg, /config\.json: has decoupled key\/value heads per layer \(duet_dha: .*\); the DHA conversion supports only models with one KV head count/);
  const foreign = await sourceFolder('foreign');
  const tok = JSON.parse(readFileSync(join(foreign, 'tokenizer.json'), 'utf8'));
  tok.model.vocab = { ...tok.model.vocab, a: 99 };
  writeFileSync(join(foreign, 'tokenizer.json'), JSON.stringify(tok));
  try { await convertToDha({ ...base, model: foreign, out: join(dir, 'o3'), threads: 1 }); } catch (e) { msg = (e as Error).message; }
  assert.match(msg, /needs the bundled model's vocabulary .* and another tokenizer/);
  assert.ok(!existsSync(join(dir, 'o2')) && !existsSync(join(dir, 'o3')), 'nothing written');
});

test.after(() => rmSync(dir, { recursive: true, force: true }));

test.run();
