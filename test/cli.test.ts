// The `duet` command end to end (the built bundle, as users run it).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { publishedPatterns } from './helpers/published.ts';
import { ensureFreshDist } from './helpers/fresh-dist.ts';

ensureFreshDist();

const run = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/duet.mjs');
const MODEL = join(ROOT, 'fixtures/tiny-random');
const PATTERN = join(ROOT, 'fixtures/tiny-random-pattern');

async function duet(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { cwd: ROOT, timeout: 120_000 });
    return { stdout, stderr, code: 0 };
  } catch (e) {
    const err = e as { stdout: string; stderr: string; code: number };
    return { stdout: err.stdout, stderr: err.stderr, code: err.code };
  }
}

test('generate --json on the CPU: tokens, text, device, timings, KV bytes', async () => {
  const r = await duet('generate', '--model', MODEL, '--prompt', 'hello world', '--max-tokens', '6', '--device', 'cpu', '--json');
  assert.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.is(out.tokens.length, 6);
  assert.type(out.text, 'string');
  assert.is(out.device, 'cpu');
  assert.ok(out.timings.prefill_ms > 0 && out.timings.decode_ms_per_token > 0);
  assert.ok(out.kv_bytes.retrieval > 0);
  assert.is(out.kv_bytes.streaming, 0);
});

test('generate streams text, greedy output matches --json, and the same with --prompt-ids', async () => {
  const json = JSON.parse((await duet('generate', '--model', MODEL, '--prompt', 'the world', '--max-tokens', '5', '--device', 'cpu', '--json')).stdout);
  const text = await duet('generate', '--model', MODEL, '--prompt', 'the world', '--max-tokens', '5', '--device', 'cpu');
  assert.is(text.code, 0, text.stderr);
  assert.is(text.stdout, `${json.text}\n`);
  const ids = await duet('generate', '--model', MODEL, '--prompt-ids', '0,7,33,99', '--max-tokens', '3', '--device', 'cpu', '--json');
  assert.is(JSON.parse(ids.stdout).tokens.length, 3);
});

test('generate --weights q8_0 on the CPU stores the matmul weights packed (fewer bytes) and still generates', async () => {
  const f32 = JSON.parse((await duet('generate', '--model', MODEL, '--prompt', 'the world', '--max-tokens', '4', '--device', 'cpu', '--json')).stdout);
  const q8 = JSON.parse((await duet('generate', '--model', MODEL, '--prompt', 'the world', '--max-tokens', '4', '--device', 'cpu', '--weights', 'q8_0', '--json')).stdout);
  assert.is(f32.weights.dtype, 'f32');
  assert.is(q8.weights.dtype, 'q8_0');
  assert.ok(q8.weights.bytes < f32.weights.bytes / 2, `${q8.weights.bytes} vs ${f32.weights.bytes}`);
  assert.is(q8.tokens.length, 4);
});

test('generate with a pattern reports the streaming ring and a constant CPU cache', async () => {
  const r = await duet('generate', '--model', MODEL, '--pattern', PATTERN, '--sparsity', '0.5', '--prompt', 'hello hello hello hello', '--max-tokens', '4', '--device', 'cpu', '--json');
  assert.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  // 16 KV heads, half streaming: 8 × (sink 4 + recent 16) × head_dim 8 × K,V × 4 bytes.
  assert.is(out.kv_bytes.streaming, 8 * 20 * 8 * 2 * 4);
  assert.match(out.heads, /8\/16 KV heads streaming \(sink 4, recent 16\)/);
});

