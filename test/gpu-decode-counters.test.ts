// The GPU decode path's counted costs (src/gpu/context.ts counters) and the GPU sampler
// (wgsl/sample.wgsl). A decode step's counts are deterministic, so they are asserted exactly: a
// change that adds a submit, a host wait, a read-back or a per-token allocation fails here.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { GpuBackend } from '../src/gpu/backend.ts';
import { counterDelta, perTokenCounters, type GpuCounters } from '../src/gpu/context.ts';
import { Sampler } from '../src/engine/sampler.ts';
import { DEVICE_MAX_TOP_K } from '../src/backend/device-sampler.ts';
import type { Engine } from '../src/engine/engine.ts';
import { makeEngine, sharedGpu, tempCheckpoint } from './helpers/engine.ts';
import { gpuTests } from './helpers/gpu-skip.ts';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';

const ROOT = new URL('..', import.meta.url).pathname;

const { gpu, reason } = await sharedGpu();
const test = suite('gpu decode counters and sampler');
const gpuTest = gpuTests(test, gpu !== null, reason);

// Layer 0 mixes retrieval and streaming heads, layer 1 is all retrieval, layer 2 all streaming.
const KINDS = [[true, false], [true, true], [false, false]];
const WINDOW = { sink: 2, recent: 4 };
const SPEC = { hidden: 48, intermediate: 64, layers: 3, heads: 4, kvHeads: 2, headDim: 12, vocab: 97, seed: 8 };

/** Counters of `steps` single-token decode steps after a prefill and one warm-up step. */
async function decodeSteps(engine: Engine, sampler: Sampler, steps: number): Promise<GpuCounters[]> {
  const ctx = engine.gpu!.ctx;
  const session = engine.newSession(64, 8);
  try {
    let id = await session.next([1, 2, 3, 4, 5], sampler);
    id = await session.next([id], sampler);
    const out: GpuCounters[] = [];
    for (let t = 0; t < steps; t++) {
      const before = ctx.snapshot();
      id = await session.next([id], sampler);
      out.push(counterDelta(ctx.snapshot(), before));
    }
    return out;
  } finally { session.dispose(); }
}

// Dispatches of one decode step: embed; per layer 3 projections (the input norm folded in) + 2 ropes
// per side, the retrieval side's append + attention + combine, the streaming side's attention (+ ring
// append on the GPU), one O projection per side (adding into the residual), gate and up (the post-
// attention norm folded in), silu·mul, down (adding into the residual); the LM head (the final norm
// folded in); the sampler's two passes (split samples on the GPU too). No norm or add runs alone.
const layerCommon = 4; // MLP block: gate, up, silu·mul, down
const side = 5 + 1; // q/k/v projections, 2 ropes, O projection
const leading = 1; // embed
const gpuDispatches = leading + (layerCommon + 2 * side + 3 + 2) + (layerCommon + side + 3) + (layerCommon + side + 2) + 1 + 2;
const splitDispatches = leading + (layerCommon + 2 * side + 3) + (layerCommon + side + 3) + (layerCommon + side) + 1 + 2;
/** The uniform arena: one 256-byte slot per dispatch, written once per submit. */
const UNIFORM_SLOT = 256;

gpuTest('placement gpu: one submit, one host wait, 8 bytes back, nothing created per decode step', async () => {
  const ck = await tempCheckpoint(SPEC);
  const engine = await makeEngine(ck, 'gpu', KINDS, WINDOW);
  try {
    for (const options of [{}, { temperature: 0.8, topK: 20, topP: 0.9, seed: 3 }]) {
      const steps = await decodeSteps(engine, new Sampler(options), 3);
      for (const c of steps) {
        assert.equal(c, {
          submits: 1, hostWaits: 1, readbackBytes: 8, uploadBytes: gpuDispatches * UNIFORM_SLOT, dispatches: gpuDispatches,
          buffersCreated: 0, bindGroupsCreated: 0, pipelinesCreated: 0,
        }, JSON.stringify(options));
      }
    }
  } finally { engine.dispose(); }
});

