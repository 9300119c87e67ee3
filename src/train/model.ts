// A Llama-architecture model held for training: parameters and gradients as flat arrays in the
// arena (named views into them follow Hugging Face's tensor names), and one sequence's forward +
// backward pass that accumulates gradients.
import type { Arena } from './arena.js';
import type { KernelExports } from '../cpu/wasm.js';
import {
  attentionBackward, attentionForward, crossEntropy, linearBackward, linearForward, rmsnormBackward, rmsnormForward, rope,
  swigluBackward, swigluForward,
} from './ops.js';
import { Random } from '../tasks/random.js';

export interface TrainConfig {
  vocab: number; hidden: number; layers: number; heads: number; kvHeads: number; headDim: number;
  intermediate: number; eps: number; ropeTheta: number;
  /** Longest sequence (tokens) one forward pass takes; sizes the activation buffers. */
  maxRows: number;
}

export interface NamedTensor { name: string; shape: number[]; data: Float32Array; decay: boolean }

interface Layer<T> { inputNorm: T; wq: T; wk: T; wv: T; wo: T; postNorm: T; wGate: T; wUp: T; wDown: T }
interface Params<T> { embed: T; layers: Layer<T>[]; finalNorm: T; lmHead: T }

function layout(c: TrainConfig): Array<{ name: string; shape: number[]; decay: boolean; path: (string | number)[] }> {
  const d = c.hidden, q = c.heads * c.headDim, kv = c.kvHeads * c.headDim, f = c.intermediate;
  const out: Array<{ name: string; shape: number[]; decay: boolean; path: (string | number)[] }> = [
    { name: 'model.embed_tokens.weight', shape: [c.vocab, d], decay: true, path: ['embed'] },
  ];
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}.`;
    out.push(
      { name: `${p}input_layernorm.weight`, shape: [d], decay: false, path: ['layers', l, 'inputNorm'] },
      { name: `${p}self_attn.q_proj.weight`, shape: [q, d], decay: true, path: ['layers', l, 'wq'] },
      { name: `${p}self_attn.k_proj.weight`, shape: [kv, d], decay: true, path: ['layers', l, 'wk'] },
      { name: `${p}self_attn.v_proj.weight`, shape: [kv, d], decay: true, path: ['layers', l, 'wv'] },
      { name: `${p}self_attn.o_proj.weight`, shape: [d, q], decay: true, path: ['layers', l, 'wo'] },
      { name: `${p}post_attention_layernorm.weight`, shape: [d], decay: false, path: ['layers', l, 'postNorm'] },
      { name: `${p}mlp.gate_proj.weight`, shape: [f, d], decay: true, path: ['layers', l, 'wGate'] },
      { name: `${p}mlp.up_proj.weight`, shape: [f, d], decay: true, path: ['layers', l, 'wUp'] },
      { name: `${p}mlp.down_proj.weight`, shape: [d, f], decay: true, path: ['layers', l, 'wDown'] },
    );
  }
  out.push(
    { name: 'model.norm.weight', shape: [d], decay: false, path: ['finalNorm'] },
    { name: 'lm_head.weight', shape: [c.vocab, d], decay: true, path: ['lmHead'] },
  );
  return out;
}

function views(flat: Float32Array, c: TrainConfig): { tree: Params<Float32Array>; named: NamedTensor[] } {
  const tree = { layers: Array.from({ length: c.layers }, () => ({})) } as unknown as Params<Float32Array>;
  const named: NamedTensor[] = [];
  let off = 0;
  for (const t of layout(c)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const data = flat.subarray(off, off + n);
    off += n;
    named.push({ name: t.name, shape: t.shape, data, decay: t.decay });
    let node: Record<string | number, unknown> = tree as unknown as Record<string, unknown>;
    for (const key of t.path.slice(0, -1)) node = node[key] as Record<string | number, unknown>;
    node[t.path[t.path.length - 1]] = data;
  }
  return { tree, named };
}

export function parameterCount(c: TrainConfig): number {
  return layout(c).reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
}

interface LayerActs { xIn: Float32Array; rinv1: Float32Array; xn1: Float32Array; q: Float32Array; k: Float32Array; v: Float32Array;
  probs: Float32Array; o: Float32Array; xMid: Float32Array; rinv2: Float32Array; xn2: Float32Array; gate: Float32Array; up: Float32Array; h: Float32Array;
  /** Gated models only: the streaming branch's probabilities and both branches' outputs. */
  gated: { probs: Float32Array; oFull: Float32Array; oStream: Float32Array } | null }

/**
 * DuoAttention gates for identification: per layer and KV head α ∈ [0, 1]; a head's attention
 * output is α·full + (1 − α)·streaming (window = the streaming mask).
 */
export interface Gates { alphas: Float32Array; window: { sink: number; recent: number } }

export interface BackwardOptions {
  /** Accumulate parameter gradients (training); false = activation gradients only (frozen model). */
  weights: boolean;
  /** With gates: ∂/∂α is added here ([layers][kvHeads]). */
  gateGrads?: Float32Array;
}

export class TrainModel {
  readonly params: Float32Array;
  readonly grads: Float32Array;
  readonly p: Params<Float32Array>;
  readonly g: Params<Float32Array>;
  readonly named: NamedTensor[];
  readonly gradNamed: NamedTensor[];
  readonly invFreq: Float32Array;
  private readonly acts: LayerActs[];
  private readonly fin: { x: Float32Array; rinv: Float32Array; xf: Float32Array; logits: Float32Array; dlogits: Float32Array };
  private readonly s: {
    wT: Float32Array; dyT: Float32Array; xT: Float32Array; att: Float32Array;
    dx: Float32Array; dxn: Float32Array; dh: Float32Array; dgate: Float32Array; dup: Float32Array; dO: Float32Array;
    dq: Float32Array; dk: Float32Array; dv: Float32Array; dFull: Float32Array; dStream: Float32Array;
  };

  private gates: Gates | null = null;
  private rows = 0;
  private positions: Int32Array = new Int32Array(0);
  private ids: Int32Array = new Int32Array(0);

  constructor(private readonly ar: Arena, readonly c: TrainConfig, options: { gated?: boolean } = {}) {
    const n = parameterCount(c);
    this.params = ar.f32(n);
    this.grads = ar.f32(n);
    ({ tree: this.p, named: this.named } = views(this.params, c));
    ({ tree: this.g, named: this.gradNamed } = views(this.grads, c));
    this.invFreq = new Float32Array(c.headDim / 2).map((_, i) => 1 / c.ropeTheta ** ((2 * i) / c.headDim));
    const T = c.maxRows, d = c.hidden, qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim, f = c.intermediate;
    this.acts = Array.from({ length: c.layers }, () => ({
      xIn: ar.f32(T * d), rinv1: ar.f32(T), xn1: ar.f32(T * d), q: ar.f32(T * qd), k: ar.f32(T * kvd), v: ar.f32(T * kvd),
      probs: ar.f32(c.heads * T * T), o: ar.f32(T * qd), xMid: ar.f32(T * d), rinv2: ar.f32(T), xn2: ar.f32(T * d),
      gate: ar.f32(T * f), up: ar.f32(T * f), h: ar.f32(T * f),
      gated: options.gated ? { probs: ar.f32(c.heads * T * T), oFull: ar.f32(T * qd), oStream: ar.f32(T * qd) } : null,
    }));
    this.fin = { x: ar.f32(T * d), rinv: ar.f32(T), xf: ar.f32(T * d), logits: ar.f32(T * c.vocab), dlogits: ar.f32(T * c.vocab) };
    const maxDim = Math.max(d, qd, f, c.vocab);
    this.s = {
      wT: ar.f32(maxDim * maxDim), dyT: ar.f32(T * maxDim), xT: ar.f32(T * maxDim),
      att: ar.f32(ar.kernels.trainAttentionScratchFloats(T, c.headDim)),
      dx: ar.f32(T * d), dxn: ar.f32(T * d), dh: ar.f32(T * f), dgate: ar.f32(T * f), dup: ar.f32(T * f), dO: ar.f32(T * qd),
      dq: ar.f32(T * qd), dk: ar.f32(T * kvd), dv: ar.f32(T * kvd),
      dFull: ar.f32(options.gated ? T * qd : 0), dStream: ar.f32(options.gated ? T * qd : 0),
    };
  }

  /**
   * Arena bytes the constructor allocates for this config (keep in step with it), with 16 bytes of
   * alignment slack per allocation.
   */
  static arenaBytes(c: TrainConfig, kernels: KernelExports, options: { gated?: boolean } = {}): number {
    const T = c.maxRows, d = c.hidden, qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim, f = c.intermediate;
    const maxDim = Math.max(d, qd, f, c.vocab);
    const gatedPerLayer = options.gated ? c.heads * T * T + 2 * T * qd : 0;
    const perLayer = 4 * T * d + 2 * T + 2 * T * qd + 2 * T * kvd + c.heads * T * T + 3 * T * f + gatedPerLayer;
    const finals = 2 * T * d + T + 2 * T * c.vocab;
    const scratch = maxDim * maxDim + 2 * T * maxDim + kernels.trainAttentionScratchFloats(T, c.headDim) +
      2 * T * d + 3 * T * f + 2 * T * qd + 2 * T * kvd + (options.gated ? 2 * T * qd : 0);
    const floats = 2 * parameterCount(c) + c.layers * perLayer + finals + scratch;
    const allocations = 2 + c.layers * 17 + 5 + 16;
    return floats * 4 + allocations * 16;
  }

  /** Llama-style initialisation: N(0, 0.02) matrices (output projections scaled by 1/√(2·layers)), unit norms. */
  initialise(seed: number): void {
    const r = new Random(seed);
    const normal = () => Math.sqrt(-2 * Math.log(1 - r.next())) * Math.cos(2 * Math.PI * r.next());
    for (const t of this.named) {
      if (t.shape.length === 1) { t.data.fill(1); continue; }
      const std = /o_proj|down_proj/.test(t.name) ? 0.02 / Math.sqrt(2 * this.c.layers) : 0.02;
      for (let i = 0; i < t.data.length; i++) t.data[i] = normal() * std;
    }
  }

  /** Final hidden states (after the final norm) of the last forward pass, [rows][hidden]. */
  get hidden(): Float32Array { return this.fin.xf.subarray(0, this.rows * this.c.hidden); }

  /** Runs one sequence through the model (keeping activations for backward); gates need a gated model. */
  forward(ids: Int32Array, positions: Int32Array, gates: Gates | null = null): void {
    const { c, ar, p, s, fin } = this;
    const T = ids.length, d = c.hidden, qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim, f = c.intermediate;
    if (T > c.maxRows) throw new RangeError(`sequence of ${T} tokens exceeds the training buffers (${c.maxRows})`);
    if (gates && !this.acts[0]?.gated) throw new Error('gates need a model built with { gated: true }');
    this.gates = gates; this.rows = T; this.positions = positions; this.ids = ids;
    const dims = { rows: T, heads: c.heads, kvHeads: c.kvHeads, hd: c.headDim, scale: 1 / Math.sqrt(c.headDim) };
    const group = c.heads / c.kvHeads;
    const x0 = this.acts.length ? this.acts[0].xIn : fin.x;
    for (let t = 0; t < T; t++) x0.set(p.embed.subarray(ids[t] * d, (ids[t] + 1) * d), t * d);
    for (let l = 0; l < c.layers; l++) {
      const a = this.acts[l], w = p.layers[l];
      rmsnormForward(a.xn1, a.rinv1, a.xIn, w.inputNorm, T, d, c.eps);
      linearForward(ar, a.q, a.xn1, w.wq, T, d, qd);
      linearForward(ar, a.k, a.xn1, w.wk, T, d, kvd);
      linearForward(ar, a.v, a.xn1, w.wv, T, d, kvd);
      const b = this.biases?.[l];
      if (b) { addBias(a.q, b.bq, T, qd); addBias(a.k, b.bk, T, kvd); addBias(a.v, b.bv, T, kvd); }
      rope(a.q, T, c.heads, c.headDim, positions, this.invFreq);
      rope(a.k, T, c.kvHeads, c.headDim, positions, this.invFreq);
      if (gates && a.gated) {
        attentionForward(ar, a.gated.oFull, a.probs, a.q, a.k, a.v, dims, s.att);
        attentionForward(ar, a.gated.oStream, a.gated.probs, a.q, a.k, a.v, dims, s.att, gates.window);
        for (let t = 0; t < T; t++) {
          for (let h = 0; h < c.heads; h++) {
            const alpha = gates.alphas[l * c.kvHeads + Math.floor(h / group)];
            const base = t * qd + h * c.headDim;
            for (let i = base; i < base + c.headDim; i++) a.o[i] = alpha * a.gated.oFull[i] + (1 - alpha) * a.gated.oStream[i];
          }
        }
      } else {
        attentionForward(ar, a.o, a.probs, a.q, a.k, a.v, dims, s.att);
      }
      linearForward(ar, a.xMid, a.o, w.wo, T, qd, d);
      for (let i = 0; i < T * d; i++) a.xMid[i] += a.xIn[i];
      rmsnormForward(a.xn2, a.rinv2, a.xMid, w.postNorm, T, d, c.eps);
      linearForward(ar, a.gate, a.xn2, w.wGate, T, d, f);
      linearForward(ar, a.up, a.xn2, w.wUp, T, d, f);
      swigluForward(a.h, a.gate, a.up, T * f);
      const next = l + 1 < c.layers ? this.acts[l + 1].xIn : fin.x;
      linearForward(ar, next, a.h, w.wDown, T, f, d);
      for (let i = 0; i < T * d; i++) next[i] += a.xMid[i];
    }
    rmsnormForward(fin.xf, fin.rinv, fin.x, p.finalNorm, T, d, c.eps);
  }

  /**
   * Backward from ∂loss/∂(final hidden states) of the last forward pass (dxf is consumed as scratch).
   * Activation gradients always; parameter gradients only with options.weights.
   */
  backward(dxf: Float32Array, options: BackwardOptions): void {
    const { c, ar, p, g, s, fin } = this;
    const T = this.rows, d = c.hidden, qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim, f = c.intermediate;
    const dims = { rows: T, heads: c.heads, kvHeads: c.kvHeads, hd: c.headDim, scale: 1 / Math.sqrt(c.headDim) };
    const scr = { wT: s.wT, dyT: s.dyT, xT: s.xT };
    const positions = this.positions, gates = this.gates, group = c.heads / c.kvHeads;
    const W = options.weights;
    const lin = (dx: Float32Array | null, dw: Float32Array, dy: Float32Array, x: Float32Array, w: Float32Array, inD: number, outD: number) =>
      linearBackward(ar, dx, W ? dw : null, dy, x, w, T, inD, outD, scr);
    s.dx.fill(0, 0, T * d);
    rmsnormBackward(s.dx, W ? g.finalNorm : null, dxf, fin.x, fin.rinv, p.finalNorm, T, d);
    for (let l = c.layers - 1; l >= 0; l--) {
      const a = this.acts[l], w = p.layers[l], gw = g.layers[l];
      s.dh.fill(0, 0, T * f);
      lin(s.dh, gw.wDown, s.dx, a.h, w.wDown, f, d);
      swigluBackward(s.dgate, s.dup, s.dh, a.gate, a.up, T * f);
      s.dxn.fill(0, 0, T * d);
      lin(s.dxn, gw.wGate, s.dgate, a.xn2, w.wGate, d, f);
      lin(s.dxn, gw.wUp, s.dup, a.xn2, w.wUp, d, f);
      rmsnormBackward(s.dx, W ? gw.postNorm : null, s.dxn, a.xMid, a.rinv2, w.postNorm, T, d);
      s.dO.fill(0, 0, T * qd);
      lin(s.dO, gw.wo, s.dx, a.o, w.wo, qd, d);
      s.dq.fill(0, 0, T * qd); s.dk.fill(0, 0, T * kvd); s.dv.fill(0, 0, T * kvd);
      if (gates && a.gated) {
        // o = α·oFull + (1 − α)·oStream: dα = Σ dO·(oFull − oStream); each branch gets its share of dO.
        const dFull = s.dFull, dStream = s.dStream;
        for (let t = 0; t < T; t++) {
          for (let h = 0; h < c.heads; h++) {
            const gi = l * c.kvHeads + Math.floor(h / group), alpha = gates.alphas[gi];
            const base = t * qd + h * c.headDim;
            let da = 0;
            for (let i = base; i < base + c.headDim; i++) {
              da += s.dO[i] * (a.gated.oFull[i] - a.gated.oStream[i]);
              dFull[i] = alpha * s.dO[i];
              dStream[i] = (1 - alpha) * s.dO[i];
            }
            if (options.gateGrads) options.gateGrads[gi] += da;
          }
        }
        attentionBackward(ar, s.dq, s.dk, s.dv, dFull, a.probs, a.q, a.k, a.v, dims, s.att);
        attentionBackward(ar, s.dq, s.dk, s.dv, dStream, a.gated.probs, a.q, a.k, a.v, dims, s.att);
      } else {
        attentionBackward(ar, s.dq, s.dk, s.dv, s.dO, a.probs, a.q, a.k, a.v, dims, s.att);
      }
      rope(s.dq, T, c.heads, c.headDim, positions, this.invFreq, true);
      rope(s.dk, T, c.kvHeads, c.headDim, positions, this.invFreq, true);
      s.dxn.fill(0, 0, T * d);
      lin(s.dxn, gw.wq, s.dq, a.xn1, w.wq, d, qd);
      lin(s.dxn, gw.wk, s.dk, a.xn1, w.wk, d, kvd);
      lin(s.dxn, gw.wv, s.dv, a.xn1, w.wv, d, kvd);
      rmsnormBackward(s.dx, W ? gw.inputNorm : null, s.dxn, a.xIn, a.rinv1, w.inputNorm, T, d);
    }
    if (W) {
      const ids = this.ids;
      for (let t = 0; t < T; t++) {
        const base = ids[t] * d;
        for (let i = 0; i < d; i++) g.embed[base + i] += s.dx[t * d + i];
      }
    }
  }

  /**
   * Training step on one sequence: ids at `positions`, loss Σ weights[r]·CE(logits[r], targets[r]).
   * Parameter gradients are added to `grads`. Returns the loss.
   */
  step(ids: Int32Array, positions: Int32Array, targets: Int32Array, weights: Float32Array): number {
    const { c, ar, p, g, s, fin } = this;
    const T = ids.length, d = c.hidden, V = c.vocab;
    this.forward(ids, positions);
    linearForward(ar, fin.logits, fin.xf, p.lmHead, T, d, V);
    const loss = crossEntropy(fin.dlogits, fin.logits, targets, weights, T, V);
    s.dxn.fill(0, 0, T * d);
    linearBackward(ar, s.dxn, g.lmHead, fin.dlogits, fin.xf, p.lmHead, T, d, V, { wT: s.wT, dyT: s.dyT, xT: s.xT });
    this.backward(s.dxn, { weights: true });
    return loss;
  }

  /** Full-attention probabilities [heads][rows][rows] of a layer from the last forward pass. */
  attentionProbs(layer: number): Float32Array {
    return this.acts[layer].probs.subarray(0, this.c.heads * this.rows * this.rows);
  }

  /** Optional q/k/v biases per layer (qwen2), used by forward; frozen. */
  biases: Array<{ bq: Float32Array; bk: Float32Array; bv: Float32Array } | null> | null = null;
}

function addBias(y: Float32Array, b: Float32Array, rows: number, n: number): void {
  for (let r = 0; r < rows; r++) for (let i = 0; i < n; i++) y[r * n + i] += b[i];
}
