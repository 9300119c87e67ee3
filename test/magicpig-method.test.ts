// The magicpig KV method (src/kv/magicpig/method.ts) beyond the conformance harness
// (test/kv-methods.test.ts runs its outputs against the float64 reference on every backend):
// - the keys it samples per decode step are exactly the reference's sampled sets (same seeded
//   hyperplanes, k̄ fixed at the first decode step), and it does sample: neither none nor all;
// - with huge L it approaches exact attention, with small L it does not (so the estimate is what
//   is tested, not a disguised exact attention): K = 2, L = 1024 within 2e-3, L = 4 off by > 1e-2;
// - bytes equal the layout: the store in host memory, the static rings, planes and k̄ on the
//   device; bad settings and a store over one WebAssembly memory are refused with the field or
//   limit named;
// - with offload threads the KV heads are split over workers: outputs and sampled counts are
//   bit-identical to one thread's, the workers ran shares, and caches share one pool.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { magicpigMethod, MagicPigCache, STORE_LIMIT_BYTES } from '../src/kv/magicpig/method.ts';
import { magicpigSettings, simhashPlanes, checkMagicPigSettings, defaultLsh, type MagicPigSettings } from '../src/kv/magicpig/settings.ts';
import { sampledSet, simhashCodes } from '../src/kv/magicpig/reference.ts';
import { fullMethod } from '../src/kv/full/method.ts';
import { layoutBytes, layoutHostBytes, methodBytes, type KvGroupShape, type KvSettings } from '../src/kv/method.ts';
import { createCpuBackend } from '../src/cpu/backend.ts';
import { randomArray } from './reference/kernels.ts';
import { OffloadThreads } from '../src/kv/magicpig/threads.ts';
import { startNodeKernelWorker } from '../src/node/kernel-threads.ts';
import { reference as fullReference } from '../src/kv/full/reference.ts';

const BASE: Omit<KvSettings, 'magicpig'> = { kvDtype: 'f32', window: { sink: 4, recent: 8 }, compensation: false };

async function settingsWith(o: Partial<MagicPigSettings>, headDim: number): Promise<KvSettings> {
  return { ...BASE, magicpig: await magicpigSettings(o, headDim) };
}

/** Runs a prefill of `prefill` rows then `steps` decode rows; returns outputs of the prefill and decode rows and the cache. */
async function decodeRun(shape: KvGroupShape, settings: KvSettings, prefill: number, steps: number, seed: number) {
  const be = await createCpuBackend();
  const { numKvHeads: H, group: G, headDim: D } = shape, total = prefill + steps;
  const q = randomArray(total * H * G * D, seed, 1.5), k = randomArray(total * H * D, seed + 1, 1.5), v = randomArray(total * H * D, seed + 2);
  const cache = magicpigMethod.create(be, shape, total, settings) as MagicPigCache;
  const outs: Float32Array[] = [];
  const sampledPerStep: number[] = [];
  let pastLen = 0;
  for (const rows of [prefill, ...Array(steps).fill(1)]) {
    const qt = be.upload(q.subarray(pastLen * H * G * D, (pastLen + rows) * H * G * D));
    const kt = be.upload(k.subarray(pastLen * H * D, (pastLen + rows) * H * D)), vt = be.upload(v.subarray(pastLen * H * D, (pastLen + rows) * H * D));
    const out = be.alloc(rows * H * G * D);
    const before = cache.counts.sampled;
    await cache.attend(out, qt, kt, vt, rows, pastLen);
    await cache.append(kt, vt, rows, pastLen);
    outs.push(await be.read(out));
    if (rows === 1) sampledPerStep.push(cache.counts.sampled - before);
    for (const t of [qt, kt, vt, out]) be.free(t);
    pastLen += rows;
  }
  return { be, cache, q, k, v, outs, sampledPerStep };
}

