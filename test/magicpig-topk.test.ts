// MagicPIG's exact TopK baseline (src/kv/magicpig/topk.ts, settings.topk of the magicpig method)
// beyond the conformance harness (test/kv-methods.test.ts runs it against the float64 reference on
// every backend):
// - topkIndices is exactly the plain reference's set and order (repeated argmax, lower index wins a
//   tie) on odd sizes, heavy ties, and k ≥ n;
// - decode attends min(k, m) keys per query head; with k ≥ the offloaded keys it is exact attention
//   (2e-5), with a small k visibly not (> 1e-2); a fraction gives ⌈f·m⌉ keys;
// - the store is K and V only, as laid out; bad values are refused by name, in the API and the CLI.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { magicpigMethod, MagicPigCache } from '../src/kv/magicpig/method.ts';
import { magicpigSettings, checkMagicPigSettings, offloadSettings } from '../src/kv/magicpig/settings.ts';
import { checkTopk, topkCount, topkIndices, type TopKChoice } from '../src/kv/magicpig/topk.ts';
import { topkSet } from '../src/kv/magicpig/reference.ts';
import { layoutBytes, type KvGroupShape, type KvSettings } from '../src/kv/method.ts';
import { createCpuBackend } from '../src/cpu/backend.ts';
import { reference as fullReference } from '../src/kv/full/reference.ts';
import { topkFlag, offloadFlags } from '../src/cli/options.ts';
import { randomArray } from './reference/kernels.ts';
import { kvMemory, loadModel } from '../src/node.ts';

const BASE: Omit<KvSettings, 'magicpig'> = { kvDtype: 'f32', window: { sink: 4, recent: 8 }, compensation: false };

test('topkIndices is the plain top-k set, in order, ties to the lower index, every index when k ≥ n', () => {
  for (const n of [1, 2, 7, 33, 257]) {
    const distinct = randomArray(n, n, 3), tied = Float64Array.from(randomArray(n, n + 1, 2), (x) => Math.round(x));
    for (const scores of [distinct, tied]) {
      for (const k of [1, 3, n - 1, n, n + 5].filter((x) => x >= 1)) {
        assert.equal(Array.from(topkIndices(scores, n, k)), topkSet(scores, n, k), `n ${n}, k ${k}`);
      }
    }
  }
  assert.equal(Array.from(topkIndices([1, 5, 5, 2, 5], 5, 2)), [1, 2], 'equal scores: the earlier positions');
  assert.equal(Array.from(topkIndices([3, 1, 2], 3, 10)), [0, 2, 1]);
  assert.is(topkCount({ keys: 40 }, 10), 10);
  assert.is(topkCount({ keys: 40 }, 0), 0);
  assert.is(topkCount({ fraction: 0.05 }, 100), 5, '⌈0.05·100⌉ despite 0.05·100 = 5.000000000000001');
  assert.is(topkCount({ fraction: 0.025 }, 956), 24);
  assert.is(topkCount({ fraction: 0.001 }, 10), 1, 'at least one key');
});

async function decode(shape: KvGroupShape, topk: TopKChoice, prefill: number, steps: number, seed: number) {
  const settings: KvSettings = { ...BASE, magicpig: await magicpigSettings({ sinks: 2, local: 3, topk }, shape.headDim) };
  const be = await createCpuBackend();
  const { numKvHeads: H, group: G, headDim: D } = shape, total = prefill + steps;
  const q = randomArray(total * H * G * D, seed, 1.5), k = randomArray(total * H * D, seed + 1, 1.5), v = randomArray(total * H * D, seed + 2);
  const cache = magicpigMethod.create(be, shape, total, settings) as MagicPigCache;
  const exact = fullReference.open(shape, { ...BASE });
  let pastLen = 0, worst = 0;
  for (const rows of [prefill, ...Array(steps).fill(1)]) {
    const sl = (a: Float32Array, w: number) => a.subarray(pastLen * w, (pastLen + rows) * w);
    const [qr, kr, vr] = [sl(q, H * G * D), sl(k, H * D), sl(v, H * D)];
    const qt = be.upload(qr), kt = be.upload(kr), vt = be.upload(vr), out = be.alloc(rows * H * G * D);
    await cache.attend(out, qt, kt, vt, rows, pastLen);
    await cache.append(kt, vt, rows, pastLen);
    const want = exact.attend(qr, kr, vr, rows, pastLen);
    exact.append(kr, vr, rows, pastLen, qr);
    if (rows === 1) { const got = await be.read(out); for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i])); }
    for (const t of [qt, kt, vt, out]) be.free(t);
    pastLen += rows;
  }
  const bytes = { cache: cache.bytes(), layout: layoutBytes(magicpigMethod.layout(shape, total, settings)), host: cache.hostBytes() };
  const sampling = cache.sampling();
  cache.free(); be.destroy();
  return { worst, sampling, bytes };
}

