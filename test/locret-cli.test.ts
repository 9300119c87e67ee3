// `duet memory` and `duet eval` with Locret (--method locret --budget N [--stabilizers N] [--chunk N],
// alone or on a pattern's streaming heads) and with a method pattern (--methods FILE): the projected
// bytes equal what the runtime measures, eval runs the locret configurations, bad flags are refused.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../src/cli/main.ts';
import { kvMemory, loadModel, loadPattern, nodeModelFiles, parseModelConfig, type HeadOptions } from '../src/node.ts';

const MODEL = 'fixtures/duet-passkey', PATTERN = 'fixtures/duet-passkey-pattern';
const config = parseModelConfig(JSON.parse(readFileSync(`${MODEL}/config.json`, 'utf8')), 'config.json');
const tmp = mkdtempSync(join(tmpdir(), 'duet-locret-cli-'));
const METHODS_FILE = join(tmp, 'kv_methods.tsv');
// The bundled model: 3 layers × 4 KV heads.
const METHODS = [['full', 'locret', 'streaming', 'locret'], ['locret', 'locret', 'locret', 'locret'], ['streaming', 'full', 'full', 'locret']];
writeFileSync(METHODS_FILE, METHODS.map((r) => r.join('\t')).join('\n') + '\n');

/** Runs the CLI, returning stdout (stderr swallowed) or the error's message prefixed by "error: ". */
async function cli(...argv: string[]): Promise<string> {
  const write = { out: process.stdout.write, err: process.stderr.write };
  let printed = '';
  process.stdout.write = ((c: string) => { printed += c; return true; }) as typeof process.stdout.write;
  process.stderr.write = (() => true) as typeof process.stderr.write;
  try {
    await main(argv);
    return printed;
  } catch (e) {
    return `error: ${(e as Error).message}`;
  } finally { process.stdout.write = write.out; process.stderr.write = write.err; }
}

const test = suite('locret in duet memory and duet eval');

test('duet memory --method locret: exact bytes, equal to what a generation holds (alone, on a pattern\'s streaming heads, by --methods)', async () => {
  const context = 64, prompt = Array.from({ length: 60 }, (_, i) => 2 + (i * 7) % 40);
  const pattern = await loadPattern(nodeModelFiles(PATTERN), 3, 4);
  const cases: Array<{ flags: string[]; heads: HeadOptions; locretHeads: number }> = [
    { flags: ['--method', 'locret', '--budget', '24'], heads: { locret: { budget: 24 } }, locretHeads: 12 },
    { flags: ['--method', 'locret', '--budget', '10', '--stabilizers', '3', '--pattern', PATTERN, '--sparsity', '0.5'], heads: { pattern, sparsity: 0.5, locret: { budget: 10, stabilizers: 3 } }, locretHeads: 6 },
    { flags: ['--methods', METHODS_FILE, '--budget', '9', '--sink', '4', '--recent', '16'], heads: { methods: METHODS, locret: { budget: 9 }, window: { sink: 4, recent: 16 } }, locretHeads: 7 },
  ];
  const model = await loadModel(MODEL, { device: 'cpu' });
  try {
    for (const c of cases) {
      const p = JSON.parse(await cli('memory', '--config', `${MODEL}/config.json`, '--context', String(context), '--json', ...c.flags));
      assert.is(p.locret_heads, c.locretHeads, c.flags.join(' '));
      const budget = c.heads.locret!.budget;
      assert.is(p.method_bytes.locret, 2 * 4 * 16 * budget * c.locretHeads, 'K and V of budget positions per locret KV head, f32');
      assert.is(p.duo_bytes, kvMemory(config, { ...c.heads, context }).duo_bytes);
      await model.setHeads(c.heads);
      const r = await model.generate(prompt, { maxTokens: context - prompt.length, ignoreEos: true }).result();
      assert.is(r.kv.gpu + r.kv.cpu, p.duo_bytes, `measured = projected: ${c.flags.join(' ')}`);
    }
  } finally { await model.dispose(); }
});

