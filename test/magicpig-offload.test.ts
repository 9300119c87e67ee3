// MagicPIG's offloading through the library (loadModel's offload option) and the CLI (--offload),
// on the bundled passkey model (fixtures/duet-passkey, CPU):
// - every retrieval head becomes magicpig (with a pattern: the retrieval heads only; dense layers
//   stay full), its store is in host memory and its static rings on the main device (the CPU
//   here), and `kvMemory` (what `duet memory --offload` prints) equals the runtime's measured bytes
//   exactly;
// - the sampled fraction is reported per decode step, strictly between 0 and 1 at 1K tokens, and
//   the same with the offload threads as with one thread;
// - bad options (K, L, dense layers, nothing to offload, locret, packed KV) are refused by name.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { kvMemory, loadModel, type DuetModel, type HeadPattern } from '../src/node.ts';
import { main } from '../src/cli/main.ts';
import { sharedGpu } from './helpers/engine.ts';
import { gpuTests } from './helpers/gpu-skip.ts';

const DIR = 'fixtures/duet-passkey';

function prompt(n: number): number[] {
  return Array.from({ length: n }, (_, i) => 3 + ((i * 7 + (i >> 3)) % 40));
}

/** Layers 0..2 × 4 KV heads, half streaming: α 1 on heads 0 and 2. */
const pattern: HeadPattern = { alphas: [[1, 0, 1, 0], [1, 0, 1, 0], [1, 0, 1, 0]], sink: 4, recent: 16, config: {} };

async function run(model: DuetModel, n: number, maxTokens: number) {
  const g = model.generate(prompt(n), { maxTokens, stop: [] });
  for await (const _ of g) { /* drain */ }
  return g.result();
}

test('offload: bytes equal kvMemory exactly (the store offloaded, the static rings on the main device); the sampled fraction per decode step; 2 threads = 1 thread', async () => {
  const model = await loadModel(DIR, { device: 'cpu', threads: 2, offload: { K: 8, L: 60 } });
  try {
    assert.match(model.info.heads, /retrieval heads offloaded \(MagicPIG K 8 × L 60, 4 sinks \+ 64 local, 2 threads\)/);
    const r = await run(model, 1000, 6);
    // The offload threads split the KV heads; every head's result is the same bits whichever thread runs it.
    const one = await loadModel(DIR, { device: 'cpu', threads: 1, offload: { K: 8, L: 60 } });
    try {
      assert.match(one.info.heads, /4 sinks \+ 64 local\)/);
      const r1 = await run(one, 1000, 6);
      assert.equal(r1.tokens, r.tokens);
      assert.equal(r1.kv.sampledFraction, r.kv.sampledFraction);
    } finally { await one.dispose(); }
    const p = kvMemory(model.info.config, { context: 1006, offload: { K: 8, L: 60 } });
    assert.is(r.kv.gpu, 0);
    assert.is(r.kv.offloaded, p.offloaded_bytes);
    // The projection is the split placement's (static rings, planes and k̄ on the GPU); on the CPU placement every byte is a CPU byte.
    assert.is(r.kv.cpu, p.cpu_bytes + p.gpu_bytes);
    // 12 heads × (4 sinks + 64 local + 1) slots × 16 dims × K and V, f32; 3 layers × (planes 8·60·16 + k̄ 4·16).
    assert.is(p.gpu_bytes, 4 * (12 * 69 * 16 * 2 + 3 * (8 * 60 * 16 + 4 * 16)));
    assert.is(p.offloaded_heads, 12);
    assert.is(r.kv.retrieval + r.kv.streaming, 0);
    const f = r.kv.sampledFraction!;
    assert.is(f.length, r.tokens.length - 1, 'one entry per decode step (the prefill is exact)');
    for (const x of f) assert.ok(x > 0 && x < 1, `sampled fraction ${x}`);
  } finally { await model.dispose(); }
});

