// Identification on a DHA checkpoint (issue 21: "duo identification on the DHA model"): the frozen
// training model expands decoupled layers to the multi-head model they compute (each query head's
// key and value rows are its key head's and value head's), so its logits equal the float64 DHA
// reference (|Δ| ≤ 2e-3·(1 + |ref|), as the runtime tests), and `duet identify --method duo` runs
// on it with one gate per key head (the runtime streams a key head only with all its query heads),
// written into each of its query heads' columns (the patterns' nominal shape). Locret training still
// refuses DHA checkpoints (its retaining heads have no definition there).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ConvertOptions } from '../src/dha/convert.ts';
import type { DhaConfig } from '../src/dha/config.ts';
import { frozenModel } from '../src/identify/frozen.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { identifyHeads } from '../src/node.ts';
import { saveModel } from '../src/node/checkpoint-io.ts';
import { convertToDha } from '../src/node/dha.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { Arena } from '../src/train/arena.ts';
import { TrainModel, cpuTrainModel, type TrainConfig } from '../src/train/model.ts';
import { VOCAB_SIZE } from '../src/train/vocab.ts';
import { assertClose } from './helpers/conformance.ts';
import { writeDhaCheckpoint } from './helpers/dha-checkpoint.ts';
import { referenceLogits } from './reference/model.ts';

const c: TrainConfig = { vocab: VOCAB_SIZE, hidden: 16, layers: 2, heads: 4, kvHeads: 4, headDim: 4, intermediate: 24, eps: 1e-5, ropeTheta: 10000, maxRows: 160 };
const convert: ConvertOptions = { method: 'dha', budget: 0.375, tokens: 600, tokensPerStep: 300, maxLength: 160, tasks: ['passkey'], similaritySequences: 2, validationSequences: 2, seed: 3 };
const dir = mkdtempSync(join(tmpdir(), 'duet-dha-identify-'));

const source = join(dir, 'src');
{
  const m = cpuTrainModel(await Arena.create((k) => TrainModel.arenaBytes(c, k)), c);
  m.initialise(4);
  saveModel(source, c, Float32Array.from(m.params), 4096, {});
}
const out = join(dir, 'dha');
await convertToDha({ ...convert, model: source, out, threads: 1 });
const ckpt = await loadCheckpoint(nodeModelFiles(out));

test('the converted model is decoupled (otherwise this tests nothing)', () => {
  const d = ckpt.config.dha!;
  assert.ok(d.layers.some((l) => l.keyHeads < c.heads || l.valueHeads < c.heads), JSON.stringify(d));
});

test('the expanded frozen model computes the DHA model: logits equal the float64 reference within 2e-3·(1 + |ref|)', async () => {
  // A random DHA checkpoint whose attention matters (the runtime tests' layouts: 2K+3V, a kept layer, 1K+2V).
  const H = 5, D = 6, rdir = mkdtempSync(join(tmpdir(), 'duet-dha-identify-'));
  const layout: DhaConfig = { layers: [
    { keyHeads: 2, valueHeads: 3, queryToKey: [1, 0, 1, 1, 0], queryToValue: [2, 0, 1, 2, 0] },
    { keyHeads: 5, valueHeads: 5, queryToKey: [0, 1, 2, 3, 4], queryToValue: [0, 1, 2, 3, 4] },
    { keyHeads: 1, valueHeads: 2, queryToKey: [0, 0, 0, 0, 0], queryToValue: [1, 0, 0, 1, 1] },
  ] };
  await writeDhaCheckpoint(rdir, { hidden: H * D, heads: H, intermediate: 44, vocab: 97, seed: 7 }, layout);
  const r = await loadCheckpoint(nodeModelFiles(rdir));
  const ids = [5, 17, 3, 90, 42, 7, 0, 11, 23, 64, 8, 1, 33, 31, 2, 77, 4];
  const want = referenceLogits(r.config, r.weights, ids, undefined, layout);
  const m = await frozenModel(r.config, r.weights, 32, 'expand');
  assert.is(m.c.kvHeads, H, 'one KV head per query head');
  m.forward(Int32Array.from(ids), Int32Array.from(ids, (_, i) => i));
  const hidden = m.c.hidden, vocab = m.c.vocab;
  ids.forEach((_, t) => {
    const got = Float64Array.from({ length: vocab }, (_, v) => {
      let z = 0;
      for (let e = 0; e < hidden; e++) z += m.hidden[t * hidden + e] * m.p.lmHead[v * hidden + e];
      return z;
    });
    assertClose(got, want[t], `position ${t}`, 2e-3);
  });
  let refused = '';
  await frozenModel(r.config, r.weights, 32).catch((e: Error) => { refused = e.message; });
  assert.match(refused, /decoupled key\/value heads per layer.*the training forward \(Locret training\) supports only/);
});

test('duet identify --method duo on the DHA model: one gate per key head, in each of its query heads\' columns', async () => {
  let grid = '';
  const r = await identifyHeads(out, { method: 'duo', steps: 3, lengths: [512, 600], window: { sink: 4, recent: 16 }, onStart: (s) => { grid = `${s.layers}x${s.kvHeads}`; } });
  assert.is(grid, `${c.layers}x${c.heads}`);
  assert.is(r.alphas.length, c.layers);
  const d = ckpt.config.dha!;
  r.alphas.forEach((row, l) => {
    assert.is(row.length, c.heads);
    for (const a of row) assert.ok(Number.isFinite(a) && a >= 0 && a <= 1, `alpha ${a}`);
    // One gate per key head: the query heads that read it (and that the runtime streams together) share it.
    for (let h = 0; h < c.heads; h++) for (let g = 0; g < c.heads; g++) {
      if (d.layers[l].queryToKey[h] === d.layers[l].queryToKey[g]) assert.is(row[h], row[g], `layer ${l}: heads ${h} and ${g} share key head ${d.layers[l].queryToKey[h]}`);
    }
  });
  assert.ok(r.alphas.flat().some((a) => a < 1), 'the gates moved');
});

test.run();
