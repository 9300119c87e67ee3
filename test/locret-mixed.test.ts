// Locret on some heads, full and streaming attention on others, through the engine: every placement
// against the float64 reference model (test/reference/model.ts), where a locret head sees the
// positions its layer's retaining head kept; the method pattern file format and its errors; the
// library's head options (locret alone, on a pattern's streaming heads, by name) and their errors.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { referenceLogits } from './reference/model.ts';
import { assertClose } from './helpers/conformance.ts';
import { sharedGpu, tempCheckpoint } from './helpers/engine.ts';
import { ids, perPlacementOf, SPEC, WINDOW } from './helpers/mixed-heads.ts';
import { maxAbsDiff } from './reference/kernels.ts';
import { Engine, type Placement } from '../src/engine/engine.ts';
import { initRetainingHeads, retainingHeadShape } from '../src/kv/locret/retaining-heads.ts';
import { formatHeadMethods, parseHeadMethods } from '../src/attention/pattern.ts';
import { resolveHeads } from '../src/api/heads.ts';

const GPU = await sharedGpu();
const TOL = 2e-3;
// Layer 0: one head of each method; layer 1: locret beside streaming; layer 2: all locret.
const METHODS = [['full', 'locret', 'streaming'], ['locret', 'streaming', 'locret'], ['locret', 'locret', 'locret']];
const LOCRET_HEADS = METHODS.flat().filter((m) => m === 'locret').length;

const test = suite('locret mixed with other methods');
let ckpt: Awaited<ReturnType<typeof tempCheckpoint>>;
test.before(async () => { ckpt = await tempCheckpoint(SPEC); });
const perPlacement = perPlacementOf(test, GPU);

function engine(placement: Placement, o: { budget: number; stabilizers: number; methods?: string[][] }) {
  const heads = initRetainingHeads(retainingHeadShape(ckpt.config, 12), ckpt.config.numLayers, 5);
  return {
    heads,
    make: () => Engine.create(ckpt.config, ckpt.weights, {
      device: placement === 'cpu' ? 'cpu' : 'gpu', placement, acquireGpu: sharedGpu,
      methods: o.methods ?? METHODS, window: WINDOW, locret: { budget: o.budget, stabilizers: o.stabilizers, heads },
    }),
  };
}

perPlacement('full + streaming + locret heads in one layer match the reference: context 40, chunks 7 and 40, then decode', async (placement) => {
  const prompt = ids(40, 4), decode = [5, 250, 17];
  const all = [...prompt, ...decode];
  const budget = 6, stabilizers = 2;
  const { heads, make } = engine(placement, { budget, stabilizers });
  const e = await make();
  try {
    for (const chunk of [7, 40]) {
      const chunks = [...Array.from({ length: Math.ceil(prompt.length / chunk) }, (_, c) => Math.min(chunk, prompt.length - c * chunk)), 1, 1, 1];
      const mask = { kinds: METHODS.map((r) => r.map((m) => m !== 'streaming')), ...WINDOW, methods: METHODS, locret: { budget, stabilizers, heads, chunks } };
      const reference = referenceLogits(ckpt.config, ckpt.weights, all, mask);
      if (chunk === 7) {
        // Not vacuous: full attention on the locret heads, or another budget, gives other logits.
        const asFull = referenceLogits(ckpt.config, ckpt.weights, all, { ...mask, methods: METHODS.map((r) => r.map((m) => (m === 'locret' ? 'full' : m))) });
        assert.ok(maxAbsDiff(asFull[all.length - 1], reference[all.length - 1]) > 20 * TOL, 'eviction changes the logits');
        const wider = referenceLogits(ckpt.config, ckpt.weights, all, { ...mask, locret: { ...mask.locret, budget: 9 } });
        assert.ok(maxAbsDiff(wider[all.length - 1], reference[all.length - 1]) > 20 * TOL, 'the budget changes the logits');
      }
      const s = e.newSession(all.length, chunk);
      assertClose(await s.forward(prompt), reference[prompt.length - 1], `${placement}, chunk ${chunk}: prefill`, TOL);
      for (let i = 0; i < decode.length; i++) {
        assertClose(await s.forward([decode[i]]), reference[prompt.length + i], `${placement}, chunk ${chunk}: decode ${i}`, TOL);
      }
      // Exact bytes: K and V of `budget` positions per locret KV head; rings of sink + recent per streaming head.
      const kv = s.kvMemory();
      assert.is(kv.byMethod.locret, 2 * 4 * SPEC.headDim * budget * LOCRET_HEADS, 'locret bytes');
      assert.is(kv.byMethod.streaming, 2 * 4 * SPEC.headDim * (WINDOW.sink + WINDOW.recent) * 2, 'streaming bytes');
      assert.is(kv.byMethod.full, 2 * 4 * SPEC.headDim * s['capacity'] * 1, 'full bytes');
      s.dispose();
    }
  } finally { e.dispose(); }
});