test('decode samples exactly the reference sets (seeded planes, k̄ from the first decode step), some keys and not all', async () => {
  const shape: KvGroupShape = { numKvHeads: 2, group: 3, headDim: 12 };
  const settings = await settingsWith({ K: 3, L: 12, sinks: 2, local: 4, seed: 5 }, 12);
  const s = settings.magicpig!, prefill = 30, steps = 6, { numKvHeads: H, group: G, headDim: D } = shape;
  const { be, cache, q, k, sampledPerStep } = await decodeRun(shape, settings, prefill, steps, 41);
  const planes = simhashPlanes(s, D, s.seed);
  const mFirst = prefill - s.local - s.sinks;
  const mean = Array.from({ length: H }, (_, h) => {
    const m = new Float64Array(D);
    for (let r = 0; r < mFirst; r++) for (let d = 0; d < D; d++) m[d] += k[((s.sinks + r) * H + h) * D + d];
    return m.map((x) => Math.fround(x / mFirst));
  });
  let offloaded = 0;
  for (let t = 0; t < steps; t++) {
    const pos = prefill + t, m = pos - s.local - s.sinks;
    let expected = 0;
    for (let h = 0; h < H; h++) {
      const keys = new Float64Array(m * D);
      for (let r = 0; r < m; r++) for (let d = 0; d < D; d++) keys[r * D + d] = k[((s.sinks + r) * H + h) * D + d];
      const kCodes = simhashCodes(keys, m, D, planes, s, mean[h]);
      for (let g = 0; g < G; g++) {
        const qv = q.subarray((pos * H * G + h * G + g) * D, (pos * H * G + h * G + g + 1) * D);
        expected += sampledSet(simhashCodes(qv, 1, D, planes, s), kCodes, m, s.L).length;
      }
    }
    assert.is(sampledPerStep[t], expected, `decode step at ${pos}: keys sampled over the ${H * G} query heads`);
    offloaded += m * H * G;
  }
  assert.is(cache.counts.steps, steps);
  assert.is(cache.counts.offloaded, offloaded);
  const fraction = cache.counts.sampled / offloaded;
  assert.ok(fraction > 0.05 && fraction < 0.95, `sampled fraction ${fraction} is neither none nor all`);
  cache.free(); be.destroy();
});

test('offload threads split the KV heads: bit-identical to one thread, the workers did shares, one pool for several caches', async () => {
  // 5 KV heads over 3 threads (shares of 2, 2, 1); prefill 40 (exact attention, split too), then decode.
  const shape: KvGroupShape = { numKvHeads: 5, group: 2, headDim: 20 };
  const one = await settingsWith({ K: 3, L: 12, sinks: 2, local: 4, seed: 5 }, 20);
  const threads = await OffloadThreads.create(3, startNodeKernelWorker);
  try {
    const threaded: KvSettings = { ...one, magicpig: { ...one.magicpig!, threads } };
    const a = await decodeRun(shape, one, 40, 8, 17);
    const b = await decodeRun(shape, threaded, 40, 8, 17);
    assert.is(b.outs.length, 9);
    b.outs.forEach((o, i) => assert.equal(Array.from(o), Array.from(a.outs[i]), `chunk ${i}: same bits as one thread`));
    assert.equal(b.sampledPerStep, a.sampledPerStep);
    assert.ok(a.sampledPerStep.every((n) => n > 0));
    const shares = threads.workerShares;
    // Every job gives the two workers heads 2–3 and 4: the prefill's attention; at the first decode step
    // the hashing of the 34 offloaded keys; per decode step the sampled attention (the queries and the
    // row leaving the window are hashed on the main device). 2 · (1 + 1 + 8) shares.
    assert.is(shares, 2 * 10);
    // A second cache joins the pool (the workers restart with both memories).
    const c = await decodeRun(shape, threaded, 12, 2, 3);
    assert.is(threads.workerShares, shares + 2 * (1 + 1 + 2));
    assert.is(c.outs.length, 3);
    for (const r of [a, b, c]) { r.cache.free(); r.be.destroy(); }
    // A cache created between another's attend and append (a new session) restarts the pool; the append still runs.
    const be = await createCpuBackend(), { numKvHeads: H, group: G, headDim: D } = shape;
    const x = magicpigMethod.create(be, shape, 32, threaded);
    const t = (n: number, seed: number) => be.upload(randomArray(n, seed));
    const [q0, k0, v0, o0] = [t(20 * H * G * D, 1), t(20 * H * D, 2), t(20 * H * D, 3), be.alloc(20 * H * G * D)];
    await x.attend(o0, q0, k0, v0, 20, 0);
    await x.append(k0, v0, 20, 0, q0);
    const [q1, k1, v1, o1] = [t(H * G * D, 4), t(H * D, 5), t(H * D, 6), be.alloc(H * G * D)];
    await x.attend(o1, q1, k1, v1, 1, 20);
    await x.append(k1, v1, 1, 20, q1);
    // A chunk of 3 rows after the first decode step: its append hashes the rows leaving the window on the host.
    const [q2, k2, v2, o2] = [t(3 * H * G * D, 7), t(3 * H * D, 8), t(3 * H * D, 9), be.alloc(3 * H * G * D)];
    await x.attend(o2, q2, k2, v2, 3, 21);
    const y = magicpigMethod.create(be, shape, 32, threaded);
    const before = threads.workerShares;
    await x.append(k2, v2, 3, 21, q2);
    assert.is(threads.workerShares, before + 2, 'the append hashed the rows that left the window on the restarted pool');
    x.free(); y.free(); be.destroy();
  } finally { threads.stop(); }
  const refused = await OffloadThreads.create(1, startNodeKernelWorker).then(() => null, (e: Error) => e.message);
  assert.match(refused ?? '', /count must be an integer ≥ 2 \(got 1\)/);
});

