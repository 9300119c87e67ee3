// placement 'auto': the rule (split only when the CPU's streaming attention plus one host round trip
// per streaming layer costs less than the GPU doing those heads), and the calibration + engine on the
// software GPU, where whichever placement it picks must generate what the CPU does.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { choosePlacement } from '../src/engine/auto-placement.ts';
import { Engine } from '../src/engine/engine.ts';
import { sharedGpu, tempCheckpoint } from './helpers/engine.ts';
import { gpuTests } from './helpers/gpu-skip.ts';

const GPU = await sharedGpu();
const gpuTest = gpuTests(test, GPU.gpu !== null, GPU.reason);

test('choosePlacement: split only when it costs less per token; no streaming heads means gpu', () => {
  const base = { streamingLayers: 16, streamingHeads: 4, roundTripMs: 0.07, cpuStreamingMs: 0.1, gpuStreamingMs: 0.02 };
  const drainBound = choosePlacement(base);
  assert.is(drainBound.placement, 'gpu');
  assert.ok(Math.abs(drainBound.splitMsPerToken - 16 * 0.17) < 1e-12 && Math.abs(drainBound.gpuMsPerToken - 16 * 0.02) < 1e-12);
  assert.is(drainBound.reason, '16 layers with streaming heads: split costs 16 × (0.070 ms round trip + 0.100 ms WASM streaming attention) = 2.720 ms per token, the GPU 16 × 0.020 ms = 0.320 ms');
  // A slow GPU (or a busy one) with a fast host link: the CPU takes the streaming heads.
  assert.is(choosePlacement({ ...base, roundTripMs: 0.01, gpuStreamingMs: 0.5 }).placement, 'split');
  // Equal costs stay on the GPU (one device, no host hop).
  assert.is(choosePlacement({ ...base, roundTripMs: 0, cpuStreamingMs: 0.02 }).placement, 'gpu');
  const none = choosePlacement({ ...base, streamingLayers: 0, streamingHeads: 0 });
  assert.equal([none.placement, none.reason], ['gpu', 'no streaming heads: nothing to split']);
});

gpuTest("placement 'auto' calibrates on the model's shapes, says why, and its choice generates the CPU's tokens", async () => {
  const ckpt = await tempCheckpoint({ layers: 3, heads: 6, kvHeads: 2, hidden: 48, intermediate: 64, vocab: 199, seed: 9 });
  // Layer 0 full attention; layer 1 one streaming head of two; layer 2 both streaming.
  const kinds = [[true, true], [true, false], [false, false]];
  const window = { sink: 2, recent: 6 };
  const prompt = Array.from({ length: 23 }, (_, i) => (i * 37 + 3) % 199);
  const notices: string[] = [];
  const auto = await Engine.create(ckpt.config, ckpt.weights, { device: 'gpu', placement: 'auto', kinds, window, acquireGpu: sharedGpu, notice: (m) => notices.push(m) });
  const cpu = await Engine.create(ckpt.config, ckpt.weights, { device: 'cpu', kinds, window });
  try {
    const a = auto.autoPlacement!;
    assert.ok(a, 'the decision is kept');
    assert.equal([a.calibration.streamingLayers, a.calibration.streamingHeads], [2, 2]);
    for (const f of ['roundTripMs', 'cpuStreamingMs', 'gpuStreamingMs'] as const) {
      assert.ok(Number.isFinite(a.calibration[f]) && a.calibration[f] > 0, `${f} ${a.calibration[f]}`);
    }
    assert.is(auto.placement, a.placement);
    assert.is(a.placement, choosePlacement(a.calibration).placement);
    assert.ok(notices.includes(`placement auto: ${a.placement} (${a.reason})`), notices.join('\n'));
    const [got, want] = [await auto.generate(prompt, { maxTokens: 6 }), await cpu.generate(prompt, { maxTokens: 6 })];
    assert.equal(got.tokens, want.tokens);
  } finally {
    auto.dispose();
    cpu.dispose();
  }
  // Full attention: nothing to calibrate, gpu.
  const full = await Engine.create(ckpt.config, ckpt.weights, { device: 'gpu', placement: 'auto', acquireGpu: sharedGpu });
  try {
    assert.equal([full.placement, full.autoPlacement?.reason], ['gpu', 'no streaming heads: nothing to split']);
  } finally {
    full.dispose();
  }
});

test("placement 'auto' without a GPU runs on the CPU", async () => {
  const ckpt = await tempCheckpoint({ seed: 4 });
  const notices: string[] = [];
  const engine = await Engine.create(ckpt.config, ckpt.weights, { placement: 'auto', acquireGpu: async () => ({ gpu: null, reason: 'none here' }), notice: (m) => notices.push(m) });
  try {
    assert.equal([engine.placement, engine.autoPlacement], ['cpu', null]);
    assert.equal(notices, ['no WebGPU adapter (none here); running on the CPU']);
  } finally {
    engine.dispose();
  }
});

test.run();
