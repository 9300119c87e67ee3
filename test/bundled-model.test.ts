// The bundled model (fixtures/duet-passkey) does what its model card says: full attention recalls
// pass keys on a small grid, streaming-only attention cannot, and it has ≥ 12 KV heads to identify.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { allHeads } from '../src/attention/pattern.ts';
import { evaluate, fillerStyleFor, type HeadConfig } from '../src/eval/evaluate.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { nodeModelFiles } from '../src/node/files.ts';

const DIR = new URL('../fixtures/duet-passkey', import.meta.url).pathname;

async function passkeyAccuracy(heads: (layers: number, kvHeads: number) => HeadConfig, lengths: number[], depths: number[]) {
  const ckpt = await loadCheckpoint(nodeModelFiles(DIR));
  const { config, tokenizer } = ckpt;
  const rows = await evaluate({
    config, weights: ckpt.weights, tokenizer: tokenizer!, heads: [heads(config.numLayers, config.numKvHeads)],
    tasks: ['passkey'], lengths, depths, samples: 2, seed: 7, style: fillerStyleFor(tokenizer!), stopIds: ckpt.eosTokenIds,
    engine: { device: 'cpu' },
  });
  return { rows, mean: rows.reduce((a, r) => a + r.accuracy, 0) / rows.length, config };
}

// The model card's measured level at ≤ 1,024 tokens is 85–95%; the target (≥ 95% up to
// 2,048 tokens) is not reached yet (2,048: 35%), see fixtures/duet-passkey/README.md.
test('bundled model, full attention: ≥ 75% passkey exact match at 256 and 1024 tokens (3 depths)', async () => {
  const { rows, mean, config } = await passkeyAccuracy((L, H) => ({ name: 'full', kinds: allHeads(L, H, true) }), [256, 1024], [0.25, 0.5, 0.75]);
  assert.ok(config.numLayers * config.numKvHeads >= 12, 'the bundled model needs at least 12 KV heads');
  assert.ok(mean >= 0.75, `full-attention passkey accuracy ${(mean * 100).toFixed(0)}%: ${JSON.stringify(rows.map((r) => [r.length, r.depth, r.accuracy]))}`);
});

test('bundled model, every head streaming (sink 16, recent 64): ≤ 20% when the needle is outside the window', async () => {
  const window = { sink: 16, recent: 64 };
  const { mean } = await passkeyAccuracy((L, H) => ({ name: 'streaming-only', kinds: allHeads(L, H, false), window }), [1024], [0.25, 0.5, 0.75]);
  assert.ok(mean <= 0.2, `streaming-only passkey accuracy ${(mean * 100).toFixed(0)}%: the model should need its retrieval heads`);
});

test.run();
