// Training and identification on the GPU (wgsl/train_*.wgsl through GpuTrainKernels) against the
// CPU kernels, whose backward passes have finite-difference tests (train-grad.test.ts): every op on
// odd shapes (GQA, a streaming window, PoSE position jumps, repeated token ids), the whole model's
// loss and gradients, the gates' gradient, a few AdamW steps of the trainer, and the gate
// optimisation. Tolerances are relative, 1e-4 for single ops (f32 sums in another order), looser
// where errors compound through layers and optimizer steps.
// Without an adapter the suite is skipped, except in CI where a missing GPU is a failure.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createNodeGpu } from '../src/node/gpu.ts';
import { gpuTests } from './helpers/gpu-skip.ts';
import type { GpuContext } from '../src/gpu/context.ts';
import { GpuTrainKernels } from '../src/gpu/train-kernels.ts';
import { Arena } from '../src/train/arena.ts';
import { CpuTrainKernels, type TrainKernels } from '../src/train/kernels.ts';
import { TrainModel, cpuTrainModel, parameterCount, type TrainConfig } from '../src/train/model.ts';
import { Trainer, type TrainPlan } from '../src/train/trainer.ts';
import { GpuTrainer } from '../src/train/gpu-trainer.ts';
import { VOCAB_SIZE } from '../src/train/vocab.ts';
import { Random } from '../src/tasks/random.ts';
import { assertClose } from './helpers/conformance.ts';
import { writeCheckpoint } from './helpers/checkpoint.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { loadPattern } from '../src/attention/pattern.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { frozenGpuModel, frozenModel } from '../src/identify/frozen.ts';
import { razorScores } from '../src/identify/scores.ts';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ensureFreshDist } from './helpers/fresh-dist.ts';
import { matrixF32 } from '../src/model/weights.ts';

ensureFreshDist();

const duet = (...args: string[]) => promisify(execFile)('node', ['bin/duet.mjs', ...args], { encoding: 'utf8' });

const { gpu, reason } = await createNodeGpu();

if (!gpu) {
  const skipped = suite('gpu training');
  gpuTests(skipped, false, reason)('the WGSL training kernels against the CPU kernels, and a GPU training run', () => {});
  skipped.run();
} else {
  gpuSuite(gpu);
}

