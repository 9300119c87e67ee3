// `duet dha --device gpu`: each step's gradients come from the GPU (GpuGradients) while the fusion,
// optimizer, validation and head similarity stay on the host.
// - GpuGradients vs the CPU model's gradients for the same parameters and sequences: within
//   2e-4·(1 + |g|) per parameter, loss within 1e-5 relative (float rounding only);
// - a whole DHA conversion (3 fusion + 3 training steps) on the GPU vs on the CPU: the same layout,
//   the same source loss, every training loss within 1e-3 relative, the weights within 1e-2;
// - --device gpu with --threads is refused.
// On SwiftShader (and llvmpipe): skipped without an adapter, a failure in CI.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dhaCommand } from '../src/cli/dha.ts';
import type { ConvertOptions } from '../src/dha/convert.ts';
import { conversionPlan } from '../src/dha/convert.ts';
import { saveModel } from '../src/node/checkpoint-io.ts';
import { convertToDha } from '../src/node/dha.ts';
import { Arena } from '../src/train/arena.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { matrixF32 } from '../src/model/weights.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { GpuGradients } from '../src/train/gpu-gradients.ts';
import { TrainModel, cpuTrainModel, type TrainConfig } from '../src/train/model.ts';
import { stepSequences } from '../src/train/trainer.ts';
import { VOCAB_SIZE } from '../src/train/vocab.ts';
import { sharedGpu } from './helpers/engine.ts';
import { gpuTests } from './helpers/gpu-skip.ts';

const gpu = await sharedGpu();
const gt = gpuTests(test, gpu.gpu !== null, gpu.reason);

const c: TrainConfig = { vocab: VOCAB_SIZE, hidden: 16, layers: 2, heads: 4, kvHeads: 4, headDim: 4, intermediate: 24, eps: 1e-5, ropeTheta: 10000, maxRows: 160 };
const base: ConvertOptions = { method: 'dha', budget: 0.375, tokens: 1800, tokensPerStep: 300, maxLength: 160, tasks: ['passkey'], similaritySequences: 2, validationSequences: 2, seed: 3 };
const dir = mkdtempSync(join(tmpdir(), 'duet-dha-gpu-'));

async function cpuModel(seed: number) {
  const m = cpuTrainModel(await Arena.create((k) => TrainModel.arenaBytes(c, k)), c);
  m.initialise(seed);
  return m;
}

const src = join(dir, 'src');
saveModel(src, c, Float32Array.from((await cpuModel(8)).params), 4096, {});

gt('GpuGradients: the step\'s gradients and loss of given parameters equal the CPU model\'s within float rounding', async () => {
  const plan = conversionPlan(c, 4096, base);
  const cpu = await cpuModel(5);
  const g = GpuGradients.create(plan, gpu.gpu!);
  for (const step of [0, 3]) {
    const seqs = stepSequences(plan, step), all = seqs.map((_, i) => i);
    cpu.grads.fill(0);
    cpu.loss[0] = 0;
    for (const s of seqs) cpu.step(s.ids, s.positions, s.targets, s.weights);
    const r = await g.gradients(cpu.params, step, all);
    assert.ok(Math.abs(r.loss - cpu.loss[0]) <= 1e-5 * Math.abs(cpu.loss[0]), `step ${step}: loss ${r.loss} vs ${cpu.loss[0]}`);
    let worst = 0, nonzero = 0;
    for (let i = 0; i < r.grads.length; i++) {
      worst = Math.max(worst, Math.abs(r.grads[i] - cpu.grads[i]) / (1 + Math.abs(cpu.grads[i])));
      if (cpu.grads[i] !== 0) nonzero++;
    }
    assert.ok(worst <= 2e-4, `step ${step}: gradients within 2e-4·(1 + |g|), worst ${worst}`);
    assert.ok(nonzero > r.grads.length / 2, `step ${step}: most gradients are nonzero (${nonzero} of ${r.grads.length})`);
  }
  let refused = '';
  await g.gradients(new Float32Array(3), 0, [0]).catch((e: Error) => { refused = e.message; });
  assert.match(refused, /3 parameters given, the plan's model has \d+/);
});

gt('a DHA conversion with --device gpu follows the CPU run within float rounding; --threads with it is refused', async () => {
  const onCpu = await convertToDha({ ...base, model: src, out: join(dir, 'cpu'), threads: 1 });
  let device = '';
  const onGpu = await convertToDha({ ...base, model: src, out: join(dir, 'gpu'), device: 'gpu', onStart: (s) => { device = `${s.device} ${s.threads}`; } });
  assert.is(device, 'gpu 1');
  assert.equal(onGpu.report.layout, onCpu.report.layout);
  assert.is(onGpu.report.losses.original, onCpu.report.losses.original, 'the source loss is the CPU validation either way');
  assert.is(onGpu.report.history.length, 6);
  onGpu.report.history.forEach((h, i) => {
    const want = onCpu.report.history[i].loss;
    assert.ok(Math.abs(h.loss - want) <= 1e-3 * Math.abs(want), `${h.stage} step ${h.step}: loss ${h.loss} vs ${want}`);
  });
  // Every tensor of both checkpoints, as loaded (DHA layers' k/v projections have their kept heads' rows).
  const tensors = async (out: string) => {
    const w = (await loadCheckpoint(nodeModelFiles(out))).weights;
    return [matrixF32(w.embed), matrixF32(w.lmHead), w.finalNorm, ...w.layers.flatMap((l) =>
      [l.inputNorm, l.postNorm, ...[l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown].map(matrixF32)])];
  };
  const a = await tensors(join(dir, 'gpu')), b = await tensors(join(dir, 'cpu'));
  let worst = 0, moved = 0;
  a.forEach((t, i) => {
    assert.is(t.length, b[i].length);
    for (let j = 0; j < t.length; j++) { worst = Math.max(worst, Math.abs(t[j] - b[i][j])); if (t[j] !== b[i][j]) moved++; }
  });
  assert.ok(worst <= 1e-2, `weights within 1e-2 (worst ${worst})`);
  assert.ok(moved > 0, 'the two runs are two computations (some weights differ in the last bits)');
  let message = '';
  await dhaCommand(['--model', src, '--budget', '0.5', '--out', join(dir, 'x'), '--device', 'gpu', '--threads', '2']).catch((e: Error) => { message = e.message; });
  assert.match(message, /--threads sets the CPU replicas; with --device gpu the GPU computes each step/);
});

test.run();