gpuTest('placement split: one host wait per layer with streaming heads (+ the logits), none for the others', async () => {
  const ck = await tempCheckpoint(SPEC);
  const engine = await makeEngine(ck, 'split', KINDS, WINDOW);
  const D = SPEC.headDim;
  try {
    const steps = await decodeSteps(engine, new Sampler({}), 3);
    // Layer 0: 1 streaming KV head (2 query heads); layer 2: 2 KV heads (4 query heads).
    const qkv = (kv: number) => (2 * kv + 2 * kv) * D * 4; // q (2 per KV head) + k + v, f32
    const outBack = (kv: number) => 2 * kv * D * 4; // the CPU's attention output, uploaded
    for (const c of steps) {
      assert.equal(c, {
        // Layer 0: the q/k/v read and the rest of the layer; layer 2 has no retrieval side to submit
        // before its read; the last submit ends with the sampled token's read.
        submits: 4, hostWaits: 3,
        readbackBytes: qkv(1) + qkv(2) + 8,
        uploadBytes: splitDispatches * UNIFORM_SLOT + outBack(1) + outBack(2), dispatches: splitDispatches,
        buffersCreated: 0, bindGroupsCreated: 0, pipelinesCreated: 0,
      });
    }
  } finally { engine.dispose(); }
});

gpuTest('generate reports per-token counters; a fresh session reuses the staging and bind groups', async () => {
  const ck = await tempCheckpoint(SPEC);
  const engine = await makeEngine(ck, 'gpu', KINDS, WINDOW);
  try {
    await engine.generate([1, 2, 3], { maxTokens: 3 });
    const r = await engine.generate([1, 2, 3], { maxTokens: 6 });
    assert.is(r.gpu!.decodeSteps, 5);
    const d = r.gpu!.decode;
    assert.equal([d.submits, d.hostWaits, d.readbackBytes, d.dispatches], [5, 5, 40, 5 * gpuDispatches]);
    // The new session's workspaces need new bind groups in its first decode step only (the
    // staging buffer and the pipelines are the engine's): fewer than one step's dispatches.
    assert.equal([d.buffersCreated, d.pipelinesCreated], [0, 0]);
    assert.ok(d.bindGroupsCreated > 0 && d.bindGroupsCreated < gpuDispatches, String(d.bindGroupsCreated));
    const per = perTokenCounters(d, r.gpu!.decodeSteps);
    assert.equal(per, {
      submits_per_token: 1, host_waits_per_token: 1, readback_bytes_per_token: 8, upload_bytes_per_token: d.uploadBytes / 5,
      dispatches_per_token: gpuDispatches, gpu_objects_created_per_token: d.bindGroupsCreated / 5,
    });
  } finally { engine.dispose(); }
});

/** Logits with many exact ties (multiples of 1/4), or wide random ones. */
function logitsRow(vocab: number, seed: number, ties: boolean): Float32Array {
  let s = seed >>> 0;
  const rnd = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32; };
  return Float32Array.from({ length: vocab }, () => (ties ? Math.floor(rnd() * 12) / 4 : (rnd() - 0.5) * 16));
}