test('duet memory: bad budgets and method files are refused by flag, file and line', async () => {
  const mem = (...f: string[]) => cli('memory', '--config', `${MODEL}/config.json`, '--context', '64', ...f);
  assert.match(await mem('--method', 'locret'), /^error: --method locret needs --budget N/);
  assert.match(await mem('--method', 'locret', '--budget', '0'), /^error: --budget must be an integer ≥ 1 \(got "0"\)/);
  assert.match(await mem('--method', 'locret', '--budget', '2.5'), /^error: --budget must be an integer ≥ 1 \(got "2\.5"\)/);
  assert.match(await mem('--method', 'locret', '--budget', '8', '--stabilizers', '9'), /^error: --stabilizers must be at most --budget 8 \(got 9\)/);
  assert.match(await mem('--budget', '8'), /^error: --budget and --stabilizers go with --method locret/);
  assert.match(await mem('--method', 'locret', '--budget', '8', '--streaming-only', '--sink', '4', '--recent', '8'), /^error: --method locret cannot be combined with --streaming-only/);
  assert.match(await mem('--method', 'locret', '--budget', '8', '--kv-dtype', 'f16'), /^error: --method locret keeps its cache in f32/);
  assert.match(await mem('--methods', METHODS_FILE, '--sink', '4', '--recent', '8'), /^error: --methods name locret heads, which need the locret option \(budget\)/);
  assert.match(await mem('--methods', METHODS_FILE, '--budget', '8'), /^error: --methods name streaming heads, which need --sink and --recent/);
  assert.match(await mem('--methods', METHODS_FILE, '--method', 'locret', '--budget', '8'), /^error: --method locret and --methods FILE both say which heads evict/);
  const bad = join(tmp, 'bad.tsv');
  writeFileSync(bad, 'full full full full\nfull lru full full\nfull full full full\n');
  assert.match(await mem('--methods', bad, '--budget', '8'), new RegExp(`^error: ${bad.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: line 2, column 2: unknown KV method "lru" \\(registered: full, streaming, locret, magicpig\\)`));
  assert.match(await mem('--methods', join(tmp, 'none.tsv')), /^error: --methods .*none\.tsv: ENOENT/);
});

test('duet eval --method locret --budget N --chunk N: the locret configurations run and report their bytes; with --pattern also the combination', async () => {
  const out = join(tmp, 'eval');
  const printed = await cli('eval', '--model', MODEL, '--device', 'cpu', '--tasks', 'passkey', '--lengths', '200', '--depths', '0.5', '--samples', '1',
    '--method', 'locret', '--budget', '40', '--stabilizers', '8', '--chunk', '64', '--pattern', PATTERN, '--sparsity', '0.5', '--out', out, '--json');
  const r = JSON.parse(printed);
  assert.equal(r.configs.map((c: { name: string }) => c.name), ['full', 'pattern@0.5', 'locret@40', 'pattern@0.5+locret@40']);
  const pattern = await loadPattern(nodeModelFiles(PATTERN), 3, 4);
  const byName = Object.fromEntries(r.configs.map((c: { name: string }) => [c.name, c]));
  assert.is(byName['locret@40'].kv_bytes, kvMemory(config, { locret: { budget: 40, stabilizers: 8 }, context: 200 }).duo_bytes);
  assert.is(byName['locret@40'].kv_bytes, 2 * 4 * 16 * 40 * 12);
  assert.equal(byName['locret@40'].locret, { budget: 40, stabilizers: 8 });
  assert.is(byName['pattern@0.5+locret@40'].kv_bytes, kvMemory(config, { pattern, sparsity: 0.5, locret: { budget: 40, stabilizers: 8 }, context: 200 }).duo_bytes);
  assert.is(byName['pattern@0.5+locret@40'].locret_heads, 6);
  assert.is(r.results.length, 4, 'one row per configuration');
  for (const row of r.results) assert.ok(row.accuracy >= 0 && row.accuracy <= 1);
});

test('duet eval: bad --budget, --stabilizers and --chunk are refused before loading', async () => {
  const ev = (...f: string[]) => cli('eval', '--model', MODEL, '--device', 'cpu', '--out', join(tmp, 'eval-bad'), ...f);
  assert.match(await ev('--method', 'locret'), /^error: --method locret needs --budget N/);
  assert.match(await ev('--method', 'locret', '--budget', 'x'), /^error: --budget must be an integer ≥ 1 \(got "x"\)/);
  assert.match(await ev('--method', 'locret', '--budget', '8', '--stabilizers', '12'), /^error: --stabilizers must be at most --budget 8 \(got 12\)/);
  assert.match(await ev('--stabilizers', '2'), /^error: --budget and --stabilizers go with --method locret/);
  assert.match(await ev('--method', 'locret', '--budget', '8', '--chunk', '0'), /^error: --chunk must be an integer ≥ 1 \(got "0"\)/);
  assert.match(await ev('--method', 'locret', '--budget', '8', '--chunk', '64', '--prefill-chunk', '32'), /^error: --chunk and --prefill-chunk are the same setting/);
  assert.match(await ev('--method', 'lru', '--budget', '8'), /^error: --method must be one of duo, locret \(got "lru"\)/);
});

test.run();
