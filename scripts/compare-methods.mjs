// KV methods compared on the bundled model at equal KV bytes: full attention, streaming-only,
// DuoAttention's and RazorAttention's patterns at 50% and 75% streaming heads (with and without the
// compensation token), Locret's eviction on every head at the budget whose bytes equal each
// pattern's, and the pattern's retrieval heads full with Locret on the heads it streams (budget =
// the window's size, so the bytes equal the pattern's again). Passkey, niah-single and niah-multikey
// at each length; the same prompts for every configuration. Writes docs/compare-methods.json and
// docs/compare-methods.svg and prints the README's markdown table.
//
//   npm run build && node scripts/compare-methods.mjs [--lengths 1024,2048,4080] [--samples 4] [--chunk 256]
//   node scripts/compare-methods.mjs --from docs/compare-methods.json   (table and SVG again, no evaluation)
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { evaluate, heatmap, kvMemory, loadModel, loadPattern, nodeModelFiles } from '../dist/node.js';

const { values: v } = parseArgs({ options: {
  model: { type: 'string', default: 'fixtures/duet-passkey' },
  duo: { type: 'string', default: 'fixtures/duet-passkey-pattern' },
  razor: { type: 'string', default: 'docs/identify/patterns/razor' },
  sparsities: { type: 'string', default: '0.5,0.75' },
  window: { type: 'string', default: '16/64' },
  tasks: { type: 'string', default: 'passkey,niah-single,niah-multikey' },
  // 4,096 is the model's max_position_embeddings: a 4,080-token prompt leaves room for the answer.
  lengths: { type: 'string', default: '1024,2048,4080' },
  depths: { type: 'string', default: '0,0.25,0.5,0.75,1' },
  samples: { type: 'string', default: '4' },
  chunk: { type: 'string', default: '256' },
  out: { type: 'string', default: 'docs/compare-methods' },
  from: { type: 'string' },
} });
const previous = v.from === undefined ? null : JSON.parse(readFileSync(v.from, 'utf8'));
if (previous) for (const k of ['model', 'duo', 'razor', 'sparsities', 'window', 'tasks', 'lengths', 'depths', 'samples', 'chunk']) v[k] = previous[k];
const tasks = v.tasks.split(','), lengths = v.lengths.split(',').map(Number), depths = v.depths.split(',').map(Number);
const samples = Number(v.samples);
const { rows, configs: configsOut, seconds } = previous ?? await measure();

/** Every configuration at every length: accuracy rows and each configuration's bytes and budget. */
async function measure() {
  const t0 = Date.now();
  const model = await loadModel(v.model, { device: 'cpu', threads: 1, prefillChunk: Number(v.chunk) });
  const { config } = model.info;
  const { numLayers: L, numKvHeads: H } = config;
  const [sink, recent] = v.window.split('/').map(Number);
  const window = { sink, recent };
  const patterns = { duo: await loadPattern(nodeModelFiles(v.duo), L, H), razor: await loadPattern(nodeModelFiles(v.razor), L, H) };
  // Bytes of a configuration at a context (what a session holding that many positions allocates).
  const bytesOf = (heads, context) => kvMemory(config, { ...heads, context }).duo_bytes;
  const rows = [], configsOut = [];
  for (const length of lengths) {
    // Budgets and bytes at the prompt's length (the answer's few tokens aside).
    const configs = [{ name: 'full' }, { name: `streaming-only ${sink}/${recent}`, streamingOnly: true, window }];
    for (const s of v.sparsities.split(',').map(Number)) {
      for (const [p, pattern] of Object.entries(patterns)) {
        configs.push({ name: `${p}@${s}`, pattern, sparsity: s, window });
        configs.push({ name: `${p}@${s}+comp`, pattern, sparsity: s, window, compensation: true });
      }
      // The largest budget on every head whose bytes do not exceed duo@s's.
      const budget = Math.floor(bytesOf({ pattern: patterns.duo, sparsity: s, window }, length) / bytesOf({ locret: { budget: 1 } }, length));
      configs.push({ name: `locret = duo@${s} bytes`, locret: { budget } });
      // The pattern's streaming heads evict to a budget of the window's size: the same bytes as duo@s;
      // stabilizers the default quarter, or the window's recent part (then the scores replace the sinks).
      for (const stabilizers of [Math.floor((sink + recent) / 4), recent]) {
        configs.push({ name: `duo@${s} + locret ${sink + recent}/${stabilizers} on its streaming heads`, pattern: patterns.duo, sparsity: s, locret: { budget: sink + recent, stabilizers } });
      }
    }
    process.stderr.write(`\n${length} tokens: ${configs.length} configurations\n`);
    const result = await evaluate(model, {
      configs, tasks, lengths: [length], depths, samples, seed: 0, restoreHeads: false,
      onProgress: (d, t, detail) => process.stderr.write(`\r${length}: ${d}/${t} ${detail}`.padEnd(90)),
    });
    rows.push(...result.rows);
    for (const c of result.configs) {
      configsOut.push({ length, name: c.name, kv_bytes: bytesOf(configs.find((x) => x.name === c.name), length), locret: c.locret, streaming_heads: c.streamingHeads, locret_heads: c.locretHeads });
    }
  }
  await model.dispose();
  return { rows, configs: configsOut, seconds: Math.round((Date.now() - t0) / 1000) };
}

