// Float64 reference of the streaming method: query i attends the keys j ≤ i with j < sink or
// j > i − recent; with compensation also one token with the mean key and mean value of the positions
// it no longer sees, [sink, i − recent], whose logit gets ln n for the n positions it stands for.
// Every key and value (the chunk's own, and those the compensation means add) is the row as a ring
// of the KV dtype stores it (the reference encoder the kernels match bit for bit). Decoupled heads
// (shape.maps): a query head reads its key head's keys and its value head's values.
import { kvRowBytes } from '../../backend/kv-dtype.js';
import { valueHeadsOf } from '../method.js';
import { attendTokens, RefHistory, storedAs, type KvReference, type RefToken } from '../reference.js';

export const reference: KvReference = {
  variants: [
    { label: 'sink 3 recent 8', settings: { window: { sink: 3, recent: 8 }, compensation: false } },
    { label: 'sink 3 recent 8, compensation', settings: { window: { sink: 3, recent: 8 }, compensation: true } },
    { label: 'sink 0 recent 5, compensation', settings: { window: { sink: 0, recent: 5 }, compensation: true } },
    { label: 'sink 4 recent 1', settings: { window: { sink: 4, recent: 1 }, compensation: false } },
    { label: 'sink 3 recent 8, f16', settings: { window: { sink: 3, recent: 8 }, compensation: false, kvDtype: 'f16' } },
    { label: 'sink 3 recent 8, compensation, f16', settings: { window: { sink: 3, recent: 8 }, compensation: true, kvDtype: 'f16' } },
    { label: 'sink 3 recent 8, int8', settings: { window: { sink: 3, recent: 8 }, compensation: false, kvDtype: 'int8' } },
    { label: 'sink 0 recent 5, compensation, int8', settings: { window: { sink: 0, recent: 5 }, compensation: true, kvDtype: 'int8' } },
    { label: 'sink 4 recent 1, compensation, int8', settings: { window: { sink: 4, recent: 1 }, compensation: true, kvDtype: 'int8' } },
  ],
  open(shape, settings) {
    const { sink, recent } = settings.window, D = shape.headDim;
    const stored = storedAs(settings.kvDtype, D);
    const past = new RefHistory(shape, stored);
    return {
      attend(q, k, v, rows, pastLen) {
        const all = past.withChunk(k, v, rows, pastLen);
        return attendTokens(q, rows, pastLen, shape, (i, h, vh) => {
          const seen: RefToken[] = [];
          for (let j = 0; j <= i; j++) if (j < sink || j > i - recent) seen.push({ k: all.k[j][h], v: all.v[j][vh], bias: 0 });
          const n = i - recent + 1 - sink;
          if (settings.compensation && n > 0) {
            const km = new Float64Array(D), vm = new Float64Array(D);
            for (let j = sink; j <= i - recent; j++) for (let d = 0; d < D; d++) { km[d] += all.k[j][h][d] / n; vm[d] += all.v[j][h][d] / n; }
            seen.push({ k: km, v: vm, bias: Math.log(n) });
          }
          return seen;
        });
      },
      append(k, v, rows, pastLen) { past.put(k, v, rows, pastLen); },
    };
  },
  bytes(shape, capacity, settings) {
    const { sink, recent } = settings.window;
    const slots = Math.min(capacity, sink + recent);
    const ring = slots * kvRowBytes(shape.headDim, settings.kvDtype);
    return (shape.numKvHeads + valueHeadsOf(shape)) * ring + shape.numKvHeads * (settings.compensation ? 2 * 4 * shape.headDim : 0);
  },
};
