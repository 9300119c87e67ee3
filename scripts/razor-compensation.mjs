// RazorAttention's compensation token on the bundled model: streaming-only and DuoAttention's and
// RazorAttention's patterns at several sparsities and windows, each with and without the token, on the same prompts
// as full attention (passkey, niah-single, niah-multikey) plus perplexity on held-out haystack
// text. Writes docs/razor.json and prints the markdown table of docs/razor.md.
//
//   npm run build && node scripts/razor-compensation.mjs [--windows 16/64,4/32] [--sparsities 0.5,0.75]
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { evaluate, loadModel, loadPattern, nodeModelFiles } from '../dist/node.js';

const { values: v } = parseArgs({ options: {
  model: { type: 'string', default: 'fixtures/duet-passkey' },
  patterns: { type: 'string', default: 'duo=fixtures/duet-passkey-pattern,razor=docs/identify/patterns/razor' },
  sparsities: { type: 'string', default: '0.5,0.75' },
  windows: { type: 'string', default: '16/64,4/32' },
  tasks: { type: 'string', default: 'passkey,niah-single,niah-multikey' },
  lengths: { type: 'string', default: '1024,2048' },
  depths: { type: 'string', default: '0,0.25,0.5,0.75,1' },
  samples: { type: 'string', default: '2' },
  perplexity: { type: 'string', default: '1024' },
  out: { type: 'string', default: 'docs/razor.json' },
} });
const t0 = Date.now();
const model = await loadModel(v.model, { device: 'cpu', threads: 1 });
const { numLayers: L, numKvHeads: H } = model.info.config;
const configs = [{ name: 'full' }];
for (const w of v.windows.split(',')) {
  const [sink, recent] = w.split('/').map(Number);
  configs.push({ name: `streaming-only ${sink}/${recent}`, streamingOnly: true, window: { sink, recent } });
  configs.push({ name: `streaming-only ${sink}/${recent}+comp`, streamingOnly: true, window: { sink, recent }, compensation: true });
}
for (const entry of v.patterns.split(',')) {
  const [method, dir] = entry.split('=');
  const pattern = await loadPattern(nodeModelFiles(dir), L, H);
  for (const s of v.sparsities.split(',').map(Number)) {
    for (const w of v.windows.split(',')) {
      const [sink, recent] = w.split('/').map(Number);
      const name = `${method}@${s} ${sink}/${recent}`;
      configs.push({ name, pattern, sparsity: s, window: { sink, recent } });
      configs.push({ name: `${name}+comp`, pattern, sparsity: s, window: { sink, recent }, compensation: true });
    }
  }
}
const tasks = v.tasks.split(','), lengths = v.lengths.split(',').map(Number);
const result = await evaluate(model, {
  configs, tasks, lengths, depths: v.depths.split(',').map(Number), samples: Number(v.samples), seed: 0,
  perplexity: { length: Number(v.perplexity) }, restoreHeads: false,
  onProgress: (d, t) => process.stderr.write(`\r${d}/${t}`),
});
await model.dispose();
const seconds = Math.round((Date.now() - t0) / 1000);
writeFileSync(v.out, `${JSON.stringify({ ...v, seconds, ...result }, null, 1)}\n`);
const cell = (c, task, len) => {
  const rows = result.rows.filter((r) => r.config === c && r.task === task && r.length === len);
  return `${Math.round((100 * rows.reduce((a, r) => a + r.accuracy, 0)) / rows.length)}%`;
};
const cols = tasks.flatMap((t) => lengths.map((n) => [t, n]));
const lines = [`| config | ${cols.map(([t, n]) => `${t} ${n}`).join(' | ')} | perplexity @${v.perplexity} |`, `|---|${cols.map(() => '---|').join('')}---|`];
for (const c of result.configs) {
  const ppl = result.perplexity.find((p) => p.config === c.name);
  lines.push(`| ${c.name} | ${cols.map(([t, n]) => cell(c.name, t, n)).join(' | ')} | ${ppl ? ppl.perplexity.toFixed(3) : '–'} |`);
}
process.stdout.write(`\n${lines.join('\n')}\n\n(${seconds} s)\n`);
