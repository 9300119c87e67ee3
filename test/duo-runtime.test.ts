// DuoAttention runtime: mixed retrieval/streaming heads against the float64 reference with the
// streaming mask (j ≤ i and (j < sink or j > i − recent)), every placement, several prefill chunk
// sizes, contexts shorter and longer than sink + recent, GQA. Tolerance as in engine.test.ts.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { referenceLogits } from './reference/model.ts';
import { assertClose } from './helpers/conformance.ts';
import { makeEngine, PLACEMENTS, sharedGpu, tempCheckpoint } from './helpers/engine.ts';
import { gpuTests } from './helpers/gpu-skip.ts';
import { ids, KINDS, perPlacementOf, SPEC, WINDOW } from './helpers/mixed-heads.ts';

const GPU = await sharedGpu();
import { allHeads } from '../src/attention/pattern.ts';
import type { Placement } from '../src/engine/engine.ts';

const TOL = 2e-3;

const test = suite('DuoAttention runtime');
let ckpt: Awaited<ReturnType<typeof tempCheckpoint>>;
test.before(async () => { ckpt = await tempCheckpoint(SPEC); });
const perPlacement = perPlacementOf(test, GPU);
const gpuTest = gpuTests(test, GPU.gpu !== null, GPU.reason);

perPlacement('a pattern with every head retrieval equals full attention', async (placement) => {
  const prompt = ids(20, 1);
  const reference = referenceLogits(ckpt.config, ckpt.weights, prompt);
  const engine = await makeEngine(ckpt, placement, allHeads(3, 3, true), WINDOW);
  try {
    const s = engine.newSession(32, 7);
    assertClose(await s.forward(prompt), reference[prompt.length - 1], `${placement}: all-retrieval`, TOL);
    s.dispose();
  } finally { engine.dispose(); }
});

for (const length of [9, 40]) {
  perPlacement(`streaming heads match the masked reference: context ${length} (sink+recent = 11), chunks 1/7/64/whole, then decode`, async (placement) => {
    const prompt = ids(length, length);
    const decode = [5, 250, 17];
    const reference = referenceLogits(ckpt.config, ckpt.weights, [...prompt, ...decode], { kinds: KINDS, ...WINDOW });
    const engine = await makeEngine(ckpt, placement, KINDS, WINDOW);
    try {
      for (const chunk of [1, 7, 64, length]) {
        const s = engine.newSession(length + decode.length, chunk);
        assertClose(await s.forward(prompt), reference[length - 1], `${placement}, chunk ${chunk}: prefill`, TOL);
        for (let i = 0; i < decode.length; i++) {
          assertClose(await s.forward([decode[i]]), reference[length + i], `${placement}, chunk ${chunk}: decode ${i}`, TOL);
        }
        s.dispose();
      }
    } finally { engine.dispose(); }
  });
}

const PROMPT = ids(30, 3);

/** Greedy tokens after a prefill in chunks of 5 and in one chunk. */
async function chunkedAndWhole(placement: Placement): Promise<number[][]> {
  const engine = await makeEngine(ckpt, placement, KINDS, WINDOW);
  try {
    const runs: number[][] = [];
    for (const chunk of [5, 512]) runs.push((await engine.generate(PROMPT, { maxTokens: 10, prefillChunk: chunk })).tokens);
    return runs;
  } finally { engine.dispose(); }
}

test('decode after chunked prefill equals decode after one-shot prefill [cpu]', async () => {
  const [chunked, whole] = await chunkedAndWhole('cpu');
  assert.equal(chunked, whole);
});

gpuTest('split and gpu placements agree with cpu, chunked and one-shot', async () => {
  const runs: number[][] = [];
  for (const placement of PLACEMENTS) runs.push(...await chunkedAndWhole(placement));
  for (const r of runs.slice(1)) assert.equal(r, runs[0]);
});

perPlacement('the streaming cache does not grow with context; the retrieval cache grows linearly', async (placement) => {
  const engine = await makeEngine(ckpt, placement, KINDS, WINDOW);
  try {
    const sizes = [];
    for (const context of [16, 64, 256]) {
      const s = engine.newSession(context, 16);
      await s.forward(ids(context, 5));
      sizes.push(s.kvMemory());
      s.dispose();
    }
    const perToken = 2 * 4 /* retrieval KV heads */ * 24 * 4; // K and V, head_dim 24, f32
    const ringBytes = 2 * 5 /* streaming KV heads */ * (WINDOW.sink + WINDOW.recent) * 24 * 4;
    assert.equal(sizes.map((m) => m.streamingBytes), [ringBytes, ringBytes, ringBytes], placement);
    assert.equal(sizes.map((m) => m.retrievalBytes), [16 * perToken, 64 * perToken, 256 * perToken], placement);
    const cpuSide = placement === 'gpu' ? 0 : ringBytes;
    assert.is(sizes[2].byDevice.cpu, cpuSide + (placement === 'cpu' ? 256 * perToken : 0), `${placement}: CPU bytes`);
  } finally { engine.dispose(); }
});

gpuTest('the split placement does work on both devices', async () => {
  const engine = await makeEngine(ckpt, 'split', KINDS, WINDOW);
  try {
    const gpuBefore = engine.gpu!.dispatches, cpuBefore = engine.cpu.kernelCalls;
    await engine.generate(ids(12, 9), { maxTokens: 3 });
    assert.ok(engine.gpu!.dispatches > gpuBefore, 'GPU dispatches counted');
    assert.ok(engine.cpu.kernelCalls > cpuBefore, 'WASM kernel calls counted');
  } finally { engine.dispose(); }
});

test.run();
