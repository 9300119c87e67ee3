// Float64 reference of the full method: causal attention over every position, each key and value
// row as the KV dtype stores it (src/backend/kv-dtype.ts's reference encoder, which the kernels
// match bit for bit), so the only difference left to the method is f32 arithmetic.
import { kvRowBytes } from '../../backend/kv-dtype.js';
import { valueHeadsOf } from '../method.js';
import { attendTokens, RefHistory, storedAs, type KvReference } from '../reference.js';

export const reference: KvReference = {
  variants: [
    { label: 'f32', settings: { kvDtype: 'f32' } },
    { label: 'f16', settings: { kvDtype: 'f16' } },
    { label: 'int8', settings: { kvDtype: 'int8' } },
  ],
  open(shape, settings) {
    const stored = storedAs(settings.kvDtype, shape.headDim);
    const past = new RefHistory(shape, stored);
    return {
      attend(q, k, v, rows, pastLen) {
        const all = past.withChunk(k, v, rows, pastLen);
        return attendTokens(q, rows, pastLen, shape, (i, h, vh) =>
          Array.from({ length: i + 1 }, (_, j) => ({ k: all.k[j][h], v: all.v[j][vh], bias: 0 })));
      },
      append(k, v, rows, pastLen) { past.put(k, v, rows, pastLen); },
    };
  },
  bytes(shape, capacity, settings) {
    return (shape.numKvHeads + valueHeadsOf(shape)) * capacity * kvRowBytes(shape.headDim, settings.kvDtype);
  },
};
