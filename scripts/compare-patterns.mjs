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
  tasks: { type: 'string', default: 'passkey,niah-single,niah-multikey' },
  lengths: { type: 'string', default: '1024,2048' },
  depths: { type: 'string', default: '0,0.25,0.5,0.75,1' },
  samples: { type: 'string', default: '2' },
  seeds: { type: 'string', default: '5' },
  'duo-steps': { type: 'string', default: '300' },
  methods: { type: 'string', default: 'duo,duo-tasks,retrieval-score,razor' },
  'duo-data': { type: 'string', default: 'passkey,niah-single,niah-multikey' },
} });
const root = new URL('..', import.meta.url).pathname;
const duet = (args, json = false) => {
  process.stderr.write(`\n$ duet ${args.join(' ')}\n`);
  const out = execFileSync(process.execPath, [join(root, 'bin/duet.mjs'), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 28 });
  return json ? JSON.parse(out.toString()) : out.toString();
};
const sparsities = v.sparsities.split(',').map(Number);
const sink = 16, recent = 64;
const evalArgs = ['--model', v.model, '--tasks', v.tasks, '--lengths', v.lengths, '--depths', v.depths, '--samples', v.samples,
  '--device', 'cpu', '--threads', '1', '--json'];
const t0 = Date.now();

// 1. Patterns: each method once (its scores), and once per sparsity with --zigzag.
const methods = v.methods.split(',');
// duo-tasks: DuoAttention's optimisation on the evaluation tasks' format instead of word passkeys.
const methodArgs = {
  duo: ['--method', 'duo', '--steps', v['duo-steps']],
  'duo-tasks': ['--method', 'duo', '--steps', v['duo-steps'], '--data', v['duo-data']],
  'retrieval-score': ['--method', 'retrieval-score'], razor: ['--method', 'razor'],
};
for (const m of methods) if (!methodArgs[m]) throw new Error(`--methods: unknown method "${m}" (${Object.keys(methodArgs).join(', ')})`);
const patternDir = (m, s) => join(v.out, 'patterns', s === undefined ? m : `${m}+zigzag@${s}`);
for (const m of methods) {
  duet(['identify', '--model', v.model, '--out', patternDir(m), '--sink', String(sink), '--recent', String(recent), ...methodArgs[m]]);
  for (const s of sparsities) {
    duet(['identify', '--model', v.model, '--zigzag', '--sparsity', String(s), '--out', patternDir(m, s), '--sink', String(sink), '--recent', String(recent), ...methodArgs[m]]);
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
// Streaming heads and KV bytes at the longest length per configuration, as `duet eval` reports them.
const configInfo = {};
const takeConfigs = (result, rename = (n) => n) => {
  for (const c of result.configs) configInfo[rename(c.name)] = c;
};
takeConfigs(baseline);
for (const s of sparsities) {
  const random = duet(['eval', ...evalArgs, '--random-pattern', String(s), '--seeds', v.seeds, '--sink', String(sink), '--recent', String(recent), '--out', join(v.out, 'eval', `random@${s}`)], true);
  for (let k = 0; k < Number(v.seeds); k++) take(random, `random@${s}#${k}`, `random@${s}#${k}`);
  takeConfigs(random, (n) => n.replace(/#\d+$/, ''));
  for (const m of methods) {
    for (const zz of [false, true]) {
      const name = `${m}${zz ? '+zigzag' : ''}@${s}`;
      const args = zz ? ['--pattern', patternDir(m, s)] : ['--pattern', patternDir(m), '--sparsity', String(s)];
      const r = duet(['eval', ...evalArgs, ...args, '--out', join(v.out, 'eval', name)], true);
      const own = r.configs.find((c) => c.name !== 'full');
      take(r, own.name, name);
      configInfo[name] = own;
    }
  }
}

// 3. The table: mean accuracy per task and length, streaming share and KV bytes at the longest length.
const lengths = v.lengths.split(',').map(Number), tasks = v.tasks.split(','), maxLen = Math.max(...lengths);
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const acc = (config, task, len) => mean(rows.filter((r) => r.config.replace(/#\d+$/, '') === config && r.task === task && r.length === len).map((r) => r.accuracy));
const configs = ['full', 'streaming-only'];
for (const s of sparsities) {
  for (const m of methods) for (const zz of [false, true]) configs.push(`${m}${zz ? '+zigzag' : ''}@${s}`);
  configs.push(`random@${s}`);
}
const header = ['config', 'streaming KV heads', ...tasks.flatMap((t) => lengths.map((len) => `${t} ${len}`)), `KV @${maxLen}`];
const table = configs.map((name) => [
  name.startsWith('random') ? `${name} (mean of ${v.seeds} seeds)` : name, `${configInfo[name].streaming_heads}/${configInfo[name].kv_heads}`,
  ...tasks.flatMap((t) => lengths.map((len) => `${(acc(name, t, len) * 100).toFixed(0)}%`)), `${(configInfo[name].kv_bytes / 1024).toFixed(0)} KiB`,
]);
const md = [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...table.map((r) => `| ${r.join(' | ')} |`)].join('\n');
mkdirSync(v.out, { recursive: true });
const command = `node scripts/compare-patterns.mjs ${process.argv.slice(2).join(' ')}`.trim();
writeFileSync(join(v.out, 'comparison.md'), `${md}\n\nMeasured by \`${command}\` in ${((Date.now() - t0) / 60000).toFixed(1)} min; sink ${sink}, recent ${recent}; `
  + `tasks ${v.tasks}; depths ${v.depths}; ${v.samples} samples per cell.\n`);
writeFileSync(join(v.out, 'comparison.json'), `${JSON.stringify({ command, model: v.model, sink, recent, sparsities, rows, configs: configInfo }, null, 1)}\n`);
process.stdout.write(`${md}\n`);