const names = [...new Set(configsOut.map((c) => c.name))];
const cols = tasks.flatMap((t) => lengths.map((n) => [t, n]));
const acc = (name, task, len) => {
  const r = rows.filter((x) => x.config === name && x.task === task && x.length === len);
  return r.length ? r.reduce((a, x) => a + x.accuracy, 0) / r.length : NaN;
};
const info = (name, len) => configsOut.find((c) => c.name === name && c.length === len);
const fullBytes = (len) => info('full', len).kv_bytes;
const lines = [
  `| config | ${cols.map(([t, n]) => `${t} ${n}`).join(' | ')} | KV bytes vs full (${lengths.join(' / ')}) | locret budget/stabilizers (${lengths.join(' / ')}) |`,
  `|---|${cols.map(() => '---|').join('')}---|---|`,
];
for (const name of names) {
  const ratio = lengths.map((n) => `${Math.round((100 * info(name, n).kv_bytes) / fullBytes(n))}%`).join(' / ');
  const budgets = lengths.map((n) => { const l = info(name, n).locret; return l ? `${l.budget}/${l.stabilizers}` : '–'; }).join(' / ');
  lines.push(`| ${name} | ${cols.map(([t, n]) => `${Math.round(100 * acc(name, t, n))}%`).join(' | ')} | ${ratio} | ${budgets} |`);
}
const table = lines.join('\n');
const svg = heatmap(names.map((name) => cols.map(([t, n]) => acc(name, t, n))), {
  title: `Accuracy on ${v.model} (${depths.length} depths × ${samples} samples per cell)`,
  rowLabel: 'configuration', colLabel: 'task, prompt length (4K = 4,080 tokens)',
  rowNames: names, colNames: cols.map(([t, n]) => `${{ passkey: 'pass', 'niah-single': 'single', 'niah-multikey': 'multi' }[t] ?? t} ${(n / 1024).toFixed(0)}K`), annotate: true,
});
const save = (file, text) => { writeFileSync(`${file}.tmp`, text); renameSync(`${file}.tmp`, file); };
const { from: _from, ...settings } = v;
if (!previous) save(`${v.out}.json`, `${JSON.stringify({ ...settings, seconds, prompts_per_cell: depths.length * samples, configs: configsOut, rows }, null, 1)}\n`);
save(`${v.out}.svg`, svg);
process.stdout.write(`\n${table}\n\n(${seconds} s; ${depths.length * samples} prompts per cell)\n`);
