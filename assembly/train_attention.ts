// Causal GQA attention for training (forward keeping the probabilities, and backward), one sequence
// at a time. Queries go in blocks of BR rows; a block only meets keys [0, end of block), so the
// masked upper triangle costs nothing beyond the diagonal blocks. Products go through gemmAdd;
// softmax and its backward are f32x4. Layouts: q, o [T][H][hd]; k, v [T][KV][hd];
// probs [H][T][T] (row i holds P[i][0..i], zeros after).
import { gemmAdd } from './matmul';
import { expv, exps, hmax, hsum } from './simd';

const BR: i32 = 64;

/** Scratch floats the two kernels need. */
export function trainAttentionScratchFloats(T: i32, hd: i32): i32 {
  return hd * T + BR * T + T * BR + hd * BR;
}

// dst[c][r] = src[r·lds + c] for r < rows, c < cols (dst dense cols × rows).
function transposeTo(dst: usize, src: usize, rows: i32, cols: i32, lds: i32): void {
  for (let r = 0; r < rows; r++) {
    const s = src + ((<usize>(r * lds)) << 2);
    for (let c = 0; c < cols; c++) store<f32>(dst + ((<usize>(c * rows + r)) << 2), load<f32>(s + ((<usize>c) << 2)));
  }
}

// Row softmax of scale·row[0..n) in place, over the visible keys only: with a streaming window,
// keys in [sink, n − recent) are hidden (zero probability). row[n..m) set to 0.
function softmaxRow(row: usize, n: i32, m: i32, scale: f32, sink: i32, recent: i32): void {
  const h0 = sink, h1 = n - recent;
  if (h1 > h0) {
    // Hidden keys get -inf scores (exp → 0 below).
    for (let j = h0; j < h1; j++) store<f32>(row + ((<usize>j) << 2), <f32>-Infinity);
  }
  const sc = f32x4.splat(scale);
  const n4 = n & ~3;
  let mv = f32x4.splat(-Infinity);
  for (let j = 0; j < n4; j += 4) {
    const p = row + ((<usize>j) << 2);
    const s = f32x4.mul(v128.load(p), sc);
    v128.store(p, s);
    mv = f32x4.max(mv, s);
  }
  let mx = hmax(mv);
  for (let j = n4; j < n; j++) {
    const p = row + ((<usize>j) << 2);
    const s = load<f32>(p) * scale;
    store<f32>(p, s);
    mx = max(mx, s);
  }
  const mS = f32x4.splat(mx);
  let sv = f32x4.splat(0);
  for (let j = 0; j < n4; j += 4) {
    const p = row + ((<usize>j) << 2);
    const e = expv(f32x4.sub(v128.load(p), mS));
    v128.store(p, e);
    sv = f32x4.add(sv, e);
  }
  let sum = hsum(sv);
  for (let j = n4; j < n; j++) {
    const p = row + ((<usize>j) << 2);
    const e = exps(load<f32>(p) - mx);
    store<f32>(p, e);
    sum += e;
  }
  const inv: f32 = <f32>1 / sum;
  const iv = f32x4.splat(inv);
  for (let j = 0; j < n4; j += 4) { const p = row + ((<usize>j) << 2); v128.store(p, f32x4.mul(v128.load(p), iv)); }
  for (let j = n4; j < n; j++) { const p = row + ((<usize>j) << 2); store<f32>(p, load<f32>(p) * inv); }
  if (m > n) memory.fill(row + ((<usize>n) << 2), 0, (<usize>(m - n)) << 2);
}

/**
 * o = softmax(scale·q·kᵀ, causal)·v; probs kept. o is overwritten. With a streaming window the
 * query at i sees only j < sink or j > i − recent (pass recent ≥ T for full attention).
 */
