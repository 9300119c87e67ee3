// Smoke test of `duet bench`: a tiny run on the CPU writes well-formed results.json and SVG plots.
// Benchmarks are not tests: nothing here checks a speed.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchCommand } from '../src/cli/bench.ts';
import { finitePositive, runBenchCli } from './helpers/bench.ts';
import { benchShape, hostWeightBytes, outerWeightBytes, WASM_BUDGET, cpuFootprint } from '../src/bench/shapes.ts';


/** Each argument list must make `duet bench` fail with a message matching its pattern. */
async function expectBenchErrors(cases: Array<[string[], RegExp]>): Promise<void> {
  for (const [args, re] of cases) {
    let message: string | null = null;
    try { await benchCommand(args); } catch (e) { message = (e as Error).message; }
    if (message === null) assert.unreachable(`${args.join(' ')} should fail`);
    assert.match(message!, re, args.join(' '));
  }
}

test('a tiny bench run writes results.json and SVG plots', async () => {
  const { code, stdout, out, results: r } = await runBenchCli(['--shape', 'tiny', '--contexts', '64,256', '--sparsities', '0.5', '--prefill-chunk', '64',
    '--prefill-max', '64', '--sink', '4', '--recent', '16', '--decode-tokens', '3', '--warmup-tokens', '1', '--device', 'cpu']);
  assert.is(code, 0);
  assert.match(stdout, /End to end/);

  assert.is(r.version, 1);
  assert.is(r.model.source, 'shape:tiny');
  assert.is(r.model.layers, 2);
  assert.equal(r.settings.contexts, [64, 256]);
  finitePositive(r.probes?.bandwidth_gbps, 'bandwidth probe');
  finitePositive(r.probes?.peak_gflops, 'peak probe');
  assert.ok(Number.isInteger(r.probes?.threads) && r.probes!.threads! >= 1, `probe threads ${r.probes?.threads}`);
  for (const kernel of ['gemv', 'gemm', 'attention-decode', 'streaming-decode', 'attention-prefill', 'streaming-prefill', 'attention-decode-layer']) {
    assert.ok(r.kernels.some((k) => k.kernel === kernel), `kernel row ${kernel}`);
  }
  for (const k of r.kernels) {
    for (const f of ['ms', 'flops', 'bytes', 'gflops', 'gbps', 'pct_of_peak', 'pct_of_bandwidth', 'pct_of_roofline'] as const) finitePositive(k[f], `${k.kernel} ${k.shape} ${f}`);
  }

  // Full attention and DuoAttention at 0.5, CPU placement only (--device cpu), at both contexts.
  assert.equal(r.e2e.map((e) => `${e.label}@${e.context}`), ['full/cpu@64', 'full/cpu@256', 'duo@0.5/cpu@64', 'duo@0.5/cpu@256']);
  for (const e of r.e2e) {
    assert.is(e.error, undefined);
    for (const f of ['prefill_ms', 'decode_ms_per_token', 'prefill_speedup', 'decode_speedup', 'ideal_decode_speedup'] as const) finitePositive(e[f], `${e.label}@${e.context} ${f}`);
    assert.is(e.decode_tokens, 3);
    assert.is(e.decode_ms_samples.length, 3);
    for (const t of e.decode_ms_samples) finitePositive(t, `${e.label} decode sample`);
    assert.is(e.prefill_method, e.context <= 64 ? 'measured' : 'estimated');
    finitePositive(e.kv?.cpu, `${e.label} kv cpu`);
    assert.is(e.kv?.gpu, 0);
  }
  const full = r.e2e.find((e) => e.label === 'full/cpu' && e.context === 256)!;
  const duo = r.e2e.find((e) => e.label === 'duo@0.5/cpu' && e.context === 256)!;
  assert.is(full.decode_speedup, 1);
  assert.ok(duo.kv!.total < full.kv!.total, 'DuoAttention holds less KV');
  assert.ok(duo.ideal_decode_speedup! > 1);

  assert.is(r.memory.length, 4);
  for (const m of r.memory) {
    assert.is(m.error, undefined);
    assert.ok(m.matches, `${m.label}@${m.context}: runtime ${JSON.stringify(m.measured)} vs projection ${JSON.stringify(m.projected)}`);
    finitePositive(m.measured.total, 'measured KV');
    finitePositive(m.peak_rss_bytes, 'peak RSS');
    finitePositive(m.wasm_bytes, 'WASM bytes');
  }
  assert.is(r.crossovers.length, 1);
  assert.type(r.crossovers[0].why, 'string');

  assert.equal(r.plots, ['decode-ms-vs-context.svg', 'decode-speedup-vs-context.svg', 'prefill-ms-vs-context.svg', 'memory-vs-context.svg']);
  for (const name of r.plots) {
    const svg = readFileSync(join(out, name), 'utf8');
    assert.ok(svg.startsWith('<svg'), `${name} starts with <svg`);
    assert.ok(svg.trimEnd().endsWith('</svg>'), `${name} ends with </svg>`);
    assert.match(svg, /<(path|polyline)\b[^>]*points="[\d.,\s]+"/);
    assert.not.match(svg, /NaN|undefined|Infinity/);
    // Balanced tags: every element opened is closed or self-closing.
    const opened = (svg.match(/<[a-z]+\b[^>]*[^/]>/g) ?? []).length, closed = (svg.match(/<\/[a-z]+>/g) ?? []).length;
    assert.is(opened, closed, `${name}: ${opened} opening tags, ${closed} closing tags`);
  }
});

