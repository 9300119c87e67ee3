// The KV methods by name. A layer's heads are grouped by method in this order (so the groups'
// outputs are summed in a fixed order), and every method here runs through test/kv-methods.test.ts.
import type { KvMethod } from './method.js';
import { fullMethod } from './full/method.js';
import { streamingMethod } from './streaming/method.js';
import { locretMethod } from './locret/method.js';
import { magicpigMethod } from './magicpig/method.js';

export const KV_METHODS: readonly KvMethod[] = [fullMethod, streamingMethod, locretMethod, magicpigMethod];

/** The method of each (layer, KV head), by name. */
export type HeadMethods = string[][];

export function kvMethod(name: string): KvMethod {
  const m = KV_METHODS.find((x) => x.name === name);
  if (!m) throw new Error(`unknown KV method "${name}" (registered: ${KV_METHODS.map((x) => x.name).join(', ')})`);
  return m;
}

/** DuoAttention's head kinds (true = retrieval) as method names: retrieval heads full, the rest streaming. */
export function methodsOfKinds(kinds: ReadonlyArray<ReadonlyArray<boolean>>): HeadMethods {
  return kinds.map((row) => row.map((retrieval) => (retrieval ? fullMethod.name : streamingMethod.name)));
}

/**
 * The heads with MagicPIG's offloading: retrieval heads magicpig, except in `denseLayers` (full);
 * streaming heads stay streaming.
 */
export function offloadedMethods(kinds: ReadonlyArray<ReadonlyArray<boolean>>, denseLayers: readonly number[] = []): HeadMethods {
  return kinds.map((row, l) => row.map((retrieval) => (!retrieval ? streamingMethod.name : denseLayers.includes(l) ? fullMethod.name : magicpigMethod.name)));
}

/** One layer's KV heads grouped by method (registry order; heads ascending within a group). */
export function groupHeads(row: readonly string[]): Array<{ method: KvMethod; kvHeads: number[] }> {
  for (const name of row) kvMethod(name);
  return KV_METHODS.map((method) => ({ method, kvHeads: row.flatMap((n, h) => (n === method.name ? [h] : [])) }))
    .filter((g) => g.kvHeads.length > 0);
}