gpuTest('GPU sampler picks what the CPU sampler picks for the same seed (greedy, top-k, top-p, ties)', async () => {
  const be = new GpuBackend(gpu!);
  const configs = [
    {}, { temperature: 1, topK: 1 }, { temperature: 0.7, topK: 5 }, { temperature: 1.3, topK: 40, topP: 0.8 },
    { temperature: 0.5, topK: DEVICE_MAX_TOP_K, topP: 0.95 }, { temperature: 2, topK: 150 },
  ];
  let compared = 0, nonGreedyDistinct = 0;
  // 97: one workgroup, fewer logits than some k; 5003: several workgroups with a ragged last chunk.
  for (const vocab of [97, 5003]) {
    for (const ties of [true, false]) {
      const rows = Array.from({ length: 6 }, (_, i) => logitsRow(vocab, 100 * vocab + i + (ties ? 7 : 0), ties));
      const tensors = rows.map((r) => be.upload(r));
      for (const [ci, options] of configs.entries()) {
        for (const seed of [1, 2, 3]) {
          const cpu = new Sampler({ ...options, seed }), dev = new Sampler({ ...options, seed });
          const seen = new Set<number>();
          for (let step = 0; step < 8; step++) {
            const row = step % rows.length;
            const want = cpu.sample(rows[row]);
            const choice = dev.deviceChoice();
            assert.ok(choice, `config ${ci} runs on the device`);
            const got = await be.sampleToken(tensors[row], vocab, choice!);
            assert.is(got, want, `vocab ${vocab} ties ${ties} config ${JSON.stringify(options)} seed ${seed} step ${step}`);
            seen.add(got);
            compared++;
          }
          if (ci >= 2 && seen.size > 1) nonGreedyDistinct++;
        }
      }
      for (const t of tensors) be.free(t);
    }
  }
  assert.is(compared, 2 * 2 * configs.length * 3 * 8);
  assert.ok(nonGreedyDistinct > 10, 'sampling configurations drew varied tokens');
});

gpuTest('GPU sampler: a non-finite logit fails as on the CPU; configurations it cannot run stay on the host', async () => {
  const be = new GpuBackend(gpu!);
  const row = logitsRow(3000, 5, false);
  row[2500] = Number.NaN; row[2900] = Number.POSITIVE_INFINITY;
  const t = be.upload(row);
  const cpuError = (() => { try { new Sampler({}).sample(row); } catch (e) { return (e as Error).message; } return ''; })();
  try {
    await be.sampleToken(t, 3000, new Sampler({}).deviceChoice()!);
    assert.unreachable('non-finite logits must fail');
  } catch (e) {
    assert.is((e as Error).message, cpuError);
    assert.match(cpuError, /NaN for token 2500/);
  }
  assert.is(new Sampler({ temperature: 1 }).deviceChoice(), null);
  assert.is(new Sampler({ temperature: 1, topK: DEVICE_MAX_TOP_K + 1 }).deviceChoice(), null);
  const bad = await be.sampleToken(t, 3000, { k: 0, temperature: 1, topP: 1, r: 0 }).then(() => '', (e: Error) => e.message);
  assert.match(bad, /k must be an integer in 1\.\.256 \(got 0\)/);
  be.free(t);
});

gpuTest('duet generate --json prints the counters per decoded token', async () => {
  const { stdout } = await promisify(execFile)(process.execPath, [join(ROOT, 'bin/duet.mjs'), 'generate', '--model', join(ROOT, 'fixtures/duet-passkey'),
    '--pattern', join(ROOT, 'fixtures/duet-passkey-pattern'), '--sparsity', '0.5', '--device', 'gpu', '--placement', 'gpu',
    '--prompt', 'the pass key is', '--max-tokens', '5', '--temperature', '0.7', '--top-k', '8', '--seed', '2', '--threads', '1', '--json'], { cwd: ROOT });
  const c = JSON.parse(stdout).counters;
  assert.equal(Object.keys(c), ['submits_per_token', 'host_waits_per_token', 'readback_bytes_per_token', 'upload_bytes_per_token',
    'dispatches_per_token', 'gpu_objects_created_per_token', 'decode_tokens', 'prefill', 'decode']);
  assert.is(c.decode_tokens, 4);
  assert.equal([c.submits_per_token, c.host_waits_per_token, c.readback_bytes_per_token], [1, 1, 8]);
  assert.is(c.decode.dispatches, 4 * c.dispatches_per_token);
  assert.is(c.decode.buffers_created + c.decode.pipelines_created, 0);
});

test.run();