test('engine: methods are refused with kinds, of the wrong shape, naming an unknown method, or locret without its option', async () => {
  const fails = (o: object) => Engine.create(ckpt.config, ckpt.weights, { device: 'cpu', placement: 'cpu', window: WINDOW, ...o }).then((e) => { e.dispose(); return ''; }, (e: Error) => e.message);
  const { heads } = engine('cpu', { budget: 4, stabilizers: 1 });
  const locret = { budget: 4, stabilizers: 1, heads };
  assert.match(await fails({ methods: METHODS, locret, kinds: [[true, true, true], [true, true, true], [true, true, true]] }), /^methods cannot be combined with kinds/);
  assert.match(await fails({ methods: METHODS.slice(1), locret }), /^methods shape 2×3 does not match the model \(3 layers × 3 KV heads\)/);
  assert.match(await fails({ methods: [['full', 'lru', 'full'], ...METHODS.slice(1)], locret }), /^methods unknown KV method "lru" \(registered: full, streaming, locret, magicpig\)/);
  assert.match(await fails({ methods: METHODS }), /^methods name locret heads, which need the locret option/);
  assert.match(await fails({ methods: METHODS.map((r) => r.map(() => 'full')), locret }), /^locret is given, but no head's method is locret/);
  assert.match(await fails({ locret, kinds: METHODS.map((r) => r.map((m) => m !== 'streaming')) }), /^locret on every head cannot be combined with streaming heads; to mix them name each head's method/);
  assert.is(await fails({ methods: METHODS.map((r) => r.map((m) => (m === 'locret' ? 'full' : m))) }), '', 'full and streaming by name: no locret option needed');
});

test('method pattern files: parse, format round trip, and errors naming the file, line and column', () => {
  const text = '# layer 0\nfull\tlocret  streaming\n\nlocret streaming locret\nlocret locret locret # all evicting\n';
  assert.equal(parseHeadMethods(text, 3, 3, 'p/kv_methods.tsv'), METHODS);
  assert.equal(parseHeadMethods(formatHeadMethods(METHODS), 3, 3), METHODS);
  const err = (t: string, layers = 3, heads = 3) => { try { parseHeadMethods(t, layers, heads, 'p/kv_methods.tsv'); return ''; } catch (e) { return (e as Error).message; } };
  assert.match(err(''), /^p\/kv_methods\.tsv: no method names \(expected one line per layer, one name per KV head: full, streaming, locret, magicpig\)/);
  assert.match(err('full full full\n'), /^p\/kv_methods\.tsv: has 1 lines of methods \(layers\), the model has 3 layers/);
  assert.match(err('full full full\nfull full\nfull full full\n'), /^p\/kv_methods\.tsv: line 2 names 2 methods, the model has 3 KV heads per layer/);
  assert.match(err('full full full\nfull Full full\nfull full full\n'), /^p\/kv_methods\.tsv: line 2, column 2: unknown KV method "Full" \(registered: full, streaming, locret, magicpig\)/);
});

test('head options: locret alone, on a pattern\'s streaming heads, by name; errors name the field', () => {
  const pattern = { alphas: [[0.9, 0.1, 0.2], [0.3, 0.8, 0.05], [0.7, 0.6, 0.5]], sink: 2, recent: 8, config: {} };
  const alone = resolveHeads({ locret: { budget: 16 } }, 3, 3);
  assert.equal(alone.methods, [['locret', 'locret', 'locret'], ['locret', 'locret', 'locret'], ['locret', 'locret', 'locret']]);
  assert.equal(alone.locret, { budget: 16, stabilizers: 4 }, 'stabilizers default to budget/4');
  assert.is(alone.window, undefined);
  const duo = resolveHeads({ pattern, sparsity: 0.5, locret: { budget: 16, stabilizers: 3 } }, 3, 3);
  // Sparsity 0.5 of 9 heads: the 5 lowest α (0.05, 0.1, 0.2, 0.3, 0.5) stream under DuoAttention; here they evict.
  assert.equal(duo.methods, [['full', 'locret', 'locret'], ['locret', 'full', 'locret'], ['full', 'full', 'locret']]);
  assert.match(duo.description, /^pattern: 5\/9 KV heads locret \(budget 16, stabilizers 3\), the rest full$/);
  const named = resolveHeads({ methods: METHODS, window: WINDOW, locret: { budget: 8, stabilizers: 0 } }, 3, 3);
  assert.equal(named.kinds, [[true, true, false], [true, false, true], [true, true, true]]);
  assert.equal(named.window, WINDOW);
  const err = (o: object) => { try { resolveHeads(o, 3, 3); return ''; } catch (e) { return (e as Error).message; } };
  assert.match(err({ locret: { budget: 0 } }), /^locret\.budget must be a positive integer \(got 0\)/);
  assert.match(err({ locret: { budget: 4, stabilizers: 5 } }), /^locret\.stabilizers must be an integer from 0 to the budget 4 \(got 5\)/);
  assert.match(err({ locret: { budget: 4 }, streamingOnly: true, window: WINDOW }), /^streamingOnly cannot be combined with locret/);
  assert.match(err({ methods: METHODS, pattern, locret: { budget: 4 } }), /^methods cannot be combined with pattern/);
  assert.match(err({ methods: METHODS, locret: { budget: 4 } }), /^methods name streaming heads, which need window\.sink and window\.recent/);
  assert.match(err({ methods: METHODS, window: WINDOW }), /^methods name locret heads, which need the locret option/);
  assert.match(err({ methods: [['full', 'x', 'full'], ...METHODS.slice(1)], window: WINDOW, locret: { budget: 4 } }), /^methods\[0\]\[1\] unknown KV method "x"/);
  assert.match(err({ methods: [['full'], ...METHODS.slice(1)], window: WINDOW }), /^methods\[0\] must name 3 KV heads' methods \(got 1\)/);
  assert.match(err({ pattern, locret: { budget: 4 }, compensation: true }), /^compensation needs streaming heads/);
});

test.run();
