// Forward and backward passes of the Llama block's pieces, for training. Matrix products go through
// the SIMD GEMM (Arena.gemmAdd, which computes X·Wᵀ with strides); the rest are plain loops. Every
// backward here has a finite-difference test (test/train-grad.test.ts). Shapes: rows are tokens of
// one sequence; weights are [out][in] as in Hugging Face checkpoints.
import { transpose, type Arena } from './arena.js';

/** y = x · Wᵀ; x [rows][inD], W [outD][inD]. */
export function linearForward(ar: Arena, y: Float32Array, x: Float32Array, w: Float32Array, rows: number, inD: number, outD: number): void {
  y.fill(0, 0, rows * outD);
  ar.gemmAdd(y, outD, x, inD, w, inD, rows, inD, outD);
}

/**
 * dx += dy · W (when dx is given) and dW += dyᵀ · x (when dw is given). wT, dyT, xT are scratch of
 * at least inD·outD, outD·rows and inD·rows floats.
 */
export function linearBackward(ar: Arena, dx: Float32Array | null, dw: Float32Array | null, dy: Float32Array, x: Float32Array,
  w: Float32Array, rows: number, inD: number, outD: number, scratch: { wT: Float32Array; dyT: Float32Array; xT: Float32Array }): void {
  if (dx) {
    transpose(scratch.wT, w, outD, inD);
    ar.gemmAdd(dx, inD, dy, outD, scratch.wT, outD, rows, outD, inD);
  }
  if (!dw) return;
  transpose(scratch.dyT, dy, rows, outD);
  transpose(scratch.xT, x, rows, inD);
  ar.gemmAdd(dw, inD, scratch.dyT, rows, scratch.xT, rows, outD, rows, inD);
}

/** y = x / rms(x) · g per row; stores 1/rms per row in rinv. y may not alias x. */
export function rmsnormForward(y: Float32Array, rinv: Float32Array, x: Float32Array, g: Float32Array, rows: number, d: number, eps: number): void {
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < d; i++) ss += x[r * d + i] * x[r * d + i];
    const inv = 1 / Math.sqrt(ss / d + eps);
    rinv[r] = inv;
    for (let i = 0; i < d; i++) y[r * d + i] = x[r * d + i] * inv * g[i];
  }
}

/** dx += ∂/∂x, dg += ∂/∂g (when given) of the RMSNorm above. */
export function rmsnormBackward(dx: Float32Array, dg: Float32Array | null, dy: Float32Array, x: Float32Array, rinv: Float32Array,
  g: Float32Array, rows: number, d: number): void {
  for (let r = 0; r < rows; r++) {
    const inv = rinv[r];
    let dot = 0;
    for (let i = 0; i < d; i++) {
      const o = r * d + i;
      dot += g[i] * dy[o] * x[o];
      if (dg) dg[i] += dy[o] * x[o] * inv;
    }
    const c = (inv * inv * inv * dot) / d;
    for (let i = 0; i < d; i++) {
      const o = r * d + i;
      dx[o] += inv * g[i] * dy[o] - c * x[o];
    }
  }
}

/**
 * Rotary embedding in place (Hugging Face rotate-half). With inverse = true it applies the
 * transpose (rotation by −θ), which is the backward pass.
 */
export function rope(x: Float32Array, rows: number, heads: number, hd: number, positions: Int32Array, invFreq: Float32Array, inverse = false): void {
  const half = hd / 2;
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < half; i++) {
      const t = positions[r] * invFreq[i];
      const c = Math.cos(t), s = inverse ? -Math.sin(t) : Math.sin(t);
      for (let h = 0; h < heads; h++) {
        const o = (r * heads + h) * hd + i;
        const a = x[o], b = x[o + half];
        x[o] = a * c - b * s;
        x[o + half] = b * c + a * s;
      }
    }
  }
}

export interface AttentionDims { rows: number; heads: number; kvHeads: number; hd: number; scale: number }

/**
 * Causal GQA attention of one sequence (assembly/train_attention.ts): o [rows][heads·hd]; the
 * probabilities of each head are kept in probs [heads][rows][rows] for the backward pass. With a
 * window, the streaming mask: query i sees keys j < sink or j > i − recent.
 * scratch: Arena.kernels.trainAttentionScratchFloats(rows, hd) floats.
 */
export function attentionForward(ar: Arena, o: Float32Array, probs: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array,
  dims: AttentionDims, scratch: Float32Array, window?: { sink: number; recent: number }): void {
  const { rows, heads, kvHeads, hd, scale } = dims;
  const sink = window ? window.sink : 0, recent = window ? window.recent : rows + 1;
  ar.kernels.trainAttentionForward(o.byteOffset, probs.byteOffset, q.byteOffset, k.byteOffset, v.byteOffset, rows, heads, kvHeads, hd, scale,
    sink, recent, scratch.byteOffset);
}

/** dq, dk, dv += the gradients of attentionForward given dO. */
export function attentionBackward(ar: Arena, dq: Float32Array, dk: Float32Array, dv: Float32Array, dO: Float32Array, probs: Float32Array,
  q: Float32Array, k: Float32Array, v: Float32Array, dims: AttentionDims, scratch: Float32Array): void {
  const { rows, heads, kvHeads, hd, scale } = dims;
  ar.kernels.trainAttentionBackward(dq.byteOffset, dk.byteOffset, dv.byteOffset, dO.byteOffset, probs.byteOffset, q.byteOffset,
    k.byteOffset, v.byteOffset, rows, heads, kvHeads, hd, scale, scratch.byteOffset);
}

/** h = silu(gate) · up. */
export function swigluForward(h: Float32Array, gate: Float32Array, up: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) { const g = gate[i]; h[i] = (g / (1 + Math.exp(-g))) * up[i]; }
}

/** dgate, dup = (overwritten) gradients of swigluForward given dh. */
export function swigluBackward(dgate: Float32Array, dup: Float32Array, dh: Float32Array, gate: Float32Array, up: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const g = gate[i], s = 1 / (1 + Math.exp(-g));
    dup[i] = dh[i] * g * s;
    dgate[i] = dh[i] * up[i] * s * (1 + g * (1 - s));
  }
}

/**
 * Weighted cross-entropy: loss = Σ_r weight[r] · (logsumexp(logits[r]) − logits[r][target[r]]);
 * dlogits (overwritten) is its gradient. Rows with weight 0 contribute nothing.
 */
export function crossEntropy(dlogits: Float32Array, logits: Float32Array, targets: Int32Array, weights: Float32Array, rows: number, vocab: number): number {
  let loss = 0;
  for (let r = 0; r < rows; r++) {
    const base = r * vocab, w = weights[r];
    if (w === 0) { dlogits.fill(0, base, base + vocab); continue; }
    let m = -Infinity;
    for (let c = 0; c < vocab; c++) m = Math.max(m, logits[base + c]);
    let sum = 0;
    for (let c = 0; c < vocab; c++) sum += Math.exp(logits[base + c] - m);
    const lse = m + Math.log(sum);
    loss += w * (lse - logits[base + targets[r]]);
    for (let c = 0; c < vocab; c++) dlogits[base + c] = w * Math.exp(logits[base + c] - lse);
    dlogits[base + targets[r]] -= w;
  }
  return loss;
}
