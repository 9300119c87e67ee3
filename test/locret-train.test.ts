// Locret training data and training: labels and retaining-head inputs from the frozen model's
// full-attention run against a float64 reference forward (odd sizes, GQA, qwen2 biases).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { frozenModel } from '../src/identify/frozen.ts';
import { attentionLabels, locretExample, type LocretExample } from '../src/kv/locret/labels.ts';
import { locretLoss } from '../src/kv/locret/loss.ts';
import { retainingBackward, retainingForward, retainingHeadShape, type RetainingHeads } from '../src/kv/locret/retaining-heads.ts';
import { clipByValue, LOCRET_GRAD_CLIP, LocretTrainer, locretSequences, trainLocretHeads } from '../src/kv/locret/train.ts';
import { LocretScorerCpu } from '../src/kv/locret/cpu.ts';
import { LOCRET_JSON, loadLocretHeads } from '../src/kv/locret/file.ts';
import { main } from '../src/cli/main.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { ropeInvFreq, type ModelConfig } from '../src/model/config.ts';
import { matrixF32 as f, type ModelWeights } from '../src/model/weights.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { Random } from '../src/tasks/random.ts';
import { writeCheckpoint } from './helpers/checkpoint.ts';
import * as k from './reference/kernels.ts';

/** Plain label definition: max over the group's query heads and query rows i ≥ from, i > j. */
function naiveLabels(probs: (h: number, i: number, j: number) => number, rows: number, heads: number, kvHeads: number, prefix: number, from: number): Float64Array {
  const out = new Float64Array(prefix * kvHeads), group = heads / kvHeads;
  for (let j = 0; j < prefix; j++) {
    for (let kvh = 0; kvh < kvHeads; kvh++) {
      let m = -Infinity;
      for (let g = 0; g < group; g++) for (let i = Math.max(from, j + 1); i < rows; i++) m = Math.max(m, probs(kvh * group + g, i, j));
      out[j * kvHeads + kvh] = m;
    }
  }
  return out;
}

const labels = suite('locret labels');

labels('attentionLabels is the max over the group and strictly later voting queries (exact)', () => {
  const rows = 13, heads = 6, kvHeads = 2, r = new Random(3);
  for (const [prefix, from] of [[9, 9], [9, 4], [12, 0], [1, 1]]) {
    const queries = rows - from;
    // Random values everywhere (not a real softmax): the diagonal and rows before `from` must be ignored.
    const tail = Float32Array.from({ length: heads * queries * rows }, () => r.next());
    for (let h = 0; h < heads; h++) for (let i = from; i < rows; i++) tail[(h * queries + i - from) * rows + i] = 5; // i = j
    const got = attentionLabels(tail, { rows, heads, kvHeads, prefix, queriesFrom: from });
    const want = naiveLabels((h, i, j) => tail[(h * queries + i - from) * rows + j], rows, heads, kvHeads, prefix, from);
    assert.equal(Array.from(got), Array.from(Float32Array.from(want)), `prefix ${prefix}, from ${from}`);
    assert.ok(got.every((v) => v < 5), 'a token\'s own query never counts');
  }
});

labels('attentionLabels refuses shapes it cannot label', () => {
  const ok = { rows: 8, heads: 4, kvHeads: 2, prefix: 5, queriesFrom: 5 };
  const n = (d: typeof ok) => d.heads * (d.rows - d.queriesFrom) * d.rows;
  assert.throws(() => attentionLabels(new Float32Array(n(ok) - 1), ok), /expected heads × queries × rows = 4 × 3 × 8/);
  assert.throws(() => attentionLabels(new Float32Array(64), { ...ok, prefix: 8 }), /prefix 8 must be in \[1, rows − 1 = 7\]/);
  assert.throws(() => attentionLabels(new Float32Array(64), { ...ok, prefix: 0 }), /prefix 0/);
  assert.throws(() => attentionLabels(new Float32Array(64), { ...ok, queriesFrom: 6 }), /queriesFrom 6 is after the prefix \(5\)/);
  assert.throws(() => attentionLabels(new Float32Array(64), { ...ok, heads: 5 }), /5 query heads do not split into groups over 2 KV heads/);
});