test('bad input gets a clear error and a non-zero exit', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['generate', '--model', '/nonexistent'], /give exactly one of --prompt, --prompt-ids and --passkey LENGTH/],
    [['generate', '--model', MODEL, '--prompt', 'x', '--depth', '0.5'], /--depth goes with --passkey/],
    [['generate', '--model', MODEL, '--passkey', '8'], /--passkey must be an integer ≥ 32/],
    [['generate', '--model', MODEL, '--prompt', 'x', '--threads', '0'], /--threads must be an integer ≥ 1/],
    [['generate', '--model', '/nonexistent', '--prompt', 'x'], /\/nonexistent: no config.json/],
    [['generate', '--model', MODEL, '--prompt-ids', '1,x'], /--prompt-ids: "x" is not a token id in 0..300/],
    [['generate', '--model', MODEL, '--prompt', 'x', '--device', 'tpu'], /--device must be one of auto, gpu, cpu/],
    [['generate', '--model', MODEL, '--prompt', 'x', '--sparsity', '0.5'], /--sparsity needs --pattern/],
    [['generate', '--model', MODEL, '--prompt', 'x', '--pattern', MODEL], /full_attention_heads.tsv: missing/],
    [['generate', '--model', MODEL, '--prompt', 'x', '--streaming-only'], /--streaming-only needs --sink and --recent/],
    [['generate', '--model', MODEL, '--prompt', 'x', '--max-tokens', '0'], /--max-tokens must be an integer ≥ 1/],
    [['generate', '--model', MODEL, '--prompt', 'x', '--weights', 'q5_1'], /--weights must be one of f32, f16, q8_0, q4_0, q4_k \(got "q5_1"\)/],
    [['train', '--out', '/tmp/duet-never', '--heads', '3'], /--heads 3: the head size hidden\/heads must be an even integer \(hidden 64\)/],
    [['train', '--out', '/tmp/duet-never', '--answer-weight', 'lots'], /--answer-weight must be a number \(got "lots"\)/],
    [['train', '--out', '/tmp/duet-never', '--until', '0'], /--until must be an integer ≥ 1/],
    [['train', '--out', '/tmp/duet-never', '--device', 'tpu'], /--device must be cpu, gpu or auto \(got "tpu"\)/],
    [['identify', '--model', MODEL, '--method', 'duo', '--out', '/tmp/duet-never', '--device', 'npu'], /--device must be cpu, gpu or auto \(got "npu"\)/],
    [['train', '--out', '/tmp/duet-never', '--max-len', '256'], /niah-multikey sequences need 340 tokens, more than the model's 256 rows \(--max-len\)/],
    [['frobnicate'], /unknown command "frobnicate"/],
  ];
  for (const [args, re] of cases) {
    const r = await duet(...args);
    assert.is.not(r.code, 0, args.join(' '));
    assert.match(r.stderr, re, args.join(' '));
  }
  const badPattern = mkdtempSync(join(tmpdir(), 'duet-pat-'));
  writeFileSync(join(badPattern, 'full_attention_heads.tsv'), '1\t0\n');
  writeFileSync(join(badPattern, 'config.json'), '{"sink_size": 4, "recent_size": 8}');
  const r = await duet('generate', '--model', MODEL, '--prompt', 'x', '--pattern', badPattern);
  assert.match(r.stderr, /full_attention_heads.tsv: has 1 lines \(layers\), the model has 4 layers/);
});

test('train --until stops at a step and --resume goes on to --steps (a tiny config)', async () => {
  const out = mkdtempSync(join(tmpdir(), 'duet-train-'));
  const args = ['train', '--out', out, '--steps', '4', '--layers', '1', '--hidden', '16', '--heads', '2', '--tokens-per-step', '300', '--max-len', '256', '--tasks', 'passkey', '--threads', '1'];
  const first = await duet(...args, '--until', '2');
  assert.is(first.code, 0, first.stderr);
  const state = () => JSON.parse(readFileSync(join(out, 'training', 'training_state.json'), 'utf8'));
  assert.equal([state().step, state().steps], [2, 4]);
  // The bundled recipe scaled to 4 steps raises RoPE θ from step 3 on; the saved config follows.
  const theta = () => JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).rope_theta;
  assert.is(theta(), 10000);
  const second = await duet(...args, '--resume');
  assert.is(second.code, 0, second.stderr);
  assert.match(second.stderr, /resumed at step 2/);
  assert.is(state().step, 4);
  assert.is(theta(), 500000);
});

test('memory: Mistral\'s sliding_window caps every head at W tokens, as the engine runs it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'duet-mem-'));
  const cfg = join(dir, 'config.json');
  writeFileSync(cfg, JSON.stringify({ model_type: 'mistral', hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, vocab_size: 32000, max_position_embeddings: 32768, sliding_window: 4096 }));
  const r = await duet('memory', '--config', cfg, '--full', '--context', '32768', '--json', '--kv-dtype', 'f16');
  assert.is(r.code, 0, r.stderr);
  const m = JSON.parse(r.stdout);
  // The sliding window makes every head a ring, stored in --kv-dtype's rows like the full caches.
  assert.is(m.duo_bytes, 32 * 8 * 4096 * 2 * 128 * 2);
  assert.is(m.full_bytes, 32 * 8 * 32768 * 2 * 128 * 2);
  assert.match(r.stderr, /sliding_window 4096: every head attends to its last 4096 keys/);
  for (const args of [['memory', '--config', cfg, '--context', '8'], ['generate', '--model', dir, '--prompt', 'x']]) {
    const bad = await duet(...args, '--kv-dtype', 'q4_0');
    assert.is(bad.code === 0, false);
    assert.match(bad.stderr, /--kv-dtype must be one of f32, f16, int8 \(got "q4_0"\)/, args[0]);
  }
});

