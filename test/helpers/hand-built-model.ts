// A checkpoint-free training model built by hand for identification tests (test/identify.test.ts,
// test/head-scorers.test.ts): one purely local head and one head that copies from far back.
import { Arena } from '../../src/train/arena.ts';
import { cpuTrainModel, type TrainModel } from '../../src/train/model.ts';

/** The token head 1 looks for. */
export const MARKER = 3;

/**
 * hidden 8, 1 layer, 2 heads = 2 KV heads of dim 4, no MLP. Every embedding has the same norm and
 * a constant coordinate 7; the marker token also has coordinate 6. Head 0: q = k = c·(e0 + e1) for every
 * token, so RoPE makes the score peak at distance 0 (a purely local head). Head 1: q = c·e1
 * constant, k = c·e1 only at the marker (the slow rotary pair), so it attends to the marker
 * wherever it is (a copy-from-far-back head).
 */
export async function handBuiltModel(maxRows = 64): Promise<TrainModel> {
  const ar = await Arena.create(64 << 20);
  const m = cpuTrainModel(ar, { vocab: 12, hidden: 8, layers: 1, heads: 2, kvHeads: 2, headDim: 4, intermediate: 4, eps: 1e-5, ropeTheta: 10000, maxRows }, { gated: true });
  const p = m.p, L = p.layers[0], c = 24;
  p.embed.fill(0);
  for (let t = 0; t < 12; t++) {
    // Equal norms, so RoPE alone decides where head 0 looks.
    const raw = Array.from({ length: 6 }, (_, i) => Math.sin(t * 1.7 + i * 2.3));
    const norm = Math.hypot(...raw);
    raw.forEach((x, i) => { p.embed[t * 8 + i] = (x / norm) * Math.sqrt(3); });
    p.embed[t * 8 + 7] = 1;
  }
  p.embed[MARKER * 8 + 6] = 3;
  p.finalNorm.fill(1); L.inputNorm.fill(1); L.postNorm.fill(1);
  for (const w of [L.wq, L.wk, L.wv, L.wo, L.wGate, L.wUp, L.wDown]) w.fill(0);
  const set = (w: Float32Array, row: number, col: number, value: number) => { w[row * 8 + col] = value; };
  set(L.wq, 0, 7, c); set(L.wq, 1, 7, c); set(L.wk, 0, 7, c); set(L.wk, 1, 7, c);   // head 0: local
  set(L.wq, 5, 7, c); set(L.wk, 5, 6, c);                                              // head 1: finds the marker
  for (let i = 0; i < 4; i++) { set(L.wv, i, i, 1); set(L.wv, 4 + i, i, 1); }
  for (let i = 0; i < 8; i++) L.wo[i * 8 + i] = 1;
  return m;
}