/** Float64 forward recording each layer's pre-RoPE q, k, v and causal attention probabilities [heads][T][T]. */
function referenceInternals(config: ModelConfig, w: ModelWeights, ids: number[]) {
  const T = ids.length, H = config.hiddenSize, D = config.headDim, nh = config.numHeads, nkv = config.numKvHeads;
  const invFreq = ropeInvFreq(config), positions = ids.map((_, i) => i), group = nh / nkv;
  let x = new Float64Array(T * H);
  const embed = f(w.embed);
  ids.forEach((id, t) => { for (let i = 0; i < H; i++) x[t * H + i] = embed[id * H + i]; });
  const layers: Array<{ q: Float64Array; k: Float64Array; v: Float64Array; probs: Float64Array }> = [];
  for (const lw of w.layers) {
    const xn = k.rmsnorm(x, lw.inputNorm, T, H, config.rmsNormEps);
    const q = k.matmul(xn, f(lw.wq), lw.bq, T, H, nh * D), kk = k.matmul(xn, f(lw.wk), lw.bk, T, H, nkv * D), v = k.matmul(xn, f(lw.wv), lw.bv, T, H, nkv * D);
    const qr = k.rope(q, T, nh, D, positions, invFreq), kr = k.rope(kk, T, nkv, D, positions, invFreq);
    const probs = new Float64Array(nh * T * T), attn = new Float64Array(T * nh * D);
    for (let h = 0; h < nh; h++) {
      const kvh = Math.floor(h / group);
      for (let i = 0; i < T; i++) {
        const s: number[] = [];
        for (let j = 0; j <= i; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += qr[(i * nh + h) * D + d] * kr[(j * nkv + kvh) * D + d];
          s.push(dot / Math.sqrt(D));
        }
        const m = Math.max(...s), e = s.map((z) => Math.exp(z - m)), z = e.reduce((a, b) => a + b, 0);
        e.forEach((p, j) => {
          probs[(h * T + i) * T + j] = p / z;
          for (let d = 0; d < D; d++) attn[(i * nh + h) * D + d] += (p / z) * v[(j * nkv + kvh) * D + d];
        });
      }
    }
    layers.push({ q, k: kk, v, probs });
    const proj = k.matmul(attn, f(lw.wo), null, T, nh * D, H);
    x = x.map((val, i) => val + proj[i]);
    const xn2 = k.rmsnorm(x, lw.postNorm, T, H, config.rmsNormEps);
    const act = k.siluMul(k.matmul(xn2, f(lw.wGate), null, T, H, config.intermediateSize), k.matmul(xn2, f(lw.wUp), null, T, H, config.intermediateSize), T * config.intermediateSize);
    const down = k.matmul(act, f(lw.wDown), null, T, config.intermediateSize, H);
    x = x.map((val, i) => val + down[i]);
  }
  return layers;
}