test('bucket tables sample exactly the scan\'s keys, across rebuilds (tables + scanned tail), outputs within 1e-5; bytes include them', async () => {
  // 700 decode steps after a prefill of 90: tables built at the first step (84 rows), rebuilt at 596
  // offloaded rows (512 scanned) and not again; the steps between scan a growing tail.
  const shape: KvGroupShape = { numKvHeads: 2, group: 2, headDim: 8 };
  const scan = await settingsWith({ K: 4, L: 10, sinks: 2, local: 4, seed: 3 }, 8);
  const tables: KvSettings = { ...scan, magicpig: { ...scan.magicpig!, tables: true } };
  const a = await decodeRun(shape, scan, 90, 700, 29), b = await decodeRun(shape, tables, 90, 700, 29);
  assert.equal(b.sampledPerStep, a.sampledPerStep, 'the same keys sampled at every step');
  let worst = 0;
  b.outs.forEach((o, i) => o.forEach((x, j) => { worst = Math.max(worst, Math.abs(x - a.outs[i][j])); }));
  assert.ok(worst < 1e-5, `tables vs scan |Δ| ${worst}`);
  const s = tables.magicpig!, off = 90 + 700 - s.sinks - s.local;
  assert.is(b.cache.bytes() - a.cache.bytes(), 4 * 2 * s.L * off + 4 * 2 * s.L * ((1 << s.K) + 1), 'tables: L i32 per offloaded row and 2^K + 1 starts per table, per head');
  assert.is(b.cache.bytes(), methodBytes(magicpigMethod, shape, 790, tables));
  for (const r of [a, b]) { r.cache.free(); r.be.destroy(); }
  assert.throws(() => checkMagicPigSettings({ ...scan.magicpig!, tables: true, topk: { keys: 3 } }), /tables index hash codes; exact topk hashes nothing/);
});

test('with huge L the estimate approaches exact attention; with small L it does not', async () => {
  const shape: KvGroupShape = { numKvHeads: 1, group: 2, headDim: 16 };
  const prefill = 160, steps = 4, { numKvHeads: H, group: G, headDim: D } = shape;
  const errorWith = async (K: number, L: number) => {
    const { be, cache, q, k, v, outs } = await decodeRun(shape, await settingsWith({ K, L, sinks: 2, local: 4 }, D), prefill, steps, 77);
    const exact = fullReference.open(shape, { ...BASE });
    exact.append(k.subarray(0, prefill * H * D), v.subarray(0, prefill * H * D), prefill, 0, q.subarray(0, prefill * H * G * D));
    let worst = 0;
    for (let t = 0; t < steps; t++) {
      const pos = prefill + t, qr = q.subarray(pos * H * G * D, (pos + 1) * H * G * D);
      const kr = k.subarray(pos * H * D, (pos + 1) * H * D), vr = v.subarray(pos * H * D, (pos + 1) * H * D);
      const want = exact.attend(qr, kr, vr, 1, pos);
      exact.append(kr, vr, 1, pos, qr);
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(outs[1 + t][i] - want[i]));
    }
    const fraction = cache.counts.sampled / cache.counts.offloaded;
    cache.free(); be.destroy();
    return { worst, fraction };
  };
  const huge = await errorWith(2, 1024), small = await errorWith(6, 4);
  assert.ok(huge.fraction > 0.9, `K 2, L 1024 samples nearly every key (${huge.fraction})`);
  assert.ok(huge.worst < 2e-3, `K 2, L 1024: |Δ| ${huge.worst} from exact attention`);
  assert.ok(small.fraction < 0.2, `K 6, L 4 samples few keys (${small.fraction})`);
  assert.ok(small.worst > 1e-2, `K 6, L 4 is visibly an estimate (|Δ| ${small.worst})`);
});

