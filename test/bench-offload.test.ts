// `duet bench --suite offload` (--offload [K,L]): a tiny run on the CPU (2 threads) writes
// offload.json and offload-decode.svg with a row per context and arm (full, offloaded by scan,
// offloaded by tables) whose decode time is the projections' plus its attention, byte counts that
// follow from the shape exactly, and sampled fractions
// strictly between 0 and 1; the same run with --device gpu (the full cache, the static rings and the
// hashing on the GPU: SwiftShader in CI, skipped without an adapter elsewhere) gives the same rows and
// counts and records the adapter; --device gpu without an adapter is an error before any work;
// misplaced flags and foreign folders are refused. No speed is checked.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchCommand } from '../src/cli/bench.ts';
import type { OffloadArmRow } from '../src/bench/offload.ts';
import type { MachineInfo } from '../src/bench/types.ts';
import { createNodeGpu } from '../src/node/gpu.ts';
import { gpuTests } from './helpers/gpu-skip.ts';

const probe = await createNodeGpu();
probe.gpu?.destroy();

async function quiet<T>(fn: () => Promise<T>): Promise<{ value: T; out: string }> {
  let out = '';
  const write = process.stdout.write.bind(process.stdout), err = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((s: string) => { out += s; return true; }) as typeof process.stdout.write;
  process.stderr.write = (() => true) as typeof process.stderr.write;
  try { return { value: await fn(), out }; } finally { process.stdout.write = write; process.stderr.write = err; }
}

interface Printed {
  machine: MachineInfo;
  rows: OffloadArmRow[];
  settings: { contexts: number[]; device: string; offload: string; weights: string; projections_device: string; projections_ms_per_token: number };
}

/** The tiny run on `device`: its printed JSON, checked against offload.json and the shape's exact counts. */
async function tinyRun(device: 'cpu' | 'gpu'): Promise<Printed> {
  const dir = mkdtempSync(join(tmpdir(), 'duet-bench-offload-'));
  const { value: code, out } = await quiet(() => benchCommand(['--offload', '4,12', '--shape', 'tiny', '--contexts', '300,200', '--decode-tokens', '3',
    '--warmup-tokens', '1', '--threads', '2', '--weights', 'q4_0', ...(device === 'gpu' ? ['--device', 'gpu'] : []), '--out', dir, '--json']));
  assert.is(code, 0);
  const printed = JSON.parse(out) as Printed;
  const saved = JSON.parse(readFileSync(join(dir, 'offload.json'), 'utf8')) as Printed;
  assert.equal(saved.rows.map((r) => [r.arm, r.context]), printed.rows.map((r) => [r.arm, r.context]));
  assert.equal(saved.settings, printed.settings);
  assert.equal(saved.machine, printed.machine);
  assert.is(printed.settings.device, device);
  assert.is(printed.settings.projections_device, device);
  assert.equal(printed.settings.contexts, [200, 300]);
  assert.match(printed.settings.offload, /MagicPIG K 4 × L 12, 4 sinks \+ 64 local/);
  assert.is(printed.settings.weights, 'q4_0');
  assert.ok(printed.settings.projections_ms_per_token > 0);
  assert.equal(printed.rows.map((r) => `${r.arm}@${r.context}`),
    ['full@200', 'offloaded, scan@200', 'offloaded, tables@200', 'full@300', 'offloaded, scan@300', 'offloaded, tables@300']);
  // tiny: 2 layers, 2 KV heads of 16 dims, group 2.
  const H = 2, D = 16, layers = 2, L = 12, K = 4;
  for (const n of [200, 300]) {
    const [full, scan, tables] = printed.rows.filter((r) => r.context === n);
    const capacity = n + 1 + 3 + 1, off = capacity - 4 - 64;
    assert.is(full.bytes_per_token, layers * 2 * H * (n + 1) * D * 4, 'full attention reads every K and V');
    assert.is(full.cache_bytes_per_layer, 2 * H * capacity * D * 4);
    assert.is(full.speedup, 1);
    assert.is(full.sampled_fraction, null);
    assert.is(tables.cache_bytes_per_layer - scan.cache_bytes_per_layer, 4 * H * L * off + 4 * H * L * ((1 << K) + 1));
    for (const r of [scan, tables]) {
      assert.ok(r.sampled_fraction! > 0 && r.sampled_fraction! < 1, `${r.arm}@${n}: sampled ${r.sampled_fraction}`);
      assert.ok(r.first_step_ms! > 0 && r.ms_per_layer > 0 && r.decode_ms_samples.length === 3);
      assert.is(r.attention_ms_per_token, r.ms_per_layer * layers);
      assert.is(r.decode_ms_per_token, printed.settings.projections_ms_per_token + r.attention_ms_per_token);
    }
    assert.is(scan.sampled_fraction, tables.sampled_fraction, 'tables sample the keys the scan samples');
  }
  assert.match(readFileSync(join(dir, 'offload-decode.svg'), 'utf8'), new RegExp(`^<svg[\\s\\S]*full attention \\(cache on the ${device.toUpperCase()}\\)[\\s\\S]*offloaded, tables[\\s\\S]*</svg>\\s*$`));
  return printed;
}