labels('locretExample: pre-RoPE q, k, v and labels of the frozen model match a float64 forward (GQA 6/2, head_dim 6, qwen2 biases)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'duet-locret-labels-'));
  try {
    await writeCheckpoint(dir, { modelType: 'qwen2', hidden: 18, intermediate: 26, layers: 2, heads: 6, kvHeads: 2, headDim: 6, vocab: 37, seed: 11, scale: 1.2 });
    const { config, weights } = await loadCheckpoint(nodeModelFiles(dir));
    const model = await frozenModel(config, weights, 40);
    const r = new Random(5);
    const ids = Array.from({ length: 29 }, () => r.int(0, 37));
    const ref = referenceInternals(config, weights, ids);
    const { numHeads: nh, numKvHeads: nkv, headDim: D } = config;
    const inDim = (nh + 2 * nkv) * D;
    for (const [prefix, from] of [[21, 21], [21, 6]]) {
      const ex = await locretExample(model, Int32Array.from(ids), prefix, from);
      assert.is(ex.tokens, prefix);
      assert.is(ex.layers.length, 2);
      ex.layers.forEach((layer, l) => {
        assert.is(layer.x.length, prefix * inDim);
        // Float32 through up to two layers against float64: agreement to 2e-5 + 1e-4·|ref|.
        let worstX = 0;
        for (let t = 0; t < prefix; t++) {
          for (let i = 0; i < inDim; i++) {
            const want = i < nh * D ? ref[l].q[t * nh * D + i] : i < (nh + nkv) * D ? ref[l].k[t * nkv * D + i - nh * D] : ref[l].v[t * nkv * D + i - (nh + nkv) * D];
            worstX = Math.max(worstX, Math.abs(layer.x[t * inDim + i] - want) / (2e-5 + 1e-4 * Math.abs(want)));
          }
        }
        assert.ok(worstX <= 1, `layer ${l}: q/k/v off by ${worstX.toFixed(2)}× the tolerance`);
        const T = ids.length;
        const want = naiveLabels((h, i, j) => ref[l].probs[(h * T + i) * T + j], T, nh, nkv, prefix, from);
        const diff = k.maxAbsDiff(layer.labels, want);
        assert.ok(diff <= 1e-5, `layer ${l}, prefix ${prefix}, from ${from}: labels off by ${diff}`);
        assert.ok(layer.labels.every((v) => v > 0 && v <= 1));
      });
    }
    const err = await locretExample(model, Int32Array.from(ids), 29).then(() => null, (e: Error) => e);
    assert.match(err?.message ?? '', /prefix 29 must be in \[1, rows − 1 = 28\]/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

labels.run();

const training = suite('locret training');

// Odd sizes with GQA for the synthetic trainer tests: 6 query heads over 3 KV heads, head_dim 3.
const SHAPE = retainingHeadShape({ numHeads: 6, numKvHeads: 3, headDim: 3, hiddenSize: 30 }, 7);
const OPT = { schedule: { lr: 5e-3, warmup: 2, steps: 60, minLrFraction: 0.1 }, weightDecay: 0.01, clip: LOCRET_GRAD_CLIP };

/** A synthetic example whose labels are a fixed function of the inputs (so it can be learnt). */
function syntheticExample(tokens: number, layers: number, seed: number, xScale = 1): LocretExample {
  const r = new Random(seed);
  return {
    tokens,
    layers: Array.from({ length: layers }, () => {
      const x = Float32Array.from({ length: tokens * SHAPE.inDim }, () => (2 * r.next() - 1) * xScale);
      const labels = new Float32Array(tokens * SHAPE.outDim);
      for (let t = 0; t < tokens; t++) for (let h = 0; h < SHAPE.outDim; h++) labels[t * SHAPE.outDim + h] = 1 / (1 + Math.exp(-3 * x[t * SHAPE.inDim + h]));
      return { x, labels };
    }),
  };
}

function exampleLoss(heads: RetainingHeads, ex: LocretExample): number {
  const layers = heads.layers.map((p, l) => ({ scores: retainingForward(p, ex.layers[l].x, ex.tokens).scores, labels: ex.layers[l].labels }));
  return locretLoss(layers, ex.tokens, SHAPE.outDim).loss;
}

training('clipByValue clamps to ±limit and counts the clamped values', () => {
  const g = Float32Array.from([0.1, -0.7, 0.5, 2, -0.5, -3, 0]);
  assert.is(clipByValue(g, 0.5), 3);
  assert.equal(Array.from(g), [0.1, -0.5, 0.5, 0.5, -0.5, -0.5, 0].map((v) => Math.fround(v)));
});

training('the trainer\'s gradients are retainingBackward of Locret\'s loss, clipped by value at 0.5', () => {
  const trainer = new LocretTrainer(SHAPE, 2, 4, OPT);
  // Inputs of scale 40 make many gradient entries exceed 0.5.
  const ex = syntheticExample(11, 2, 8, 40);
  const r = trainer.gradients(ex);
  const fwds = trainer.heads.layers.map((p, l) => retainingForward(p, ex.layers[l].x, ex.tokens));
  const loss = locretLoss(fwds.map((f, l) => ({ scores: f.scores, labels: ex.layers[l].labels })), ex.tokens, SHAPE.outDim);
  const raw = trainer.heads.layers.flatMap((p, l) => {
    const g = retainingBackward(p, ex.layers[l].x, fwds[l], loss.grads[l]);
    return [...g.fc1, ...g.fc2];
  });
  const over = raw.filter((v) => Math.abs(v) > LOCRET_GRAD_CLIP).length;
  assert.ok(over > 10 && over < raw.length, `the case must clip some entries and keep others (${over} of ${raw.length} over)`);
  assert.is(r.clipped, over);
  assert.is(r.loss, loss.loss);
  raw.forEach((v, i) => assert.is(trainer.grads[i], Math.fround(Math.max(-LOCRET_GRAD_CLIP, Math.min(LOCRET_GRAD_CLIP, v))), `entry ${i}`));
});

training('steps on a fixed example lower its loss (and the weights are views of the trained parameters)', () => {
  const trainer = new LocretTrainer(SHAPE, 2, 1, OPT);
  const ex = syntheticExample(17, 2, 2);
  const first = exampleLoss(trainer.heads, ex);
  const reports = Array.from({ length: 60 }, () => trainer.step(ex));
  assert.equal(reports.map((r) => r.step), Array.from({ length: 60 }, (_, i) => i + 1));
  assert.is(reports[0].loss, first);
  const last = exampleLoss(trainer.heads, ex);
  assert.ok(last < 0.3 * first, `loss ${first} → ${last}`);
  assert.is(trainer.heads.layers[1].fc2[0], trainer.params[2 * SHAPE.hidden * SHAPE.inDim + SHAPE.outDim * SHAPE.hidden]);
});

training('a non-finite loss stops training before the weights change', () => {
  const trainer = new LocretTrainer(SHAPE, 1, 1, OPT);
  const ex = syntheticExample(5, 1, 3);
  ex.layers[0].labels[4] = NaN;
  const before = trainer.params.slice();
  assert.throws(() => trainer.step(ex), /locret training diverged at step 1: loss NaN/);
  assert.equal(trainer.params, before);
});

training.run();

const command = suite('locret train command');

command('trainLocretHeads on a tiny checkpoint; `duet locret train` saves beside the model, loads back equal, refuses to overwrite without --force', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'duet-locret-train-'));
  try {
    await writeCheckpoint(dir, { hidden: 24, intermediate: 40, layers: 2, heads: 6, kvHeads: 2, headDim: 4, vocab: 280, tokenizer: true, seed: 3, scale: 1 });
    const files = nodeModelFiles(dir);
    const steps: number[] = [];
    const r = await trainLocretHeads(files, { steps: 3, seqLen: 300, tasks: ['passkey'], evalSamples: 2, onStep: (s) => steps.push(s.step) });
    assert.equal(steps, [1, 2, 3]);
    assert.is(r.reports.length, 3);
    assert.ok(r.reports.every((s) => s.tokens >= 100 && s.tokens <= 300 && Number.isFinite(s.loss)), JSON.stringify(r.reports.map((s) => s.tokens)));
    assert.is(r.training.steps, 3);
    assert.is(r.training.seed, 0);
    assert.ok(r.heldOut && r.heldOut.samples === 2 && r.heldOut.after.perLayer.length === 2);
    // The same seed gives the same run.
    const again = await trainLocretHeads(files, { steps: 3, seqLen: 300, tasks: ['passkey'], evalSamples: 0 });
    assert.equal(again.heads.layers[1].fc1, r.heads.layers[1].fc1);
    assert.is(again.heldOut, null);

    const stderr = process.stderr.write;
    process.stderr.write = (() => true) as typeof process.stderr.write;
    try {
      assert.is(await main(['locret', 'train', '--model', dir, '--steps', '2', '--seq-len', '300', '--tasks', 'passkey', '--eval-samples', '1', '--seed', '7']), 0);
      const loaded = await loadLocretHeads(files, (await loadCheckpoint(files)).config);
      assert.is(loaded.training.steps, 2);
      assert.is(loaded.training.seed, 7);
      const direct = await trainLocretHeads(files, { steps: 2, seqLen: 300, tasks: ['passkey'], seed: 7, evalSamples: 0 });
      direct.heads.layers.forEach((p, l) => {
        assert.equal(loaded.heads.layers[l].fc1, p.fc1, `layer ${l} fc1`);
        assert.equal(loaded.heads.layers[l].fc2, p.fc2, `layer ${l} fc2`);
      });
      const json = readFileSync(join(dir, LOCRET_JSON), 'utf8');
      const err = await main(['locret', 'train', '--model', dir, '--steps', '1', '--seq-len', '300', '--tasks', 'passkey']).then(() => null, (e: Error) => e);
      assert.match(err?.message ?? '', /locret\.safetensors and .*locret\.json already exist; pass --force to replace them/);
      assert.is(readFileSync(join(dir, LOCRET_JSON), 'utf8'), json, 'refused before writing anything');
      assert.is(await main(['locret', 'train', '--model', dir, '--out', join(dir, LOCRET_JSON), '--steps', '1', '--seq-len', '300', '--tasks', 'passkey', '--eval-samples', '0', '--force']), 0);
      assert.is((await loadLocretHeads(files, (await loadCheckpoint(files)).config)).training.steps, 1);
      const bad = await main(['locret', 'train', '--model', dir, '--out', join(dir, 'heads.json')]).then(() => null, (e: Error) => e);
      assert.match(bad?.message ?? '', /heads\.json: retaining heads are saved as locret\.json \+ locret\.safetensors in a folder/);
      const long = await main(['locret', 'train', '--model', dir, '--seq-len', '9000', '--force']).then(() => null, (e: Error) => e);
      assert.match(long?.message ?? '', /--seq-len 9000 is longer than the model's 4096 positions/);
      const short = await main(['locret', 'train', '--model', dir, '--seq-len', '300', '--force']).then(() => null, (e: Error) => e);
      assert.match(short?.message ?? '', /--seq-len 300 is too short for niah-single prompts \(drawn from 150–300 tokens; niah-single needs 160\): use at least 320/);
      const task = await main(['locret', 'train', '--model', dir, '--tasks', 'passkey,haystack', '--force']).then(() => null, (e: Error) => e);
      assert.match(task?.message ?? '', /--tasks must be task kinds from .* \(got "haystack"\)/);
    } finally {
      process.stderr.write = stderr;
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

command('the bundled model\'s committed retaining heads load, and the WASM scorer gives the reference scores on a real example', async () => {
  const files = nodeModelFiles(join(import.meta.dirname, '..', 'fixtures', 'duet-passkey'));
  const { config, weights, tokenizer } = await loadCheckpoint(files);
  const loaded = await loadLocretHeads(files, config);
  assert.is(loaded.training.steps, 1200);
  assert.is(loaded.heads.layers.length, 3);
  const model = await frozenModel(config, weights, 400);
  const seq = locretSequences(tokenizer!, { tasks: ['passkey'], lengths: [300, 300] })(new Random(1));
  const ex = await locretExample(model, seq.ids, seq.prefix);
  const scorer = await LocretScorerCpu.create(loaded.heads, config);
  const qd = config.numHeads * config.headDim, kvd = config.numKvHeads * config.headDim, inDim = qd + 2 * kvd;
  ex.layers.forEach((layer, l) => {
    const want = retainingForward(loaded.heads.layers[l], layer.x, ex.tokens).scores;
    const got = scorer.scores(l, { q: layer.x, k: layer.x.subarray(qd), v: layer.x.subarray(qd + kvd), n: ex.tokens, qStride: inDim, kStride: inDim, vStride: inDim });
    const diff = k.maxAbsDiff(got, want);
    assert.ok(diff <= 1e-5, `layer ${l}: WASM vs reference ${diff}`);
  });
});

command.run();