test('offload with a pattern and a dense layer: streaming heads stay on rings, dense layers full; bytes as projected', async () => {
  const model = await loadModel(DIR, { device: 'cpu', pattern, sparsity: 0.5, offload: { denseLayers: [1] } });
  try {
    assert.match(model.info.heads, /layers 1 dense/);
    const r = await run(model, 300, 4);
    const p = kvMemory(model.info.config, { pattern, sparsity: 0.5, context: 304, offload: { denseLayers: [1] } });
    assert.is(p.offloaded_heads, 4, 'two retrieval heads in each of layers 0 and 2');
    assert.is(p.retrieval_heads, 2);
    assert.is(p.streaming_heads, 6);
    assert.is(r.kv.offloaded, p.offloaded_bytes);
    // The projection is the split placement's (full heads and the offloaded heads' static rings on the GPU); on the CPU placement every byte is a CPU byte.
    assert.is(r.kv.retrieval, p.method_bytes.full);
    assert.is(r.kv.cpu, p.cpu_bytes + p.gpu_bytes);
    assert.ok(r.kv.retrieval > 0 && r.kv.streaming > 0);
    assert.ok(r.kv.sampledFraction!.length === 3);
  } finally { await model.dispose(); }
});

const gpu = await sharedGpu();
gpuTests(test, gpu.gpu !== null, gpu.reason)('split placement (software GPU): dense-layer heads and the offloaded heads\' static rings on the GPU, streaming heads on the CPU, stores in host memory, as projected', async () => {
  const model = await loadModel(DIR, { gpuDevice: gpu.gpu!.device, placement: 'split', pattern, sparsity: 0.5, offload: { denseLayers: [1] } });
  try {
    assert.is(model.info.placement, 'split');
    const r = await run(model, 120, 3);
    const p = kvMemory(model.info.config, { pattern, sparsity: 0.5, context: 123, offload: { denseLayers: [1] } });
    assert.is(r.kv.gpu, p.gpu_bytes);
    assert.is(r.kv.cpu, p.cpu_bytes);
    assert.is(r.kv.offloaded, p.offloaded_bytes);
    assert.is(r.kv.sampledFraction!.length, 2);
  } finally { await model.dispose(); }
});

test('offload: bad options are refused, naming the field', async () => {
  const refused = async (o: Parameters<typeof loadModel>[1], re: RegExp) => {
    let message = '';
    await loadModel(DIR, { device: 'cpu', ...o }).then((m) => m.dispose(), (e: Error) => { message = e.message; });
    assert.match(message, re);
  };
  await refused({ offload: { K: 0 } }, /offload.*K \(bits per hash table\) must be an integer in 1\.\.16 \(got 0\)/);
  await refused({ offload: { L: 2000 } }, /offload.*L \(hash tables\) must be an integer in 2\.\.1024/);
  await refused({ offload: { denseLayers: [3] } }, /offload\.denseLayers.*3 is not a layer of the model \(0\.\.2\)/);
  await refused({ offload: { denseLayers: [0, 1, 2] } }, /leaves no head to offload/);
  await refused({ offload: true, streamingOnly: true, window: { sink: 4, recent: 16 } }, /leaves no head to offload/);
  await refused({ offload: true, kvDtype: 'f16' }, /offload.*KV dtype f16 is not supported/);
  await refused({ offload: true, locret: { budget: 64 } }, /offload.*cannot be combined with locret/);
  const config = await loadConfig();
  assert.throws(() => kvMemory(config, { context: 10, offload: { K: 99 } }), /K .*got 99/);
});

async function loadConfig() {
  const { parseModelConfig } = await import('../src/node.ts');
  const { readFile } = await import('node:fs/promises');
  return parseModelConfig(JSON.parse(await readFile(`${DIR}/config.json`, 'utf8')), 'config.json');
}

/** Runs the CLI, capturing stdout. */
async function cli(args: string[]): Promise<{ code: number; out: string }> {
  let out = '';
  const write = process.stdout.write.bind(process.stdout), err = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((s: string) => { out += s; return true; }) as typeof process.stdout.write;
  process.stderr.write = (() => true) as typeof process.stderr.write;
  try { return { code: await main(args), out }; } finally { process.stdout.write = write; process.stderr.write = err; }
}