test('a shape keeps the layers its placements can hold: the WASM budget with the cpu placement, host memory without', () => {
  const at32k = { positions: 32768 + 11, chunk: 512, residency: { engines: 2, kvFactor: 1.75 } };
  const cpu = benchShape('llama-3.2-1b', at32k);
  assert.ok(cpu.config.numLayers >= 1 && cpu.config.numLayers < 16, `CPU side: ${cpu.config.numLayers} layers`);
  assert.ok(cpuFootprint(cpu.full, cpu.config.numLayers, at32k.positions, 512, at32k.residency) <= WASM_BUDGET);
  assert.ok(cpuFootprint(cpu.full, cpu.config.numLayers + 1, at32k.positions, 512, at32k.residency) > WASM_BUDGET);
  assert.ok(cpu.notes.some((n) => /CPU backend's memory/.test(n)), cpu.notes.join('; '));

  const gpuOnly = benchShape('llama-3.2-1b', { ...at32k, hostBudget: 64 * 2 ** 30 });
  assert.is(gpuOnly.config.numLayers, 16);
  assert.not.ok(gpuOnly.notes.some((n) => /of 16 layers/.test(n)), gpuOnly.notes.join('; '));

  const budget = 2 * 2 ** 30;
  const cut = benchShape('llama-3.2-1b', { ...at32k, hostBudget: budget });
  assert.ok(hostWeightBytes(cut.full, cut.config.numLayers) <= budget && hostWeightBytes(cut.full, cut.config.numLayers + 1) > budget);
  assert.ok(cut.notes.some((n) => /in host memory/.test(n)), cut.notes.join('; '));
  assert.throws(() => benchShape('llama-3.2-1b', { ...at32k, hostBudget: outerWeightBytes(cut.full) }), /not even one layer's f32 weights fit/);
});

test('at the longest context, every DuoAttention configuration decodes beside the one full-attention session', async () => {
  // tiny allows 4,096 positions; the full session decodes beside each of the two configurations, so
  // the bench must raise the limit for all of them (it used to count one: the second failed).
  const { results: r } = await runBenchCli(['--shape', 'tiny', '--suite', 'e2e', '--contexts', '4096', '--sparsities', '0.25,0.75', '--prefill-chunk', '512',
    '--prefill-max', '0', '--sink', '4', '--recent', '16', '--decode-tokens', '3', '--warmup-tokens', '1', '--device', 'cpu']);
  assert.equal(r.e2e.map((e) => e.label), ['full/cpu', 'duo@0.25/cpu', 'duo@0.75/cpu']);
  for (const e of r.e2e) assert.is(e.error, undefined, `${e.label}: ${e.error}`);
});

test('bad options get clear errors', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['--shape', 'gpt-9', '--device', 'cpu'], /unknown shape "gpt-9"/],
    [['--suite', 'speed'], /--suite must be all or a list of kernels, e2e, memory/],
    [['--shape', 'tiny', '--model', 'x'], /either --model DIR or --shape NAME/],
    [['--shape', 'tiny', '--contexts', '64,abc', '--device', 'cpu'], /--contexts.*"abc"/],
    [['--shape', 'tiny', '--sparsities', '1.5', '--device', 'cpu'], /--sparsities: "1.5" is not a sparsity/],
    [['--shape', 'tiny', '--placements', 'split', '--device', 'cpu', '--contexts', '64'], /--placements split need a GPU/],
    [['--shape', 'tiny', '--layers', '3', '--device', 'cpu', '--contexts', '64'], /--layers must be an integer in 1..2/],
  ];
  await expectBenchErrors(cases);
});



