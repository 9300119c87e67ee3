// One harness for every head scorer of identification (src/identify/registry.ts): each runs
// through the HeadScorer interface on a tiny model and must give a [layer][KV head] grid of scores in
// [0, 1], the same scores again for the same seed, and the ranks its method implies:
//  - duo and razor on a hand-built model (test/helpers/hand-built-model.ts) with one purely local
//    head (0) and one head that finds a marker token wherever it is (1): the far-looking head ranks
//    first. DuoAttention's gates stream the local head; Razor's local head spends all its attention
//    on the token itself, so its echo score (attention to earlier copies of the same token) is ~0.
//  - retrieval-score needs a model that answers passkeys: the bundled model at 200–240 tokens. Its
//    top head is the one DuoAttention's committed pattern (fixtures/duet-passkey-pattern, trained
//    separately) also ranks first: layer 2, KV head 0.
// A scorer added to the registry without a case here fails the first test.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { IDENTIFY_METHODS } from '../src/api/identify.ts';
import { fillerStyleFor } from '../src/eval/evaluate.ts';
import { frozenModel } from '../src/identify/frozen.ts';
import { HEAD_SCORERS, headScorer } from '../src/identify/registry.ts';
import type { HeadScores, ScorerInput, ScorerSettings } from '../src/identify/scorer.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { TextTokenizer } from '../src/model/tokenizer.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { tokenizerFiles } from '../src/train/vocab.ts';
import { MARKER, handBuiltModel } from './helpers/hand-built-model.ts';

const SETTINGS: ScorerSettings = {
  lengths: [48, 60], seed: 1, sink: 2, recent: 8, steps: 120, lr: 0.02, reg: 0.05, data: 'words', samples: 1,
  echoRatio: 0.01, inductionRatio: 0.14,
};

function bundledTokenizer(): TextTokenizer {
  const tok = tokenizerFiles();
  return new TextTokenizer(tok.tokenizer, tok.tokenizerConfig as Record<string, unknown>);
}

/** Heads in descending score order, as [layer, KV head] (ties: the earlier head). */
function ranks(scores: number[][]): Array<[number, number]> {
  const heads = scores.flatMap((row, l) => row.map((s, h) => ({ s, at: [l, h] as [number, number] })));
  return heads.sort((a, b) => b.s - a.s).map((x) => x.at);
}

interface Case { input: () => Promise<ScorerInput>; grid: [number, number]; expect: (r: HeadScores) => void }

const CASES: Record<string, Case> = {
  duo: {
    grid: [1, 2],
    input: async () => ({
      model: await handBuiltModel(), tokenizer: bundledTokenizer(), style: 'grammar', eosTokenIds: [], settings: SETTINGS,
      // A marker far back that the answer rows must find: only head 1 can.
      sample: (rng, length) => {
        const ids = Int32Array.from({ length }, (_, i) => (i === 0 ? 0 : 4 + rng.int(0, 8)));
        ids[rng.int(5, 20)] = MARKER;
        return { ids, answerRows: [length - 4, length - 3, length - 2, length - 1], description: 'marker far back' };
      },
    }),
    expect: (r) => {
      assert.equal(ranks(r.scores), [[0, 1], [0, 0]]);
      const [local, copy] = r.scores[0];
      // Binarised at the default threshold 0.5: the local head streams, the far-copy head keeps its cache.
      assert.ok(local < 0.1, `local head α = ${local}`);
      assert.ok(copy > 0.5, `far-copy head α = ${copy}`);
      assert.ok((r.extra.loss as number[]).every(Number.isFinite));
      assert.equal(r.options, { steps: 120, lr: 0.02, reg: 0.05, data: 'words' });
    },
  },
  razor: {
    grid: [1, 2],
    // 4 repeats of a 16-token segment after BOS: 65 rows.
    input: async () => ({ model: await handBuiltModel(80), tokenizer: bundledTokenizer(), style: 'grammar', eosTokenIds: [], settings: SETTINGS }),
    expect: (r) => {
      assert.equal(ranks(r.scores), [[0, 1], [0, 0]]);
      const echo = r.extra.echo as number[][], induction = r.extra.induction as number[][];
      assert.ok(echo[0][0] < 1e-9 && echo[0][1] > 1e-7, `echo ${echo[0]}`);
      assert.ok(induction[0][1] > induction[0][0], `induction ${induction[0]}`);
      // Top 1% by echo ∪ top 14% by induction of 2 heads: head 1 both times.
      assert.is(r.extra.selected, 1);
      assert.ok(r.scores[0][1] >= 0.5 && r.scores[0][0] < 0.5, JSON.stringify(r.scores));
      assert.is(r.data, 'random segment of 16 tokens repeated 4 times');
    },
  },
  'retrieval-score': {
    grid: [3, 4],
    input: async () => {
      const files = nodeModelFiles(join(import.meta.dirname, '..', 'fixtures', 'duet-passkey'));
      const ck = await loadCheckpoint(files);
      return {
        model: await frozenModel(ck.config, ck.weights, 320), tokenizer: ck.tokenizer!, style: fillerStyleFor(ck.tokenizer!),
        eosTokenIds: ck.eosTokenIds, settings: { ...SETTINGS, lengths: [200, 240] },
      };
    },
    expect: (r) => {
      assert.ok((r.extra.successful as number) >= 1, `${r.extra.successful} of ${r.extra.runs} answered`);
      const pattern = readFileSync(join(import.meta.dirname, '..', 'fixtures', 'duet-passkey-pattern', 'full_attention_heads.tsv'), 'utf8')
        .trim().split('\n').map((line) => line.split('\t').map(Number));
      assert.equal(ranks(r.scores)[0], ranks(pattern)[0]);
      assert.equal(ranks(r.scores)[0], [2, 0]);
      assert.is(Math.max(...r.scores.flat()), 1);
    },
  },
};

test('the registry: every scorer has a case here, names match the API\'s methods, unknown names are refused', () => {
  assert.equal(HEAD_SCORERS.map((s) => s.name).sort(), Object.keys(CASES).sort());
  assert.equal([...IDENTIFY_METHODS], HEAD_SCORERS.map((s) => s.name));
  assert.throws(() => headScorer('magic'), /method must be one of duo, retrieval-score, razor \(got "magic"\)/);
});

for (const scorer of HEAD_SCORERS) {
  test(`${scorer.name}: scores per (layer, KV head) in [0, 1], the same again for the same seed, and the expected ranks`, async () => {
    const c = CASES[scorer.name];
    const first = await scorer.score(await c.input());
    assert.is(first.scores.length, c.grid[0]);
    for (const row of first.scores) {
      assert.is(row.length, c.grid[1]);
      for (const s of row) assert.ok(Number.isFinite(s) && s >= 0 && s <= 1, `score ${s}`);
    }
    assert.type(first.data, 'string');
    c.expect(first);
    const again = await scorer.score(await c.input());
    assert.equal(again.scores, first.scores);
  });
}

test.run();
