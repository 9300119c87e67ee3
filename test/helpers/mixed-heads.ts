// The small GQA model and mixed head pattern the runtime tests of streaming heads share (duo-runtime,
// compensation-runtime), and their one-test-per-placement helper.
import type { Test } from 'uvu';
import { PLACEMENTS } from './engine.ts';
import { gpuTests } from './gpu-skip.ts';
import type { Placement } from '../../src/engine/engine.ts';

export const SPEC = { modelType: 'llama' as const, hidden: 72, intermediate: 100, layers: 3, heads: 6, kvHeads: 3, headDim: 24, vocab: 301, dtype: 'F32' as const, seed: 11 };
// Layer 0 mixed, layer 1 all streaming, layer 2 all retrieval.
export const KINDS = [[true, false, false], [false, false, false], [true, true, true]];
export const WINDOW = { sink: 3, recent: 8 };

/** `n` deterministic token ids below SPEC.vocab. */
export function ids(n: number, seed: number): number[] {
  return Array.from({ length: n }, (_, i) => (i * 131 + seed * 17 + 7) % 301);
}

/** One test per placement on `test`; those needing a GPU are reported as skipped without an adapter (a failure in CI). */
export function perPlacementOf(test: Test, gpu: { gpu: unknown; reason: string }) {
  const gpuTest = gpuTests(test, gpu.gpu !== null, gpu.reason);
  return (name: string, fn: (placement: Placement) => Promise<void>): void => {
    for (const placement of PLACEMENTS) (placement === 'cpu' ? test : gpuTest)(`${name} [${placement}]`, () => fn(placement));
  };
}