test('a tiny offload run: 3 arms per context, exact byte counts, sampled fractions in (0, 1), JSON + SVG', async () => {
  const r = await tinyRun('cpu');
  assert.is(r.machine.gpu, null);
  assert.match(r.machine.gpu_note, /not used/);
});

gpuTests(test, probe.gpu !== null, probe.reason)('the tiny offload run with --device gpu: the same rows and counts, the adapter recorded', async () => {
  const r = await tinyRun('gpu'), cpu = await tinyRun('cpu');
  assert.type(r.machine.gpu, 'string');
  if (r.machine.gpu_software) assert.match(r.machine.gpu_note, /software GPU/);
  // The caches hold the same bytes wherever their device part lives.
  assert.equal(r.rows.map((x) => [x.arm, x.context, x.cache_bytes_per_layer]), cpu.rows.map((x) => [x.arm, x.context, x.cache_bytes_per_layer]));
});

test('--device gpu without a WebGPU adapter is an error before any work, not a CPU run', async () => {
  const out = join(mkdtempSync(join(tmpdir(), 'duet-bench-offload-')), 'results');
  const saved = process.env.DUET_GPU_BACKEND;
  process.env.DUET_GPU_BACKEND = 'no-such-backend';
  let message: string | null = null;
  try { await quiet(() => benchCommand(['--offload', '--device', 'gpu', '--shape', 'tiny', '--contexts', '200', '--out', out])); } catch (e) { message = (e as Error).message; } finally {
    if (saved === undefined) delete process.env.DUET_GPU_BACKEND; else process.env.DUET_GPU_BACKEND = saved;
  }
  assert.match(message ?? 'no error', /gpu.*no WebGPU adapter/);
  assert.not.ok(existsSync(out), 'nothing written');
});

test('offload suite: flags of other suites, a GPU device and a foreign folder are refused', async () => {
  const foreign = mkdtempSync(join(tmpdir(), 'duet-bench-offload-'));
  writeFileSync(join(foreign, 'notes.txt'), 'mine');
  const cases: Array<[string[], RegExp]> = [
    [['--suite', 'offload', '--model', 'x'], /--model does not apply to --suite offload/],
    [['--offload', '--device', 'auto'], /--suite offload takes --device cpu \(the default\) or gpu \(got "auto"\)/],
    [['--suite', 'e2e', '--offload'], /--offload goes with --suite offload/],
    [['--offload', '4', '--shape', 'tiny'], /--offload takes K,L/],
    [['--offload', '--shape', 'tiny', '--contexts', '200', '--out', foreign], /holds files that are not offload benchmark results \(notes\.txt\)/],
  ];
  for (const [args, re] of cases) {
    let message: string | null = null;
    try { await quiet(() => benchCommand(args)); } catch (e) { message = (e as Error).message; }
    if (message === null) assert.unreachable(`${args.join(' ')} should fail`);
    assert.match(message!, re, args.join(' '));
  }
  assert.is(readFileSync(join(foreign, 'notes.txt'), 'utf8'), 'mine');
});

test.run();