test("the bench's byte counts follow the weight format: decodeWeightBytes equals what randomWeights stores", async () => {
  const { randomWeights } = await import('../src/bench/random-weights.ts');
  const { matrixBytes } = await import('../src/model/weights.ts');
  const { decodeWeightBytes } = await import('../src/bench/shapes.ts');
  const { config } = benchShape('tiny', { positions: 64, chunk: 16 });
  for (const dtype of ['f32', 'f16', 'q8_0', 'q4_0', 'q4_k'] as const) {
    const w = randomWeights(config, 1, undefined, dtype);
    let stored = matrixBytes(w.lmHead);
    for (const l of w.layers) {
      stored += [l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown].reduce((a, m) => a + matrixBytes(m), 0) + (l.inputNorm.length + l.postNorm.length) * 4;
    }
    assert.is(decodeWeightBytes(config, config.numLayers, dtype), stored, dtype);
  }
});

test("the bench's CPU pool uploads each weight once for all engines, f32 and packed, and frees it with the last", async () => {
  const { CpuPool } = await import('../src/bench/engines.ts');
  const { asPacked } = await import('../src/model/weights.ts');
  const { convertMatrix } = await import('../src/model/weights.ts');
  const pool = new CpuPool({ threads: 1 });
  try {
    const f32 = Float32Array.from({ length: 64 * 40 }, (_, i) => Math.sin(i));
    const q8 = asPacked(convertMatrix(f32, 40, 64, 'q8_0'), 40, 64);
    const a = await pool.lease(), b = await pool.lease();
    const [af, aq] = [a.upload(f32), a.uploadWeight(q8)];
    const held = pool.memoryBytes;
    // The second engine gets the same tensors (new host objects of the same bytes would not be shared).
    assert.is(b.upload(f32), af);
    assert.is(b.uploadWeight(asPacked(q8, 40, 64)), aq);
    assert.is(pool.memoryBytes, held);
    a.destroy();
    assert.is(b.uploadWeight(q8), aq, 'still held by the second engine');
    b.destroy();
    const c = await pool.lease();
    assert.is.not(c.uploadWeight(q8), aq, 'freed with its last engine, uploaded again');
    c.destroy();
  } finally {
    pool.close();
  }
});