function gpuSuite(ctx: GpuContext): void {
  const test = suite(`gpu training (${ctx.adapterDescription})`);
  process.on('exit', () => ctx.destroy());
  const rnd = new Random(11);
  const filled = (n: number, scale = 1) => Float32Array.from({ length: n }, () => (rnd.next() * 2 - 1) * scale);

  /**
   * Runs `body` on both devices with the same inputs (uploaded) and zeroed outputs, and compares
   * every tensor afterwards (inputs too: some ops work in place or accumulate).
   */
  async function onBoth(what: string, inputs: Record<string, Float32Array>, outputs: Record<string, number>,
    body: <T>(k: TrainKernels<T>, t: Record<string, T>) => void, tol = 1e-4): Promise<void> {
    const cpu = new CpuTrainKernels(await Arena.create(32 << 20), 80, 64, 8);
    const gpuK = new GpuTrainKernels(ctx);
    const results = [];
    for (const k of [cpu, gpuK] as Array<TrainKernels<unknown>>) {
      const t: Record<string, unknown> = {};
      const sizes: Record<string, number> = {};
      for (const [name, data] of Object.entries(inputs)) { t[name] = k.alloc(data.length); k.write(t[name], data); sizes[name] = data.length; }
      for (const [name, n] of Object.entries(outputs)) { t[name] = k.alloc(n); sizes[name] = n; }
      body(k, t);
      const out: Record<string, Float32Array> = {};
      for (const name of Object.keys(sizes)) out[name] = await k.read(t[name], sizes[name]);
      results.push(out);
    }
    const [onCpu, onGpu] = results;
    for (const name of Object.keys(onCpu)) assertClose(onGpu[name], onCpu[name], `${what}: ${name}`, tol);
    assert.equal(ctx.errors, [], 'no WebGPU errors');
  }

  test('linear forward and backward (odd sizes, dx and dW accumulate)', async () => {
    const rows = 23, inD = 37, outD = 19;
    await onBoth('linear', { x: filled(rows * inD), w: filled(outD * inD), dy: filled(rows * outD), dx: filled(rows * inD), dw: filled(outD * inD) }, { y: rows * outD },
      (k, t) => { k.linearForward(t.y, t.x, t.w, rows, inD, outD); k.linearBackward(t.dx, t.dw, t.dy, t.x, t.w, rows, inD, outD); });
  });

  test('rmsnorm forward and backward (dx accumulates, dg)', async () => {
    const rows = 13, d = 70;
    await onBoth('rmsnorm', { x: filled(rows * d, 2), g: filled(d), dy: filled(rows * d), dx: filled(rows * d), dg: filled(d) }, { y: rows * d, rinv: rows },
      (k, t) => { k.rmsnormForward(t.y, t.rinv, t.x, t.g, rows, d, 1e-5); k.rmsnormBackward(t.dx, t.dg, t.dy, t.x, t.rinv, t.g, rows, d); });
  });

  test('embedding gather and scatter with repeated ids; rope and its inverse at PoSE positions', async () => {
    const ids = Int32Array.from([3, 1, 3, 0, 7, 3, 1]), vocab = 9, d = 10, heads = 3, hd = 8;
    const positions = Int32Array.from([0, 1, 2, 900, 901, 902, 4000]);
    const invFreq = Float32Array.from({ length: hd / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / hd));
    await onBoth('embed+rope', { embed: filled(vocab * d), dEmbed: filled(vocab * d), dx: filled(ids.length * d), q: filled(ids.length * heads * hd), dq: filled(ids.length * heads * hd) },
      { x: ids.length * d },
      (k, t) => {
        k.setSequence(ids, positions, invFreq);
        k.embedGather(t.x, t.embed, d);
        k.embedScatterAdd(t.dEmbed, t.dx, d);
        k.rope(t.q, ids.length, heads, hd, false);
        k.rope(t.dq, ids.length, heads, hd, true);
      });
  });

  for (const [name, dims, window] of [
    ['causal GQA attention (71 rows, 4 heads on 2 KV heads, hd 6)', { rows: 71, heads: 4, kvHeads: 2, hd: 6, scale: 1 / Math.sqrt(6) }, undefined],
    ['streaming-window attention (sink 3, recent 9; 6 heads on 2 KV heads)', { rows: 70, heads: 6, kvHeads: 2, hd: 8, scale: 1 / Math.sqrt(8) }, { sink: 3, recent: 9 }],
  ] as const) {
    test(`${name}: forward (o, probabilities) and backward (dq, dk, dv accumulate)`, async () => {
      const { rows, heads, kvHeads, hd } = dims;
      const qd = rows * heads * hd, kvd = rows * kvHeads * hd;
      await onBoth('attention', { q: filled(qd), k: filled(kvd), v: filled(kvd), dO: filled(qd), dq: filled(qd), dk: filled(kvd), dv: filled(kvd) },
        { o: qd, probs: heads * rows * rows },
        (k, t) => {
          k.attentionForward(t.o, t.probs, t.q, t.k, t.v, dims, window);
          k.attentionBackward(t.dq, t.dk, t.dv, t.dO, t.probs, t.q, t.k, t.v, dims);
        });
    });
  }

  test('swiglu, gates (mix, split, ∂/∂α), cross-entropy with zero-weight rows, MSE on chosen rows', async () => {
    const n = 301, dims = { rows: 11, heads: 4, kvHeads: 2, hd: 6, scale: 1 };
    const qd = dims.rows * dims.heads * dims.hd;
    const alphas = Float32Array.from([0.2, 0.9]);
    const rows = 5, V = 67;
    const targets = Int32Array.from([1, 66, 0, 2, 30]), weights = Float32Array.from([0.5, 0, 1, 0.25, 0.1]);
    const rowWeights = Float32Array.from([0, 0.3, 0, 1, 0.5]);
    await onBoth('elementwise', {
      gate: filled(n, 3), up: filled(n), dh: filled(n), full: filled(qd), stream: filled(qd), dO: filled(qd), gateGrads: filled(2),
      logits: filled(rows * V, 4), h: filled(rows * 9), ref: filled(rows * 9), loss: Float32Array.from([0.25]),
    }, { hOut: n, dgate: n, dup: n, o: qd, dFull: qd, dStream: qd, dlogits: rows * V, dhid: rows * 9 },
    (k, t) => {
      k.swigluForward(t.hOut, t.gate, t.up, n);
      k.swigluBackward(t.dgate, t.dup, t.dh, t.gate, t.up, n);
      k.gateMix(t.o, t.full, t.stream, alphas, dims);
      k.gateBackward(t.dFull, t.dStream, t.dO, t.full, t.stream, alphas, dims, t.gateGrads);
      k.crossEntropy(t.dlogits, t.logits, targets, weights, rows, V, t.loss);
      k.mse(t.dhid, t.h, t.ref, rowWeights, 9, t.loss);
    });
  });

  const modelConfig: TrainConfig = { vocab: 13, hidden: 12, layers: 2, heads: 4, kvHeads: 2, headDim: 6, intermediate: 20, eps: 1e-5, ropeTheta: 10000, maxRows: 24 };

  /** The same randomised parameters on both devices. */
  async function twinModels(gated: boolean): Promise<[TrainModel<Float32Array>, TrainModel<unknown>]> {
    const cpu = cpuTrainModel(await Arena.create((k) => TrainModel.arenaBytes(modelConfig, k, { gated })), modelConfig, { gated });
    cpu.initialise(5);
    for (const t of cpu.named) for (let i = 0; i < t.data.length; i++) t.data[i] += (rnd.next() * 2 - 1) * (t.shape.length === 1 ? 0.3 : 0.4);
    const onGpu = new TrainModel(new GpuTrainKernels(ctx), modelConfig, { gated }) as TrainModel<unknown>;
    onGpu.k.write(onGpu.params, cpu.params);
    return [cpu, onGpu];
  }

  test('the whole model: a training step gives the CPU loss and every parameter gradient (PoSE jump, weighted rows)', async () => {
    const [cpu, onGpu] = await twinModels(false);
    const ids = Int32Array.from([0, 5, 3, 12, 7, 7, 1, 2, 9, 4, 4, 11, 6]);
    const positions = Int32Array.from([0, 1, 2, 3, 40, 41, 42, 43, 44, 45, 46, 47, 48]);
    const targets = Int32Array.from([5, 3, 12, 7, 7, 1, 2, 9, 4, 4, 11, 6, 0]);
    const weights = Float32Array.from([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.3, 0.3, 0, 0.2, 0.2, 0.5, 0.5]);
    cpu.step(ids, positions, targets, weights);
    onGpu.step(ids, positions, targets, weights);
    const n = parameterCount(modelConfig);
    assertClose(await onGpu.k.read(onGpu.loss, 1), cpu.loss.slice(0, 1), 'loss', 1e-5);
    const grads = await onGpu.k.read(onGpu.grads, n);
    cpu.gradNamed.forEach((t) => assertClose(grads.subarray(t.offset, t.offset + t.data.length), t.data, `∂loss/∂${t.name}`, 1e-3));
    assert.equal(ctx.errors, [], 'no WebGPU errors');
  });

  test('gated forward and frozen backward: the same hidden states and ∂/∂α as the CPU; no parameter gradients', async () => {
    const [cpu, onGpu] = await twinModels(true);
    const T = 24, d = modelConfig.hidden;
    const ids = Int32Array.from({ length: T }, () => rnd.int(0, 13));
    const positions = Int32Array.from({ length: T }, (_, i) => i);
    const gates = { alphas: Float32Array.from([0.3, 0.8, 0.55, 0.1]), window: { sink: 2, recent: 5 } };
    const R = filled(T * d);
    const results = [];
    for (const m of [cpu, onGpu] as Array<TrainModel<unknown>>) {
      m.forward(ids, positions, gates);
      const hidden = await m.k.read(m.hidden, T * d);
      const dxf = m.k.alloc(T * d);
      m.k.write(dxf, R);
      m.backward(dxf, { weights: false, gateGrads: m.distill!.gateGrads });
      results.push({ hidden, dalpha: await m.k.read(m.distill!.gateGrads, 4), grads: await m.k.read(m.grads, parameterCount(modelConfig)) });
    }
    assertClose(results[1].hidden, results[0].hidden, 'gated hidden states', 1e-4);
    assertClose(results[1].dalpha, results[0].dalpha, '∂/∂α', 1e-3);
    assert.ok(results[1].grads.every((x) => x === 0), 'a frozen backward leaves parameter gradients alone');
    assert.ok(results[0].dalpha.some((x) => Math.abs(x) > 1e-4), 'the gates get a gradient');
  });

  const plan: TrainPlan = {
    model: { vocab: VOCAB_SIZE, hidden: 16, layers: 1, heads: 2, kvHeads: 1, headDim: 8, intermediate: 24, eps: 1e-5, ropeTheta: 10000, maxRows: 200 },
    seed: 3, steps: 30, tokensPerStep: 400, tasks: ['passkey'], answerWeight: 1, skipFraction: 0.5,
    phases: [{ from: 0, lengths: [140, 160], maxPosition: 600, schedule: { lr: 1e-2, warmup: 3, steps: 30, minLrFraction: 0.1 } }],
  };

  test('the GPU trainer follows the CPU trainer (same data, AdamW with clipping) and lowers the loss', async () => {
    const cpu = await Trainer.create(plan);
    const onGpu = GpuTrainer.create(plan, ctx);
    const cpuLoss: number[] = [], gpuLoss: number[] = [];
    for (let i = 0; i < 12; i++) {
      const a = cpu.trainStep(), b = await onGpu.trainStep();
      cpuLoss.push(a.loss); gpuLoss.push(b.loss);
      assert.ok(Math.abs(a.gradNorm - b.gradNorm) <= 1e-3 * (1 + a.gradNorm), `step ${i + 1}: |g| ${b.gradNorm} vs CPU ${a.gradNorm}`);
    }
    assertClose(gpuLoss, cpuLoss, 'losses of 12 steps', 1e-3);
    assert.ok(gpuLoss[11] < gpuLoss[0] - 0.5, `loss ${gpuLoss[0]} → ${gpuLoss[11]}`);
    const state = await onGpu.state();
    assert.is(state.step, 12);
    assertClose(state.params, cpu.state().params, 'parameters after 12 steps', 2e-3);
    assert.equal(ctx.errors, [], 'no WebGPU errors');
  });

  test('a qwen2 checkpoint (q/k/v biases) as a frozen model: the GPU gives the RazorAttention scores of the CPU', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'duet-gpu-id-'));
    await writeCheckpoint(dir, { modelType: 'qwen2', seed: 4 });
    const ckpt = await loadCheckpoint(nodeModelFiles(dir));
    const o = { seed: 2, segment: 20, repeats: 4, firstId: 2, bos: [0] };
    const onCpu = await razorScores(await frozenModel(ckpt.config, ckpt.weights, 100), o);
    const onGpu = await razorScores(frozenGpuModel(ctx, ckpt.config, ckpt.weights, 100), o);
    assertClose(onGpu.echo.flat(), onCpu.echo.flat(), 'echo scores', 1e-4);
    assertClose(onGpu.induction.flat(), onCpu.induction.flat(), 'induction scores', 1e-4);
    assert.ok(onCpu.induction.flat().some((x) => x > 0), 'the scores are not all zero');
  });

  test('duet identify --device gpu: the duo gates and retrieval scores of --device cpu, recorded in identify.json', async () => {
    const gates = async (device: string, ...args: string[]) => {
      const out = mkdtempSync(join(tmpdir(), 'duet-gpu-id-'));
      const { stdout } = await duet('identify', '--device', device, '--out', out, '--json', ...args);
      const report = JSON.parse(readFileSync(join(out, 'identify.json'), 'utf8'));
      assert.is(report.options.device, device);
      await loadPattern(nodeModelFiles(out), args.includes('fixtures/tiny-random') ? 4 : 3, 4);
      return (JSON.parse(stdout) as { alphas: number[][] }).alphas.flat();
    };
    const duo = ['--model', 'fixtures/tiny-random', '--method', 'duo', '--steps', '4', '--lengths', '300,340', '--sink', '4', '--recent', '16'];
    const cpuAlphas = await gates('cpu', ...duo);
    assertClose(await gates('gpu', ...duo), cpuAlphas, 'duo gates after 4 steps', 1e-3);
    assert.ok(cpuAlphas.some((a) => a < 1), 'the gates moved');
    const retrieval = ['--model', 'fixtures/duet-passkey', '--method', 'retrieval-score', '--lengths', '256,300', '--samples', '1'];
    assertClose(await gates('gpu', ...retrieval), await gates('cpu', ...retrieval), 'retrieval scores (bundled model)', 1e-6);
  });

  test('duet train --device gpu writes a checkpoint that loads and resumes', async () => {
    const out = mkdtempSync(join(tmpdir(), 'duet-gpu-train-'));
    const args = ['train', '--device', 'gpu', '--out', out, '--steps', '6', '--tokens-per-step', '300', '--max-len', '360', '--tasks', 'passkey', '--layers', '1', '--hidden', '16', '--heads', '2', '--save-every', '2'];
    const first = await duet(...args, '--until', '4');
    assert.match(first.stderr, /on the GPU/);
    const second = await duet(...args, '--resume');
    assert.match(second.stderr, /resumed at step 4/);
    const state = JSON.parse(readFileSync(join(out, 'training', 'training_state.json'), 'utf8'));
    assert.is(state.step, 6);
    assert.is(state.device, 'gpu');
    const ckpt = await loadCheckpoint(nodeModelFiles(out));
    assert.is(ckpt.config.numLayers, 1);
    assert.ok(matrixF32(ckpt.weights.embed).every(Number.isFinite));
  });

  test.run();
}
