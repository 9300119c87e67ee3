// Smoke test of `duet bench --device gpu`: the GPU paths of every suite (the GPU's roofline probes,
// the WGSL kernel rows, the split and gpu placements end to end, KV bytes per device) on whatever
// WebGPU adapter exists, a software GPU in CI. Nothing here checks a speed.
// Without an adapter the test is skipped, except in CI where a missing GPU is a failure.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createNodeGpu } from '../src/node/gpu.ts';
import { finitePositive, runBenchCli } from './helpers/bench.ts';
import { gpuTests } from './helpers/gpu-skip.ts';

const probe = await createNodeGpu();
probe.gpu?.destroy();

gpuTests(test, probe.gpu !== null, probe.reason)('a tiny bench run on the GPU covers the WGSL kernels and every placement', async () => {
  const { code, stdout, results: r } = await runBenchCli(['--shape', 'tiny', '--contexts', '64,256', '--sparsities', '0.5', '--prefill-chunk', '64',
    '--prefill-max', '64', '--sink', '4', '--recent', '16', '--decode-tokens', '2', '--warmup-tokens', '1', '--threads', '1', '--device', 'gpu']);
  assert.is(code, 0);
  assert.match(stdout, /Roofline \(WebGPU, /);

  assert.type(r.machine.gpu, 'string');
  if (r.machine.gpu_software) assert.match(r.machine.gpu_note, /software GPU/);
  assert.equal(r.settings.placements, ['split', 'gpu', 'cpu']);

  // The GPU's own roofline, and every WGSL kernel row measured against it.
  finitePositive(r.gpu_probes?.bandwidth_gbps, 'GPU bandwidth probe');
  finitePositive(r.gpu_probes?.peak_gflops, 'GPU peak probe');
  finitePositive(r.gpu_probes?.bandwidth_buffer_bytes, 'GPU probe buffer');
  const gpuRows = r.kernels.filter((k) => k.backend === 'webgpu');
  for (const kernel of ['gemv', 'gemm', 'attention-decode', 'attention-prefill', 'streaming-decode', 'streaming-prefill']) {
    assert.ok(gpuRows.some((k) => k.kernel === kernel), `webgpu kernel row ${kernel}`);
  }
  for (const k of gpuRows) {
    for (const f of ['ms', 'gflops', 'gbps', 'pct_of_peak', 'pct_of_bandwidth', 'pct_of_roofline'] as const) finitePositive(k[f], `webgpu ${k.kernel} ${k.shape} ${f}`);
  }

  // Full attention on each main device; DuoAttention on all three placements; both contexts.
  const labels = r.e2e.map((e) => `${e.label}@${e.context}`).sort();
  assert.equal(labels, ['duo@0.5/cpu@256', 'duo@0.5/cpu@64', 'duo@0.5/gpu@256', 'duo@0.5/gpu@64', 'duo@0.5/split@256', 'duo@0.5/split@64',
    'full/cpu@256', 'full/cpu@64', 'full/gpu@256', 'full/gpu@64']);
  for (const e of r.e2e) {
    assert.is(e.error, undefined, `${e.label}@${e.context}: ${e.error}`);
    for (const f of ['prefill_ms', 'decode_ms_per_token', 'decode_speedup', 'ideal_decode_speedup'] as const) finitePositive(e[f], `${e.label}@${e.context} ${f}`);
    assert.is(e.main_device, e.placement === 'cpu' ? 'cpu' : 'gpu');
    const kv = e.kv!;
    if (e.placement === 'split') { finitePositive(kv.gpu, `${e.label} kv gpu`); finitePositive(kv.cpu, `${e.label} kv cpu`); }
    if (e.placement === 'gpu') { finitePositive(kv.gpu, `${e.label} kv gpu`); assert.is(kv.cpu, 0); }
    if (e.placement === 'cpu') { assert.is(kv.gpu, 0); finitePositive(kv.cpu, `${e.label} kv cpu`); }
  }
  // Counted costs per decode step: the gpu placement syncs once and reads back the token only.
  for (const e of r.e2e) {
    if (e.placement === 'cpu') { assert.is(e.counters, null); continue; }
    const c = e.counters!;
    assert.is(c.dispatches_per_token > 0, true);
    if (e.placement === 'gpu') assert.equal([c.submits_per_token, c.host_waits_per_token, c.readback_bytes_per_token], [1, 1, 8], e.label);
    if (e.placement === 'split') assert.ok(c.host_waits_per_token > 1, `${e.label}: a wait per layer with streaming heads`);
  }
  // The split keeps the streaming rings, and only those, on the CPU.
  const split = r.e2e.find((e) => e.label === 'duo@0.5/split' && e.context === 256)!;
  assert.is(split.kv!.cpu, split.kv!.streaming);
  assert.is(split.kv!.gpu, split.kv!.retrieval);

  assert.is(r.memory.length, 10);
  for (const m of r.memory) {
    assert.is(m.error, undefined);
    assert.ok(m.matches, `${m.label}@${m.context}: runtime ${JSON.stringify(m.measured)} vs projection ${JSON.stringify(m.projected)}`);
  }
  assert.equal(r.crossovers.map((c) => c.label), ['duo@0.5/split', 'duo@0.5/gpu', 'duo@0.5/cpu']);
  // Placement 'auto' is reported against the measured split and gpu rows, at each context.
  assert.is(r.auto_placement?.length, 1);
  const auto = r.auto_placement![0];
  assert.is(auto.sparsity, 0.5);
  assert.ok(auto.choice === 'gpu' || auto.choice === 'split');
  assert.equal(auto.measured.map((x) => x.context), [64, 256]);
  for (const x of auto.measured) {
    const at = (p: string) => r.e2e.find((e) => e.label === `duo@0.5/${p}` && e.context === x.context)!.decode_ms_per_token;
    assert.equal([x.split_decode_ms, x.gpu_decode_ms], [at('split'), at('gpu')]);
    assert.is(x.chosen_was_faster, x.faster === auto.choice);
  }
  assert.match(stdout, /Placement 'auto' against the measured split and gpu decode/);
});

test.run();
