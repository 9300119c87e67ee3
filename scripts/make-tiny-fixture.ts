// Writes fixtures/tiny-random: a small random-weight Llama checkpoint in HF layout with a byte-level
// BPE tokenizer, plus a DuoAttention-format pattern for it (fixtures/tiny-random-pattern).
// Run: node --import tsx scripts/make-tiny-fixture.ts
import { mkdirSync, writeFileSync } from 'node:fs';
import { writeCheckpoint } from '../test/helpers/checkpoint.ts';
import { formatAlphas } from '../src/attention/pattern.ts';
import { rng } from '../test/reference/kernels.ts';

const root = new URL('../fixtures/', import.meta.url).pathname;
const spec = await writeCheckpoint(`${root}tiny-random`, {
  modelType: 'llama', hidden: 64, intermediate: 128, layers: 4, heads: 8, kvHeads: 4, vocab: 301,
  dtype: 'F16', seed: 2024, tokenizer: true, maxPositions: 8192,
});
const random = rng(7);
const alphas = Array.from({ length: spec.layers }, () => Array.from({ length: spec.kvHeads }, () => Number(random().toFixed(3))));
mkdirSync(`${root}tiny-random-pattern`, { recursive: true });
writeFileSync(`${root}tiny-random-pattern/full_attention_heads.tsv`, formatAlphas(alphas));
writeFileSync(`${root}tiny-random-pattern/config.json`, JSON.stringify({
  sink_size: 4, recent_size: 16, deploy_sink_size: null, deploy_recent_size: null, threshold: 0.5,
  note: 'random gate values for the random-weight fixture; a format example, not a trained pattern',
}, null, 2));
console.log('wrote fixtures/tiny-random and fixtures/tiny-random-pattern');
