// MagicPIG's decode step on the main device (src/kv/magicpig/method.ts), on every backend a cache can
// live on (the CPU on one and three threads, the browser's CPU worker, the GPU): the static tokens'
// ring attends with its log-sum-exp, the SimHash kernel hashes the queries and the key leaving the
// window there, and the step reads back exactly once (append reads nothing; a GPU hashes the
// prompt's offloaded keys at the first step too, one more). The sampled sets are the float64
// reference's (seeded planes, k̄ fixed at the first decode step) at every step, so the codes of the
// keys hashed on the device are right, and the outputs match the one-thread CPU's.
// Without an adapter the GPU case is skipped, except in CI; .ci/run also runs this file on llvmpipe.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Backend } from '../src/backend/contract.ts';
import { magicpigMethod, type MagicPigCache } from '../src/kv/magicpig/method.ts';
import { magicpigSettings, simhashPlanes } from '../src/kv/magicpig/settings.ts';
import { sampledSet, simhashCodes } from '../src/kv/magicpig/reference.ts';
import type { KvGroupShape, KvSettings } from '../src/kv/method.ts';
import { randomArray } from './reference/kernels.ts';
import { kernelBackends } from './helpers/kernel-backends.ts';
import { sharedGpu } from './helpers/engine.ts';
import { gpuTests } from './helpers/gpu-skip.ts';

const gpu = await sharedGpu();
const test = suite('MagicPIG decode on the main device');
const gpuTest = gpuTests(test, gpu.gpu !== null, gpu.reason);

/** `be` with its reads counted. */
function counted(be: Backend): { be: Backend; reads: () => number } {
  let reads = 0;
  const proxy = new Proxy(be, {
    get(target, key) {
      const value = Reflect.get(target, key, target);
      if (key === 'read') return (...args: Parameters<Backend['read']>) => { reads++; return target.read(...args); };
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return { be: proxy, reads: () => reads };
}

const shape: KvGroupShape = { numKvHeads: 3, group: 2, headDim: 20 };
const PREFILL = 26, STEPS = 9;

async function run(make: () => Promise<Backend>, tables: boolean) {
  const raw = await make(), { be, reads } = counted(raw);
  const settings: KvSettings = { kvDtype: 'f32', window: { sink: 4, recent: 8 }, compensation: false,
    magicpig: await magicpigSettings({ K: 3, L: 12, sinks: 2, local: 5, seed: 7, tables }, shape.headDim) };
  const { numKvHeads: H, group: G, headDim: D } = shape, total = PREFILL + STEPS;
  const q = randomArray(total * H * G * D, 3, 1.5), k = randomArray(total * H * D, 4, 1.5), v = randomArray(total * H * D, 5);
  const cache = magicpigMethod.create(be, shape, total, settings) as MagicPigCache;
  const outs: Float32Array[] = [], readsPerStep: number[] = [], sampled: number[] = [];
  let pastLen = 0;
  for (const rows of [PREFILL, ...Array(STEPS).fill(1)]) {
    const qt = be.upload(q.subarray(pastLen * H * G * D, (pastLen + rows) * H * G * D));
    const kt = be.upload(k.subarray(pastLen * H * D, (pastLen + rows) * H * D)), vt = be.upload(v.subarray(pastLen * H * D, (pastLen + rows) * H * D));
    const out = be.alloc(rows * H * G * D);
    const before = reads(), sampledBefore = cache.counts.sampled;
    await cache.attend(out, qt, kt, vt, rows, pastLen);
    await cache.append(kt, vt, rows, pastLen);
    if (rows === 1) { readsPerStep.push(reads() - before); sampled.push(cache.counts.sampled - sampledBefore); }
    outs.push(await raw.read(out));
    for (const t of [qt, kt, vt, out]) be.free(t);
    pastLen += rows;
  }
  cache.free(); raw.destroy();
  return { outs, readsPerStep, sampled, settings, q, k };
}

/** Keys the float64 reference samples per decode step, summed over query heads (k̄: the offloaded keys' mean at the first step). */
function referenceSampled(settings: KvSettings, q: Float32Array, k: Float32Array): number[] {
  const s = settings.magicpig!, { numKvHeads: H, group: G, headDim: D } = shape, planes = simhashPlanes(s, D, s.seed);
  const key = (p: number, h: number) => k.subarray((p * H + h) * D, (p * H + h + 1) * D);
  const mFirst = PREFILL - s.local - s.sinks, means: Float64Array[] = [];
  for (let h = 0; h < H; h++) {
    const mean = new Float64Array(D);
    for (let r = 0; r < mFirst; r++) for (let d = 0; d < D; d++) mean[d] += key(s.sinks + r, h)[d];
    means.push(mean.map((x) => Math.fround(x / mFirst)));
  }
  const out: number[] = [];
  for (let t = 0; t < STEPS; t++) {
    const pos = PREFILL + t, m = pos - s.local - s.sinks;
    let n = 0;
    for (let h = 0; h < H; h++) {
      const keys = new Float64Array(m * D);
      for (let r = 0; r < m; r++) keys.set(key(s.sinks + r, h), r * D);
      const kCodes = simhashCodes(keys, m, D, planes, s, means[h]);
      for (let g = 0; g < G; g++) {
        const qv = q.subarray(((pos * H + h) * G + g) * D, ((pos * H + h) * G + g + 1) * D);
        n += sampledSet(simhashCodes(qv, 1, D, planes, s), kCodes, m, s.L).length;
      }
    }
    out.push(n);
  }
  return out;
}

const [cpu] = kernelBackends(gpu.gpu);
for (const tables of [false, true]) {
  const want = await run(cpu.make, tables);
  const expected = referenceSampled(want.settings, want.q, want.k);
  test(`${tables ? 'bucket tables' : 'scan'}: the one-thread CPU samples the reference's sets at every step`, () => {
    assert.equal(want.sampled, expected);
    assert.ok(expected.every((n) => n > 0) && expected.some((n, t) => n < 6 * (PREFILL + t - 7)), 'some keys sampled, not all');
  });
  for (const b of kernelBackends(gpu.gpu)) {
    (b.gpu ? gpuTest : test)(`${b.name}, ${tables ? 'bucket tables' : 'scan'}: one readback per decode step, the reference's sampled sets, outputs as the CPU's`, async () => {
      const got = await run(b.make, tables);
      // A GPU also hashes the prompt's offloaded keys at the first decode step (one chunk here): one more readback then.
      assert.equal(got.readsPerStep, Array.from({ length: STEPS }, (_, t) => (t === 0 && b.gpu ? 2 : 1)));
      assert.equal(got.sampled, expected);
      got.outs.forEach((o, i) => o.forEach((x, j) => {
        if (!(Math.abs(x - want.outs[i][j]) <= 1e-5 * (1 + Math.abs(want.outs[i][j])))) assert.unreachable(`chunk ${i} [${j}]: ${x} vs ${want.outs[i][j]}`);
      }));
    });
  }
}

test.run();