test('--kv-dtype f32,f16,int8: e2e and memory rows per KV dtype, KV bytes exact per dtype and equal to duet memory', async () => {
  const { projectKvMemory } = await import('../src/attention/memory.ts');
  const { benchShape } = await import('../src/bench/shapes.ts');
  const { code, stdout, results: r } = await runBenchCli(['--shape', 'tiny', '--suite', 'e2e,memory', '--contexts', '64', '--sparsities', '0.5', '--prefill-chunk', '32',
    '--prefill-max', '64', '--sink', '4', '--recent', '16', '--decode-tokens', '2', '--warmup-tokens', '0', '--device', 'cpu', '--kv-dtype', 'f32,f16,int8']);
  assert.is(code, 0);
  assert.equal(r.settings.kv_dtypes, ['f32', 'f16', 'int8']);
  assert.equal(r.e2e.map((e) => `${e.label} ${e.kv_dtype}`), ['full/cpu f32', 'duo@0.5/cpu f32', 'full/cpu f16', 'duo@0.5/cpu f16', 'full/cpu int8', 'duo@0.5/cpu int8']);
  // tiny: 2 layers × 2 KV heads, head_dim 16. The measured session holds context + warm-up + decode positions.
  const { config } = benchShape('tiny', { positions: 64, chunk: 32 });
  const D = config.headDim, heads = config.numLayers * config.numKvHeads;
  const rowBytes = { f32: 4 * D, f16: 2 * D, int8: D + 4 };
  for (const e of r.e2e) {
    assert.is(e.error, undefined, `${e.label} ${e.kv_dtype}: ${e.error}`);
    assert.is(e.decode_tokens, 2);
    finitePositive(e.prefill_ms, `${e.label} ${e.kv_dtype} prefill`);
    finitePositive(e.decode_ms_per_token, `${e.label} ${e.kv_dtype} decode`);
    if (e.heads === 'full') {
      assert.is(e.kv!.streaming, 0);
      assert.is(e.kv!.retrieval % (2 * heads * rowBytes[e.kv_dtype]), 0, `${e.kv_dtype}: whole rows of ${rowBytes[e.kv_dtype]} bytes`);
    } else {
      // Rings are stored in the KV dtype too: whole rows of that dtype.
      assert.is(e.kv!.streaming % (2 * rowBytes[e.kv_dtype]), 0, `${e.kv_dtype}: ring rows of ${rowBytes[e.kv_dtype]} bytes`);
      const f32Ring = r.e2e.find((x) => x.heads === 'duo' && x.kv_dtype === 'f32')!.kv!.streaming;
      assert.is(e.kv!.streaming * rowBytes.f32, f32Ring * rowBytes[e.kv_dtype], `${e.kv_dtype} rings`);
    }
    // The speedup is against full attention of the same KV dtype.
    if (e.heads === 'full') assert.is(e.decode_speedup, 1);
  }
  const full = (d: string) => r.e2e.find((e) => e.heads === 'full' && e.kv_dtype === d)!.kv!.retrieval;
  assert.is(full('f16') * 2, full('f32'));
  assert.is(full('int8') * 4 * D, full('f32') * (D + 4));
  // The ideal speedup counts full caches and rings in their dtype: a smaller KV against the same
  // weights, a smaller gain, but still one (64-token full caches against 20-slot rings).
  const ideal = (d: string) => r.e2e.find((e) => e.heads === 'duo' && e.kv_dtype === d)!.ideal_decode_speedup!;
  assert.ok(ideal('f32') > ideal('f16') && ideal('f16') > ideal('int8') && ideal('int8') > 1, `${ideal('f32')} ${ideal('f16')} ${ideal('int8')}`);

  assert.equal(r.memory.map((m) => `${m.label} ${m.kv_dtype}`), ['full/cpu f32', 'duo@0.5/cpu f32', 'full/cpu f16', 'duo@0.5/cpu f16', 'full/cpu int8', 'duo@0.5/cpu int8']);
  for (const m of r.memory) {
    assert.is(m.error, undefined);
    assert.ok(m.matches, `${m.label} ${m.kv_dtype}: runtime ${JSON.stringify(m.measured)} vs projection ${JSON.stringify(m.projected)}`);
    assert.is(m.measured.total, m.projected.total);
  }
  const memFull = (d: 'f32' | 'f16' | 'int8') => r.memory.find((m) => m.heads === 'full' && m.kv_dtype === d)!;
  for (const d of ['f32', 'f16', 'int8'] as const) {
    // Full attention at 64 tokens: every head a full cache of 64 rows, K and V.
    assert.is(memFull(d).measured.total, 2 * heads * 64 * rowBytes[d], d);
    assert.is(memFull(d).measured.total, projectKvMemory(Array.from({ length: config.numLayers }, () => Array(config.numKvHeads).fill(true)), D, 64, { sink: 4, recent: 16 }, d).duo_bytes);
  }
  assert.match(stdout, /full\/cpu\s+int8\s+64/);
  assert.equal(r.crossovers.map((c) => c.kv_dtype), ['f32', 'f16', 'int8']);
});

test('--kv-dtype errors name the flag; peers refuses it', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['--shape', 'tiny', '--device', 'cpu', '--contexts', '64', '--kv-dtype', 'f32,q8_0'], /--kv-dtype must be one of f32, f16, int8 \(got "q8_0"\)/],
    [['--shape', 'tiny', '--device', 'cpu', '--contexts', '64', '--kv-dtype', 'f16,f16'], /--kv-dtype lists a dtype twice/],
    [['--suite', 'peers', '--kv-dtype', 'int8'], /--kv-dtype is not supported by --suite peers/],
  ];
  await expectBenchErrors(cases);
});

test.run();