const PUBLISHED = publishedPatterns();
if (PUBLISHED) test('memory projects full vs DuoAttention bytes with a published pattern', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'duet-mem-'));
  const cfg = join(dir, 'config.json');
  writeFileSync(cfg, JSON.stringify({ model_type: 'llama', hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, vocab_size: 128256, max_position_embeddings: 1048576 }));
  const pattern = join(PUBLISHED!, 'Llama-3-8B-Instruct-Gradient-1048k');
  const r = await duet('memory', '--config', cfg, '--pattern', pattern, '--sparsity', '0.5', '--context', '1048576', '--json', '--kv-dtype', 'f16');
  assert.is(r.code, 0, r.stderr);
  const m = JSON.parse(r.stdout);
  assert.is(m.full_bytes, 32 * 8 * 1048576 * 2 * 128 * 2);
  assert.is(m.gpu_bytes, m.full_bytes / 2);
  assert.is(m.cpu_bytes, 128 * 384 * 2 * 128 * 2, 'f16 rings');
  assert.is(m.duo_bytes, m.gpu_bytes + m.cpu_bytes);
  const table = await duet('memory', '--config', cfg, '--pattern', pattern, '--sparsity', '0.5', '--context', '1048576', '--kv-dtype', 'f16');
  assert.match(table.stdout, /full attention\s+128.00 GiB/);
});

test('memory --gpu-budget: the largest context within the budget, full attention against the heads given; bad sizes and flag mixes refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'duet-fit-'));
  const cfg = join(dir, 'config.json');
  writeFileSync(cfg, JSON.stringify({ model_type: 'llama', hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, vocab_size: 128256, max_position_embeddings: 1048576 }));
  const r = await duet('memory', '--config', cfg, '--streaming-only', '--sink', '4', '--recent', '60', '--gpu-budget', '16GiB', '--kv-dtype', 'f16', '--json');
  assert.is(r.code, 0, r.stderr);
  const m = JSON.parse(r.stdout);
  assert.equal(m.full, { tokens: 131072, gpu_bytes: 2 ** 34, cpu_bytes: 0, limit: 'GPU budget (16.00 GiB)' });
  assert.equal([m.configured.tokens, m.configured.gpu_bytes, m.configured.limit], [1048576, 0, 'max context (1048576)']);
  assert.is(m.gpu_budget_bytes, 2 ** 34);
  const text = await duet('memory', '--config', cfg, '--gpu-budget', '512MiB', '--max-context', '4096');
  assert.is(text.code, 0, text.stderr);
  assert.match(text.stdout, /full attention: 2048 tokens \(GPU 512.00 MiB, CPU 0 B\); stopped by GPU budget \(512.00 MiB\)/);
  for (const [args, why] of [[['--gpu-budget', '16GB'], /--gpu-budget: expected a size such as 16GiB/], [['--gpu-budget', '1GiB', '--context', '8'], /--gpu-budget searches the context itself; drop --context/],
    [['--max-context', '8', '--context', '8'], /--max-context goes with --gpu-budget/]] as const) {
    const bad = await duet('memory', '--config', cfg, ...args);
    assert.is(bad.code === 0, false, `${args.join(' ')}: ${bad.stderr}`);
    assert.match(bad.stderr, why);
  }
});

test('generate --passkey on the bundled model: a passkey prompt, the recall verdict and the KV saving', async () => {
  const bundled = new URL('../fixtures/duet-passkey', import.meta.url).pathname;
  const r = await duet('generate', '--model', bundled, '--pattern', `${bundled}-pattern`, '--sparsity', '0.5', '--passkey', '512',
    '--depth', '0.5', '--device', 'cpu', '--threads', '2', '--max-tokens', '8', '--json');
  assert.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.match(out.passkey.expected, /^\d{5}$/);
  assert.is(out.passkey.recalled, out.text.includes(out.passkey.expected));
  assert.is(out.kv_bytes.gpu, 0);
  assert.ok(out.kv_bytes.streaming > 0 && out.kv_bytes.retrieval + out.kv_bytes.streaming < out.kv_bytes.full_attention, JSON.stringify(out.kv_bytes));
  assert.match(out.adapter, /2 threads/);
});

test.run();