export function trainAttentionForward(o: usize, probs: usize, q: usize, k: usize, v: usize,
  T: i32, H: i32, KV: i32, hd: i32, scale: f32, sink: i32, recent: i32, scratch: usize): void {
  const group = H / KV;
  const vt = scratch;
  const qs = H * hd, ks = KV * hd;
  memory.fill(o, 0, (<usize>(T * qs)) << 2);
  for (let h = 0; h < H; h++) {
    const g = h / group;
    transposeTo(vt, v + ((<usize>(g * hd)) << 2), T, hd, ks);
    const P = probs + ((<usize>h * <usize>T * <usize>T) << 2);
    memory.fill(P, 0, (<usize>T * <usize>T) << 2);
    for (let i0 = 0; i0 < T; i0 += BR) {
      const rows = min(BR, T - i0), i1 = i0 + rows;
      const Pb = P + ((<usize>i0 * <usize>T) << 2);
      gemmAdd(Pb, T, q + ((<usize>(i0 * qs + h * hd)) << 2), qs, k + ((<usize>(g * hd)) << 2), ks, rows, hd, i1);
      for (let r = 0; r < rows; r++) softmaxRow(Pb + ((<usize>(r * T)) << 2), i0 + r + 1, i1, scale, sink, recent);
      gemmAdd(o + ((<usize>(i0 * qs + h * hd)) << 2), qs, Pb, T, vt, T, rows, i1, hd);
    }
  }
}

/** dq, dk, dv += gradients of trainAttentionForward given dO (probs from the forward pass; hidden keys have P = 0). */
export function trainAttentionBackward(dq: usize, dk: usize, dv: usize, dO: usize, probs: usize, q: usize, k: usize, v: usize,
  T: i32, H: i32, KV: i32, hd: i32, scale: f32, scratch: usize): void {
  const group = H / KV;
  const kt = scratch;
  const dS = kt + ((<usize>(hd * T)) << 2);
  const bt = dS + ((<usize>(BR * T)) << 2);
  const xt = bt + ((<usize>(T * BR)) << 2);
  const qs = H * hd, ks = KV * hd;
  const sc = f32x4.splat(scale);
  for (let h = 0; h < H; h++) {
    const g = h / group;
    const kOff: usize = (<usize>(g * hd)) << 2;
    transposeTo(kt, k + kOff, T, hd, ks);
    const P = probs + ((<usize>h * <usize>T * <usize>T) << 2);
    for (let i0 = 0; i0 < T; i0 += BR) {
      const rows = min(BR, T - i0), i1 = i0 + rows;
      const Pb = P + ((<usize>i0 * <usize>T) << 2);
      const qOff: usize = (<usize>(i0 * qs + h * hd)) << 2;
      // dP = dO_b · V[0:i1]ᵀ, then dS = P ⊙ (dP − Σ P·dP) · scale.
      memory.fill(dS, 0, (<usize>(rows * T)) << 2);
      gemmAdd(dS, T, dO + qOff, qs, v + kOff, ks, rows, hd, i1);
      for (let r = 0; r < rows; r++) {
        const n = i0 + r + 1, n4 = n & ~3;
        const pr = Pb + ((<usize>(r * T)) << 2), dr = dS + ((<usize>(r * T)) << 2);
        let dv4 = f32x4.splat(0);
        for (let j = 0; j < n4; j += 4) { const o = (<usize>j) << 2; dv4 = f32x4.add(dv4, f32x4.mul(v128.load(pr + o), v128.load(dr + o))); }
        let dot = hsum(dv4);
        for (let j = n4; j < n; j++) { const o = (<usize>j) << 2; dot += load<f32>(pr + o) * load<f32>(dr + o); }
        const dS4 = f32x4.splat(dot);
        for (let j = 0; j < n4; j += 4) {
          const o = (<usize>j) << 2;
          v128.store(dr + o, f32x4.mul(f32x4.mul(v128.load(pr + o), f32x4.sub(v128.load(dr + o), dS4)), sc));
        }
        for (let j = n4; j < n; j++) { const o = (<usize>j) << 2; store<f32>(dr + o, load<f32>(pr + o) * (load<f32>(dr + o) - dot) * scale); }
        if (i1 > n) memory.fill(dr + ((<usize>n) << 2), 0, (<usize>(i1 - n)) << 2);
      }
      // dQ_b += dS · K[0:i1]
      gemmAdd(dq + qOff, qs, dS, T, kt, T, rows, i1, hd);
      // dK[0:i1] += dSᵀ · Q_b
      transposeTo(bt, dS, rows, i1, T);
      transposeTo(xt, q + qOff, rows, hd, qs);
      gemmAdd(dk + kOff, ks, bt, rows, xt, rows, i1, rows, hd);
      // dV[0:i1] += P_bᵀ · dO_b
      transposeTo(bt, Pb, rows, i1, T);
      transposeTo(xt, dO + qOff, rows, hd, qs);
      gemmAdd(dv + kOff, ks, bt, rows, xt, rows, i1, rows, hd);
    }
  }
}