test('k ≥ the offloaded keys is exact attention; a small k is not; keys per step are min(k, m) per query head', async () => {
  const shape: KvGroupShape = { numKvHeads: 2, group: 3, headDim: 13 }, prefill = 41, steps = 4;
  const all = await decode(shape, { keys: 1000 }, prefill, steps, 5);
  assert.ok(all.worst < 2e-5, `every offloaded key: |Δ| ${all.worst} from exact attention`);
  const few = await decode(shape, { keys: 2 }, prefill, steps, 5);
  assert.ok(few.worst > 1e-2, `2 of ~36 keys is visibly not exact (|Δ| ${few.worst})`);
  const m = (t: number) => prefill + t - 2 - 3;
  assert.equal(few.sampling.sampled, [2, 2, 2, 2].map((x) => x * 6));
  assert.equal(few.sampling.offloaded, [0, 1, 2, 3].map((t) => m(t) * 6));
  assert.equal(all.sampling.sampled, all.sampling.offloaded);
  const frac = await decode(shape, { fraction: 0.1 }, prefill, steps, 5);
  assert.equal(frac.sampling.sampled, [0, 1, 2, 3].map((t) => Math.ceil(0.1 * m(t)) * 6));
  // The store is K and V only (nothing hashed), in host memory; the device holds the static rings (2 sinks + 3 local + 1 slots), as laid out.
  assert.is(few.bytes.cache, few.bytes.layout);
  assert.is(few.bytes.host, 2 * 4 * 2 * (prefill + steps) * 13);
  assert.is(few.bytes.cache - few.bytes.host, 2 * 4 * 2 * 6 * 13);
});

test('bad topk values are refused by name: the settings, the offload option, the CLI flag', async () => {
  const good = (await magicpigSettings({}, 16));
  for (const bad of [{ keys: 0 }, { keys: -3 }, { keys: 2.5 }, { keys: NaN }] as TopKChoice[]) {
    assert.throws(() => checkMagicPigSettings({ ...good, topk: bad }), /topk keys must be an integer ≥ 1/);
  }
  for (const bad of [{ fraction: 0 }, { fraction: 1.5 }, { fraction: -0.1 }] as TopKChoice[]) assert.throws(() => checkTopk(bad), /topk fraction must be in \(0, 1\]/);
  assert.throws(() => checkTopk({} as TopKChoice), /topk must be \{ keys \} or \{ fraction \}/);
  const kinds = [[true, true]];
  assert.throws(() => offloadSettings({ topk: { keys: 0 } }, kinds, 16, 'f32'), (e: Error & { field?: string }) => e.field === 'offload.topk' && /≥ 1/.test(e.message));
  assert.throws(() => offloadSettings({ topk: { keys: 4 }, K: 10 }, kinds, 16, 'f32'), /K and L do not apply/);
  assert.equal(offloadSettings({ topk: { keys: 4 } }, kinds, 16, 'f32').settings.topk, { keys: 4 });
  assert.equal(topkFlag('40'), { keys: 40 });
  assert.equal(topkFlag('2.5%'), { fraction: 0.025 });
  assert.equal(topkFlag('100%'), { fraction: 1 });
  for (const bad of ['0', '-3', '2.5', 'abc', '0%', '150%', '', '1e3']) assert.throws(() => topkFlag(bad), /--topk takes N .* or P%/);
  assert.throws(() => offloadFlags({ topk: '4', offload: '10,150' }), /give --topk or --offload 10,150, not both/);
  assert.equal(offloadFlags({ topk: '4', offload: 'default', 'dense-layers': '1' }), { topk: { keys: 4 }, denseLayers: [1] });
  assert.throws(() => offloadFlags({ 'dense-layers': '1' }), /--dense-layers goes with --offload or --topk/);
});

test('bundled model: offload.topk attends k of the offloaded keys per step, bytes as kvMemory projects', async () => {
  const model = await loadModel('fixtures/duet-passkey', { device: 'cpu', offload: { topk: { keys: 5 } } });
  try {
    assert.match(model.info.heads, /retrieval heads offloaded \(exact top-5 keys, 4 sinks \+ 64 local\)/);
    const prompt = Array.from({ length: 300 }, (_, i) => 3 + ((i * 7 + (i >> 3)) % 40));
    const g = model.generate(prompt, { maxTokens: 4, stop: [] });
    for await (const _ of g) { /* drain */ }
    const r = await g.result();
    assert.equal(r.kv.sampledFraction, [0, 1, 2].map((t) => 5 / (300 + t - 68)));
    assert.is(r.kv.offloaded, kvMemory(model.info.config, { context: 304, offload: { topk: { keys: 5 } } }).offloaded_bytes);
  } finally { await model.dispose(); }
});

test.run();