test('bytes equal the layout: the store in host memory, the static rings, planes and k̄ on the device; the full method has no host bytes', async () => {
  const shape: KvGroupShape = { numKvHeads: 3, group: 1, headDim: 20 };
  const settings = await settingsWith({ K: 4, L: 13, sinks: 1, local: 3 }, 20);
  const be = await createCpuBackend();
  const cache = magicpigMethod.create(be, shape, 10, settings);
  const specs = magicpigMethod.layout(shape, 10, settings);
  assert.is(cache.bytes(), layoutBytes(specs));
  assert.is(cache.hostBytes!(), layoutHostBytes(specs));
  // Host: planes 4·13·20, the sampling-weight table 4096·2 f64, K and V 2·3·10·20, norms 3·6, codes 3·6·16 u16, k̄ 3·20 (words).
  assert.is(cache.hostBytes!(), 4 * (4 * 13 * 20 + 2 * 8192 + 2 * 3 * 10 * 20 + 3 * 6 + (3 * 6 * 16) / 2 + 3 * 20));
  // Device: K and V rings of 1 sink + 3 local + 1 slots, planes, k̄.
  assert.is(cache.bytes() - cache.hostBytes!(), 4 * (2 * 3 * 5 * 20 + 4 * 13 * 20 + 3 * 20));
  cache.grow(25, 0);
  assert.is(cache.bytes(), methodBytes(magicpigMethod, shape, 25, settings));
  assert.is(cache.hostBytes!(), layoutHostBytes(magicpigMethod.layout(shape, 25, settings)));
  assert.is(layoutHostBytes(fullMethod.layout(shape, 10, settings)), 0);
  cache.free(); be.destroy();
});

test('bad settings and a store over one WebAssembly memory are refused, naming the field or the limit', async () => {
  const good = (await settingsWith({}, 64)).magicpig!;
  assert.equal({ K: good.K, L: good.L, sinks: good.sinks, local: good.local }, { ...defaultLsh(64), sinks: 4, local: 64 });
  assert.throws(() => checkMagicPigSettings({ ...good, K: 0 }), /K \(bits per hash table\) must be an integer in 1\.\.16 \(got 0\)/);
  assert.throws(() => checkMagicPigSettings({ ...good, K: 17 }), /K .* \(got 17\)/);
  assert.throws(() => checkMagicPigSettings({ ...good, L: 1 }), /L \(hash tables\) must be an integer in 2\.\.1024 \(got 1\)/);
  assert.throws(() => checkMagicPigSettings({ ...good, L: 2.5 }), /L .* \(got 2\.5\)/);
  assert.throws(() => checkMagicPigSettings({ ...good, local: 0 }), /local window must be an integer ≥ 1 \(got 0\)/);
  assert.throws(() => checkMagicPigSettings({ ...good, sinks: -1 }), /sinks must be an integer ≥ 0 \(got -1\)/);
  let refused = '';
  await magicpigSettings({ L: 1 }, 64).catch((e: Error) => { refused = e.message; });
  assert.match(refused, /L \(hash tables\)/);
  const shape: KvGroupShape = { numKvHeads: 8, group: 4, headDim: 128, layer: 3 };
  assert.throws(() => magicpigMethod.layout(shape, 16, { ...BASE }), /needs settings\.magicpig/);
  assert.throws(() => magicpigMethod.layout(shape, 2 ** 19, { ...BASE, magicpig: good }), /layer 3's offloaded store .* more than one WebAssembly memory holds \(4 GiB/);
  assert.ok(layoutBytes(magicpigMethod.layout(shape, 2 ** 16, { ...BASE, magicpig: good })) <= STORE_LIMIT_BYTES);
  const be = await createCpuBackend();
  const cache = magicpigMethod.create(be, { ...shape, numKvHeads: 1 }, 16, { ...BASE, magicpig: good });
  assert.throws(() => cache.grow(2 ** 23, 0), /more than one WebAssembly memory holds/);
  cache.free();
  assert.throws(() => cache.grow(32, 0), /used after free/);
  be.destroy();
});

test('hyperplanes are seeded: the same seed gives the same planes, another seed others', () => {
  const a = simhashPlanes({ K: 3, L: 5 }, 7, 1), b = simhashPlanes({ K: 3, L: 5 }, 7, 1), c = simhashPlanes({ K: 3, L: 5 }, 7, 2);
  assert.equal(a, b);
  assert.not.equal(a, c);
  const mean = a.reduce((x, y) => x + y, 0) / a.length;
  assert.ok(Math.abs(mean) < 0.5 && a.every(Number.isFinite));
});

test.run();
