// The duet_dha layout in config.json: parsing, validation errors that name the field, and the
// loader (the layout parsed, the tensors checked against its per-layer counts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, cpSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dhaCacheHeads, dhaConfigJson, parseDhaConfig } from '../src/dha/config.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { parseModelConfig } from '../src/model/config.ts';
import { nodeModelFiles } from '../src/node/files.ts';

async function rejects(f: () => Promise<unknown>, re: RegExp): Promise<void> {
  try { await f(); } catch (e) { assert.match((e as Error).message, re); return; }
  assert.unreachable('expected an error');
}

const layout = { format: 1, layers: [
  { key_heads: 2, value_heads: 1, query_to_key: [0, 0, 1, 1], query_to_value: [0, 0, 0, 0] },
  { key_heads: 3, value_heads: 4, query_to_key: [0, 1, 2, 2], query_to_value: [3, 2, 1, 0] },
] };

test('parses a layout and writes it back unchanged', () => {
  const c = parseDhaConfig(layout, 2, 4);
  assert.equal(c.layers[1], { keyHeads: 3, valueHeads: 4, queryToKey: [0, 1, 2, 2], queryToValue: [3, 2, 1, 0] });
  assert.is(dhaCacheHeads(c), 10);
  assert.equal(dhaConfigJson(c), layout);
});

test('bad layouts name the field', () => {
  const bad = (mutate: (o: any) => void, re: RegExp, layers = 2) => {
    const o = structuredClone(layout); mutate(o);
    assert.throws(() => parseDhaConfig(o, layers, 4), re);
  };
  bad(() => {}, /duet_dha\.layers" has 2 entries, the model has 3 layers/, 3);
  bad((o) => { o.format = 2; }, /duet_dha\.format" must be 1/);
  bad((o) => { o.layers[0].key_heads = 5; }, /layers\[0\]\.key_heads" must be an integer from 1 to 4/);
  bad((o) => { o.layers[0].query_to_key = [0, 0, 1]; }, /layers\[0\]\.query_to_key" must be an array of 4/);
  bad((o) => { o.layers[0].query_to_key = [0, 0, 2, 1]; }, /query_to_key\[2\]" must be an integer from 0 to 1/);
  bad((o) => { o.layers[1].query_to_value = [0, 1, 2, 2]; }, /query_to_value" never uses head 3 of 4/);
});

test('the loader reads a DHA layout and checks the tensors against its per-layer counts; plain checkpoints load', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'duet-dha-'));
  cpSync('fixtures/duet-passkey', dir, { recursive: true });
  const plain = await loadCheckpoint(nodeModelFiles(dir));
  assert.is(plain.config.dha, null);
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  cfg.duet_dha = { format: 1, layers: [0, 1, 2].map(() => ({ key_heads: 2, value_heads: 1, query_to_key: [0, 0, 1, 1], query_to_value: [0, 0, 0, 0] })) };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
  // The fixture's k_proj still has 4 heads' rows: the layout and the tensors disagree.
  await rejects(() => loadCheckpoint(nodeModelFiles(dir)), /tensor "model\.layers\.0\.self_attn\.k_proj\.weight" has shape \[64, 64\], expected \[32, 64\] from config\.json \(duet_dha\.layers\[0\]\.key_heads 2 × head_dim 16 rows\)/);
  cfg.duet_dha.layers[2].value_heads = 0;
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
  await rejects(() => loadCheckpoint(nodeModelFiles(dir)), /duet_dha\.layers\[2\]\.value_heads/);
  // duet memory parses config.json through the same function: it reads the per-layer counts.
  cfg.duet_dha.layers[2].value_heads = 1;
  const parsed = parseModelConfig(cfg, 'x/config.json');
  assert.equal(parsed.dha!.layers.map((l) => [l.keyHeads, l.valueHeads]), [[2, 1], [2, 1], [2, 1]]);
});

test.run();