test('duet generate --offload --json and duet memory --offload agree; bare --offload takes the defaults', async () => {
  const g = await cli(['generate', '--model', DIR, '--device', 'cpu', '--passkey', '1000', '--max-tokens', '8', '--offload', '--json']);
  assert.is(g.code, 0);
  const j = JSON.parse(g.out);
  assert.match(j.heads, /MagicPIG K 11 × L 150/);
  assert.is(j.offload.sampled_fraction_per_step.length, j.tokens.length - 1);
  assert.ok(j.offload.mean_sampled_fraction > 0 && j.offload.mean_sampled_fraction < 1);
  const m = await cli(['memory', '--config', `${DIR}/config.json`, '--context', String(j.prompt_tokens + 8), '--offload', '--json']);
  assert.is(JSON.parse(m.out).cpu_bytes + JSON.parse(m.out).gpu_bytes, j.kv_bytes.cpu);
  assert.is(JSON.parse(m.out).offloaded_bytes, j.kv_bytes.offloaded);
  const custom = await cli(['memory', '--config', `${DIR}/config.json`, '--context', '500', '--offload', '6,40', '--dense-layers', '0', '--json']);
  assert.match(JSON.parse(custom.out).heads, /K 6 × L 40.*layers 0 dense/);
  let message = '';
  await main(['memory', '--config', `${DIR}/config.json`, '--context', '500', '--offload', '6']).catch((e: Error) => { message = e.message; });
  assert.match(message, /--offload takes K,L/);
  message = '';
  await main(['memory', '--config', `${DIR}/config.json`, '--context', '500', '--dense-layers', '0']).catch((e: Error) => { message = e.message; });
  assert.match(message, /--dense-layers goes with --offload/);
});

test('--offload-tables: generate = memory with the tables counted (L i32 per offloaded key and head + bucket starts); same keys sampled as the scan', async () => {
  const args = ['generate', '--model', DIR, '--device', 'cpu', '--passkey', '1000', '--max-tokens', '6', '--offload', '8,60', '--json'];
  const scan = JSON.parse((await cli(args)).out), tables = JSON.parse((await cli([...args, '--offload-tables'])).out);
  assert.match(tables.heads, /MagicPIG K 8 × L 60 \(bucket tables\)/);
  assert.equal(tables.tokens, scan.tokens);
  assert.equal(tables.offload.sampled_fraction_per_step, scan.offload.sampled_fraction_per_step);
  const context = tables.prompt_tokens + 6;
  const memory = async (extra: string[]) => JSON.parse((await cli(['memory', '--config', `${DIR}/config.json`, '--context', String(context), '--offload', '8,60', ...extra, '--json'])).out);
  const [m0, m1] = [await memory([]), await memory(['--offload-tables'])];
  assert.is(m1.offloaded_bytes, tables.kv_bytes.offloaded);
  // 12 offloaded KV heads (3 layers × 4), 4 sinks + 64 local of `context` positions static.
  assert.is(m1.offloaded_bytes - m0.offloaded_bytes, 12 * (4 * 60 * (context - 68) + 4 * 60 * (2 ** 8 + 1)));
  for (const [extra, pattern] of [[['--offload-tables'], /--offload-tables goes with --offload/], [['--topk', '5', '--offload-tables'], /--offload-tables indexes hash codes; --topk hashes nothing/]] as const) {
    let message = '';
    await main(['memory', '--config', `${DIR}/config.json`, '--context', '500', ...extra]).catch((e: Error) => { message = e.message; });
    assert.match(message, pattern);
  }
});

test('duet eval --offload: each configuration\'s kv_bytes count the offloaded stores, equal to duet memory --offload', async () => {
  const e = await cli(['eval', '--model', DIR, '--device', 'cpu', '--tasks', 'passkey', '--lengths', '300', '--depths', '0.5', '--samples', '1',
    '--pattern', `${DIR}-pattern`, '--sparsity', '0.5', '--offload', '--json']);
  assert.is(e.code, 0);
  const configs = JSON.parse(e.out).configs as Array<{ name: string; kv_bytes: number; kv_context: number }>;
  assert.equal(configs.map((c) => c.name), ['full', 'pattern@0.5']);
  for (const [c, heads] of [[configs[0], ['--full']], [configs[1], ['--pattern', `${DIR}-pattern`, '--sparsity', '0.5']]] as const) {
    const m = JSON.parse((await cli(['memory', '--config', `${DIR}/config.json`, '--context', String(c.kv_context), ...heads, '--offload', '--json'])).out);
    assert.ok(m.offloaded_bytes > 0, c.name);
    assert.is(c.kv_bytes, m.duo_bytes, `${c.name}: eval's kv_bytes vs duet memory`);
  }
});

test.run();
