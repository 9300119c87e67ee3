// RazorAttention's compensation token through the engine: every placement against the float64
// reference model with compensated streaming heads, chunked prefill = decode, the state in the KV
// bytes, option errors; and the bundled model (fixtures/duet-passkey) still recalls its passkey.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { referenceLogits } from './reference/model.ts';
import { assertClose } from './helpers/conformance.ts';
import { makeEngine, sharedGpu, tempCheckpoint } from './helpers/engine.ts';
import { ids, KINDS, perPlacementOf, SPEC, WINDOW } from './helpers/mixed-heads.ts';
import { maxAbsDiff } from './reference/kernels.ts';
import { resolveHeads } from '../src/api/heads.ts';
import { comparisonConfigs, evaluate, loadModel, loadPattern, nodeModelFiles } from '../src/node.ts';
import { inFlags } from '../src/cli/flags.ts';

const GPU = await sharedGpu();
const TOL = 2e-3;

const test = suite('compensation token runtime');
let ckpt: Awaited<ReturnType<typeof tempCheckpoint>>;
test.before(async () => { ckpt = await tempCheckpoint(SPEC); });
const perPlacement = perPlacementOf(test, GPU);

perPlacement('matches the compensated reference: context 40 (sink+recent = 11), chunks 1/7/64, then decode', async (placement) => {
  const prompt = ids(40, 4), decode = [5, 250, 17];
  const all = [...prompt, ...decode];
  const reference = referenceLogits(ckpt.config, ckpt.weights, all, { kinds: KINDS, ...WINDOW, compensation: true });
  // Not vacuous: without the token the logits differ well beyond the tolerance.
  const plain = referenceLogits(ckpt.config, ckpt.weights, all, { kinds: KINDS, ...WINDOW });
  assert.ok(maxAbsDiff(plain[all.length - 1], reference[all.length - 1]) > 20 * TOL, 'compensation changes the logits');
  const engine = await makeEngine(ckpt, placement, KINDS, WINDOW, true);
  try {
    for (const chunk of [1, 7, 64]) {
      const s = engine.newSession(all.length, chunk);
      assertClose(await s.forward(prompt), reference[prompt.length - 1], `${placement}, chunk ${chunk}: prefill`, TOL);
      for (let i = 0; i < decode.length; i++) {
        assertClose(await s.forward([decode[i]]), reference[prompt.length + i], `${placement}, chunk ${chunk}: decode ${i}`, TOL);
      }
      s.dispose();
    }
  } finally { engine.dispose(); }
});

test('the sums are part of the streaming KV bytes; off leaves the logits exactly as without the option [cpu]', async () => {
  const prompt = ids(30, 2);
  const on = await makeEngine(ckpt, 'cpu', KINDS, WINDOW, true), off = await makeEngine(ckpt, 'cpu', KINDS, WINDOW, false);
  const none = await makeEngine(ckpt, 'cpu', KINDS, WINDOW);
  try {
    const [a, b, c] = [on, off, none].map((e) => e.newSession(64, 16));
    const [la, lb, lc] = [await a.forward(prompt), await b.forward(prompt), await c.forward(prompt)];
    assert.equal(Array.from(lb), Array.from(lc), 'compensation false = no option, bit for bit');
    assert.ok(maxAbsDiff(la, lb) > 1e-3, 'compensation on changes the logits');
    // Two sums of headDim floats per streaming KV head.
    const streamingKvHeads = KINDS.flat().filter((r) => !r).length;
    assert.is(a.kvMemory().streamingBytes - b.kvMemory().streamingBytes, streamingKvHeads * 2 * SPEC.headDim * 4);
    for (const s of [a, b, c]) s.dispose();
  } finally { for (const e of [on, off, none]) e.dispose(); }
});

test('option errors: compensation without streaming heads, or not a boolean', () => {
  assert.throws(() => resolveHeads({ compensation: true }, 3, 3), /compensation needs streaming heads/);
  assert.throws(() => resolveHeads({ compensation: 'yes' as unknown as boolean, streamingOnly: true, window: WINDOW }, 3, 3), /compensation must be true or false/);
  const r = resolveHeads({ streamingOnly: true, window: WINDOW, compensation: true }, 3, 3);
  assert.ok(r.compensation && /compensation token/.test(r.description), r.description);
  // duet eval --compensation: each streaming configuration followed by its "+comp" twin.
  const configs = comparisonConfigs({ streamingOnly: true, window: WINDOW, compensation: true }, 3, 3);
  assert.equal(configs.map((c) => [c.name, c.compensation ?? false]), [['full', false], ['streaming-only', false], ['streaming-only+comp', true]]);
  assert.throws(() => comparisonConfigs({ compensation: true }, 3, 3), /needs a streaming configuration/);
  assert.is(inFlags('needs streaming heads (pattern or streamingOnly)'), 'needs streaming heads (--pattern or --streaming-only)');
});

test('bundled model, its pattern at 50% streaming with sink 4 / recent 32 and compensation: still recalls the passkey', async () => {
  const model = await loadModel(new URL('../fixtures/duet-passkey', import.meta.url).pathname, { device: 'cpu' });
  try {
    const { numLayers: L, numKvHeads: H } = model.info.config;
    const pattern = await loadPattern(nodeModelFiles(new URL('../fixtures/duet-passkey-pattern', import.meta.url).pathname), L, H);
    const { rows } = await evaluate(model, {
      configs: [{ name: 'pattern@0.5+comp', pattern, sparsity: 0.5, window: { sink: 4, recent: 32 }, compensation: true }],
      tasks: ['passkey'], lengths: [1024], depths: [0.25, 0.5, 0.75], samples: 2, seed: 7, restoreHeads: false,
    });
    const mean = rows.reduce((a, r) => a + r.accuracy, 0) / rows.length;
    assert.ok(mean >= 0.8, `passkey accuracy ${(mean * 100).toFixed(0)}%: ${JSON.stringify(rows.map((r) => [r.depth, r.accuracy]))}`);
    assert.match(model.info.heads, /compensation token/);
  } finally { await model.dispose(); }
});

test.run();
