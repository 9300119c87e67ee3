// The README's identification comparison, measured in one run: every method of `duet identify`
// (with and without ZigzagAttention's layer constraint), streaming-only and random patterns, each at
// several sparsities, evaluated by `duet eval` on the same prompts as full attention; KV memory from
// the patterns actually used. Writes docs/identify/{comparison.json,comparison.md} and the patterns.
//
//   node scripts/compare-patterns.mjs [--model fixtures/duet-passkey] [--out docs/identify]
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: v } = parseArgs({ options: {
  model: { type: 'string', default: 'fixtures/duet-passkey' },
  out: { type: 'string', default: 'docs/identify' },
  sparsities: { type: 'string', default: '0.25,0.5,0.75' },
  tasks: { type: 'string', default: 'passkey,niah-multikey' },
  lengths: { type: 'string', default: '1024,2048' },
  depths: { type: 'string', default: '0,0.25,0.5,0.75,1' },
  samples: { type: 'string', default: '2' },
  seeds: { type: 'string', default: '5' },
  'duo-steps': { type: 'string', default: '150' },
  methods: { type: 'string', default: 'duo,retrieval-score,razor' },
} });
const root = new URL('..', import.meta.url).pathname;
const duet = (args, json = false) => {
  process.stderr.write(`\n$ duet ${args.join(' ')}\n`);
  const out = execFileSync(process.execPath, [join(root, 'bin/duet.mjs'), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 28 });
  return json ? JSON.parse(out.toString()) : out.toString();
};
const sparsities = v.sparsities.split(',').map(Number);
const config = JSON.parse(readFileSync(join(v.model, 'config.json'), 'utf8'));
const L = config.num_hidden_layers, H = config.num_key_value_heads, D = config.head_dim ?? config.hidden_size / config.num_attention_heads;
const sink = 16, recent = 64;
const evalArgs = ['--model', v.model, '--tasks', v.tasks, '--lengths', v.lengths, '--depths', v.depths, '--samples', v.samples,
  '--device', 'cpu', '--threads', '1', '--json'];
const t0 = Date.now();

// 1. Patterns: each method once (its scores), and once per sparsity with --zigzag.
const methods = v.methods.split(',');
const methodArgs = { duo: ['--steps', v['duo-steps']], 'retrieval-score': [], razor: [] };
const patternDir = (m, s) => join(v.out, 'patterns', s === undefined ? m : `${m}+zigzag@${s}`);
for (const m of methods) {
  duet(['identify', '--model', v.model, '--method', m, '--out', patternDir(m), '--sink', String(sink), '--recent', String(recent), ...methodArgs[m]]);
  for (const s of sparsities) {
    duet(['identify', '--model', v.model, '--method', m, '--zigzag', '--sparsity', String(s), '--out', patternDir(m, s), '--sink', String(sink), '--recent', String(recent), ...methodArgs[m]]);
  }
}

// 2. Accuracy. Every eval run also has full attention first (the same prompts every time).
const rows = [];
const take = (result, config, rename) => {
  for (const r of result.results) if (r.config === config) rows.push({ ...r, config: rename });
};
const baseline = duet(['eval', ...evalArgs, '--streaming-only', '--sink', String(sink), '--recent', String(recent), '--out', join(v.out, 'eval', 'baselines')], true);
take(baseline, 'full', 'full');
take(baseline, 'streaming-only', 'streaming-only');
const kindsFor = {};
for (const s of sparsities) {
  const random = duet(['eval', ...evalArgs, '--random-pattern', String(s), '--seeds', v.seeds, '--sink', String(sink), '--recent', String(recent), '--out', join(v.out, 'eval', `random@${s}`)], true);
  for (let k = 0; k < Number(v.seeds); k++) take(random, `random@${s}#${k}`, `random@${s}#${k}`);
  for (const m of methods) {
    for (const zz of [false, true]) {
      const name = `${m}${zz ? '+zigzag' : ''}@${s}`;
      const args = zz ? ['--pattern', patternDir(m, s)] : ['--pattern', patternDir(m), '--sparsity', String(s)];
      const r = duet(['eval', ...evalArgs, ...args, '--out', join(v.out, 'eval', name)], true);
      take(r, r.results.find((x) => x.config !== 'full').config, name);
      kindsFor[name] = streamingCount(zz ? patternDir(m, s) : patternDir(m), zz ? undefined : s);
    }
  }
}

/** Streaming KV heads of a pattern as eval binarises it (zigzag patterns are already 0/1). */
function streamingCount(dir, sparsity) {
  const alphas = readFileSync(join(dir, 'full_attention_heads.tsv'), 'utf8').trim().split('\n').map((l) => l.split('\t').map(Number));
  const flat = alphas.flat();
  return sparsity === undefined ? flat.filter((a) => a < 0.5).length : Math.round(sparsity * flat.length);
}

// 3. The table: mean accuracy per task and length, streaming share and KV bytes at the longest length.
const lengths = v.lengths.split(',').map(Number), tasks = v.tasks.split(','), maxLen = Math.max(...lengths);
const total = L * H;
const kvBytes = (streaming) => 2 * D * 4 * ((total - streaming) * maxLen + streaming * Math.min(maxLen, sink + recent));
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const acc = (config, task, len) => mean(rows.filter((r) => r.config.replace(/#\d+$/, '') === config && r.task === task && r.length === len).map((r) => r.accuracy));
const configs = [['full', 0], ['streaming-only', total]];
for (const s of sparsities) {
  for (const m of methods) for (const zz of [false, true]) { const n = `${m}${zz ? '+zigzag' : ''}@${s}`; configs.push([n, kindsFor[n]]); }
  configs.push([`random@${s}`, Math.round(s * total)]);
}
const header = ['config', 'streaming KV heads', ...tasks.flatMap((t) => lengths.map((len) => `${t} ${len}`)), `KV @${maxLen}`];
const table = configs.map(([name, streaming]) => [
  name.startsWith('random') ? `${name} (mean of ${v.seeds} seeds)` : name, `${streaming}/${total}`,
  ...tasks.flatMap((t) => lengths.map((len) => `${(acc(name, t, len) * 100).toFixed(0)}%`)), `${(kvBytes(streaming) / 1024).toFixed(0)} KiB`,
]);
const md = [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...table.map((r) => `| ${r.join(' | ')} |`)].join('\n');
mkdirSync(v.out, { recursive: true });
const command = `node scripts/compare-patterns.mjs ${process.argv.slice(2).join(' ')}`.trim();
writeFileSync(join(v.out, 'comparison.md'), `${md}\n\nMeasured by \`${command}\` in ${((Date.now() - t0) / 60000).toFixed(1)} min; sink ${sink}, recent ${recent}; `
  + `tasks ${v.tasks}; depths ${v.depths}; ${v.samples} samples per cell.\n`);
writeFileSync(join(v.out, 'comparison.json'), `${JSON.stringify({ command, model: v.model, sink, recent, sparsities, rows, streaming: kindsFor }, null, 1)}\n`);
process.stdout.write(`${md}\n`);
