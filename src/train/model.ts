// A Llama-architecture model held for training on a device (TrainKernels: the CPU's WebAssembly
// arena or the GPU): parameters and gradients as flat tensors (named views into them follow Hugging
// Face's tensor names), and one sequence's forward + backward pass that accumulates gradients.
import type { Arena } from './arena.js';
import type { KernelExports } from '../cpu/wasm.js';
import { CpuTrainKernels, type TrainKernels } from './kernels.js';
import { Random } from '../tasks/random.js';

export interface TrainConfig {
  vocab: number; hidden: number; layers: number; heads: number; kvHeads: number; headDim: number;
  intermediate: number; eps: number; ropeTheta: number;
  /** Longest sequence (tokens) one forward pass takes; sizes the activation buffers. */
  maxRows: number;
}

export interface NamedTensor<T = Float32Array> { name: string; shape: number[]; data: T; decay: boolean; offset: number }

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

/** Named views into a flat parameter-sized tensor (slice: the device's view maker). */
export function views<T>(flat: T, c: TrainConfig, slice: (t: T, offset: number, n: number) => T): { tree: Params<T>; named: NamedTensor<T>[] } {
  const tree = { layers: Array.from({ length: c.layers }, () => ({})) } as unknown as Params<T>;
  const named: NamedTensor<T>[] = [];
  let off = 0;
  for (const t of layout(c)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const data = slice(flat, off, n);
    named.push({ name: t.name, shape: t.shape, data, decay: t.decay, offset: off });
    off += n;
    let node: Record<string | number, unknown> = tree as unknown as Record<string, unknown>;
    for (const key of t.path.slice(0, -1)) node = node[key] as Record<string | number, unknown>;
    node[t.path[t.path.length - 1]] = data;
  }
  return { tree, named };
}

export function parameterCount(c: TrainConfig): number {
  return layout(c).reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
}

interface LayerActs<T> { xIn: T; rinv1: T; xn1: T; q: T; k: T; v: T;
  probs: T; o: T; xMid: T; rinv2: T; xn2: T; gate: T; up: T; h: T;
  /** Gated models only: the streaming branch's probabilities and both branches' outputs. */
  gated: { probs: T; oFull: T; oStream: T } | null }

/**
 * DuoAttention gates for identification: per layer and KV head α ∈ [0, 1]; a head's attention
 * output is α·full + (1 − α)·streaming (window = the streaming mask).
 */
export interface Gates { alphas: Float32Array; window: { sink: number; recent: number } }

export interface BackwardOptions<T = Float32Array> {
  /** Accumulate parameter gradients (training); false = activation gradients only (frozen model). */
  weights: boolean;
  /** With gates: ∂/∂α is added here ([layers][kvHeads]). */
  gateGrads?: T;
}

export class TrainModel<T = Float32Array> {
  readonly params: T;
  readonly grads: T;
  readonly p: Params<T>;
  readonly g: Params<T>;
  readonly named: NamedTensor<T>[];
  readonly gradNamed: NamedTensor<T>[];
  readonly invFreq: Float32Array;
  /** step() adds each sequence's loss here (1 float); the caller zeroes it. */
  readonly loss: T;
  /** Gated models: the identification loop's teacher hidden states, their gradient, and ∂/∂α. */
  readonly distill: { ref: T; dh: T; gateGrads: T } | null;
  private readonly acts: LayerActs<T>[];
  private readonly fin: { x: T; rinv: T; xf: T; logits: T; dlogits: T };
  private readonly s: {
    dx: T; dxn: T; dh: T; dgate: T; dup: T; dO: T;
    dq: T; dk: T; dv: T; dFull: T; dStream: T;
  };

  private gates: Gates | null = null;
  private rows = 0;

  /** RoPE frequencies for base θ (a training plan may raise θ from a phase on). */
  setRopeTheta(theta: number): void {
    const half = this.c.headDim / 2;
    for (let i = 0; i < half; i++) this.invFreq[i] = 1 / theta ** ((2 * i) / this.c.headDim);
  }

  constructor(readonly k: TrainKernels<T>, readonly c: TrainConfig, options: { gated?: boolean } = {}) {
    const n = parameterCount(c);
    const slice = (t: T, off: number, len: number) => k.slice(t, off, len);
    this.params = k.alloc(n);
    this.grads = k.alloc(n);
    ({ tree: this.p, named: this.named } = views(this.params, c, slice));
    ({ tree: this.g, named: this.gradNamed } = views(this.grads, c, slice));
    this.invFreq = new Float32Array(c.headDim / 2);
    this.setRopeTheta(c.ropeTheta);
    this.loss = k.alloc(1);
    const T = c.maxRows, d = c.hidden, qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim, f = c.intermediate;
    const a = (m: number) => k.alloc(m);
    this.acts = Array.from({ length: c.layers }, () => ({
      xIn: a(T * d), rinv1: a(T), xn1: a(T * d), q: a(T * qd), k: a(T * kvd), v: a(T * kvd),
      probs: a(c.heads * T * T), o: a(T * qd), xMid: a(T * d), rinv2: a(T), xn2: a(T * d),
      gate: a(T * f), up: a(T * f), h: a(T * f),
      gated: options.gated ? { probs: a(c.heads * T * T), oFull: a(T * qd), oStream: a(T * qd) } : null,
    }));
    this.fin = { x: a(T * d), rinv: a(T), xf: a(T * d), logits: a(T * c.vocab), dlogits: a(T * c.vocab) };
    this.s = {
      dx: a(T * d), dxn: a(T * d), dh: a(T * f), dgate: a(T * f), dup: a(T * f), dO: a(T * qd),
      dq: a(T * qd), dk: a(T * kvd), dv: a(T * kvd),
      dFull: a(options.gated ? T * qd : 0), dStream: a(options.gated ? T * qd : 0),
    };
    this.distill = options.gated ? { ref: a(T * d), dh: a(T * d), gateGrads: a(c.layers * c.kvHeads) } : null;
  }

  /**
   * Arena bytes a CPU model (cpuTrainModel) allocates for this config (keep in step with the
   * constructor and CpuTrainKernels), with 16 bytes of alignment slack per allocation.
   */
  static arenaBytes(c: TrainConfig, kernels: KernelExports, options: { gated?: boolean } = {}): number {
    const T = c.maxRows, d = c.hidden, qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim, f = c.intermediate;
    const gatedPerLayer = options.gated ? c.heads * T * T + 2 * T * qd : 0;
    const distill = options.gated ? 2 * T * d + c.layers * c.kvHeads : 0;
    const perLayer = 4 * T * d + 2 * T + 2 * T * qd + 2 * T * kvd + c.heads * T * T + 3 * T * f + gatedPerLayer;
    const finals = 2 * T * d + T + 2 * T * c.vocab;
    const scratch = CpuTrainKernels.scratchFloats(kernels, T, maxDim(c), c.headDim) +
      2 * T * d + 3 * T * f + 2 * T * qd + 2 * T * kvd + (options.gated ? 2 * T * qd : 0);
    const floats = 2 * parameterCount(c) + 1 + c.layers * perLayer + finals + scratch + distill;
    const allocations = 3 + c.layers * 17 + 5 + 16 + 3;
    return floats * 4 + allocations * 16;
  }

  /** Llama-style initialisation: N(0, 0.02) matrices (output projections scaled by 1/√(2·layers)), unit norms. */
  initialise(seed: number): void {
    const r = new Random(seed);
    const normal = () => Math.sqrt(-2 * Math.log(1 - r.next())) * Math.cos(2 * Math.PI * r.next());
    const host = new Float32Array(parameterCount(this.c));
    for (const t of this.named) {
      const n = t.shape.reduce((x, y) => x * y, 1);
      const data = host.subarray(t.offset, t.offset + n);
      if (t.shape.length === 1) { data.fill(1); continue; }
      const std = /o_proj|down_proj/.test(t.name) ? 0.02 / Math.sqrt(2 * this.c.layers) : 0.02;
      for (let i = 0; i < data.length; i++) data[i] = normal() * std;
    }
    this.k.write(this.params, host);
  }

  /** Final hidden states (after the final norm) of the last forward pass, [rows][hidden]. */
  get hidden(): T { return this.k.slice(this.fin.xf, 0, this.rows * this.c.hidden); }

  /** Rows of the last forward pass. */
  get sequenceRows(): number { return this.rows; }

  /** Runs one sequence through the model (keeping activations for backward); gates need a gated model. */
  forward(ids: Int32Array, positions: Int32Array, gates: Gates | null = null): void {
    const { c, k, p, fin } = this;
    const T = ids.length, d = c.hidden, qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim, f = c.intermediate;
    if (T > c.maxRows) throw new RangeError(`sequence of ${T} tokens exceeds the training buffers (${c.maxRows})`);
    if (gates && !this.acts[0]?.gated) throw new Error('gates need a model built with { gated: true }');
    this.gates = gates; this.rows = T;
    k.setSequence(ids, positions, this.invFreq);
    const dims = { rows: T, heads: c.heads, kvHeads: c.kvHeads, hd: c.headDim, scale: 1 / Math.sqrt(c.headDim) };
    k.embedGather(this.acts.length ? this.acts[0].xIn : fin.x, p.embed, d);
    for (let l = 0; l < c.layers; l++) {
      const a = this.acts[l], w = p.layers[l];
      k.rmsnormForward(a.xn1, a.rinv1, a.xIn, w.inputNorm, T, d, c.eps);
      k.linearForward(a.q, a.xn1, w.wq, T, d, qd);
      k.linearForward(a.k, a.xn1, w.wk, T, d, kvd);
      k.linearForward(a.v, a.xn1, w.wv, T, d, kvd);
      const b = this.biases?.[l];
      if (b) { k.addBias(a.q, b.bq, T, qd); k.addBias(a.k, b.bk, T, kvd); k.addBias(a.v, b.bv, T, kvd); }
      k.rope(a.q, T, c.heads, c.headDim, false);
      k.rope(a.k, T, c.kvHeads, c.headDim, false);
      if (gates && a.gated) {
        k.attentionForward(a.gated.oFull, a.probs, a.q, a.k, a.v, dims);
        k.attentionForward(a.gated.oStream, a.gated.probs, a.q, a.k, a.v, dims, gates.window);
        k.gateMix(a.o, a.gated.oFull, a.gated.oStream, this.layerGates(gates, l), dims);
      } else {
        k.attentionForward(a.o, a.probs, a.q, a.k, a.v, dims);
      }
      k.linearForward(a.xMid, a.o, w.wo, T, qd, d);
      k.add(a.xMid, a.xIn, T * d);
      k.rmsnormForward(a.xn2, a.rinv2, a.xMid, w.postNorm, T, d, c.eps);
      k.linearForward(a.gate, a.xn2, w.wGate, T, d, f);
      k.linearForward(a.up, a.xn2, w.wUp, T, d, f);
      k.swigluForward(a.h, a.gate, a.up, T * f);
      const next = l + 1 < c.layers ? this.acts[l + 1].xIn : fin.x;
      k.linearForward(next, a.h, w.wDown, T, f, d);
      k.add(next, a.xMid, T * d);
    }
    k.rmsnormForward(fin.xf, fin.rinv, fin.x, p.finalNorm, T, d, c.eps);
  }

  private layerGates(gates: Gates, l: number): Float32Array {
    return gates.alphas.subarray(l * this.c.kvHeads, (l + 1) * this.c.kvHeads);
  }

  /**
   * Backward from ∂loss/∂(final hidden states) of the last forward pass (dxf is consumed as scratch).
   * Activation gradients always; parameter gradients only with options.weights.
   */
  backward(dxf: T, options: BackwardOptions<T>): void {
    const { c, k, p, g, s, fin } = this;
    const T = this.rows, d = c.hidden, qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim, f = c.intermediate;
    const dims = { rows: T, heads: c.heads, kvHeads: c.kvHeads, hd: c.headDim, scale: 1 / Math.sqrt(c.headDim) };
    const gates = this.gates;
    const W = options.weights;
    const lin = (dx: T | null, dw: T, dy: T, x: T, w: T, inD: number, outD: number) =>
      k.linearBackward(dx, W ? dw : null, dy, x, w, T, inD, outD);
    k.zero(s.dx, T * d);
    k.rmsnormBackward(s.dx, W ? g.finalNorm : null, dxf, fin.x, fin.rinv, p.finalNorm, T, d);
    for (let l = c.layers - 1; l >= 0; l--) {
      const a = this.acts[l], w = p.layers[l], gw = g.layers[l];
      k.zero(s.dh, T * f);
      lin(s.dh, gw.wDown, s.dx, a.h, w.wDown, f, d);
      k.swigluBackward(s.dgate, s.dup, s.dh, a.gate, a.up, T * f);
      k.zero(s.dxn, T * d);
      lin(s.dxn, gw.wGate, s.dgate, a.xn2, w.wGate, d, f);
      lin(s.dxn, gw.wUp, s.dup, a.xn2, w.wUp, d, f);
      k.rmsnormBackward(s.dx, W ? gw.postNorm : null, s.dxn, a.xMid, a.rinv2, w.postNorm, T, d);
      k.zero(s.dO, T * qd);
      lin(s.dO, gw.wo, s.dx, a.o, w.wo, qd, d);
      k.zero(s.dq, T * qd); k.zero(s.dk, T * kvd); k.zero(s.dv, T * kvd);
      if (gates && a.gated) {
        // o = α·oFull + (1 − α)·oStream: dα = Σ dO·(oFull − oStream); each branch gets its share of dO.
        const gateGrads = options.gateGrads ? k.slice(options.gateGrads, l * c.kvHeads, c.kvHeads) : null;
        k.gateBackward(s.dFull, s.dStream, s.dO, a.gated.oFull, a.gated.oStream, this.layerGates(gates, l), dims, gateGrads);
        k.attentionBackward(s.dq, s.dk, s.dv, s.dFull, a.probs, a.q, a.k, a.v, dims);
        k.attentionBackward(s.dq, s.dk, s.dv, s.dStream, a.gated.probs, a.q, a.k, a.v, dims);
      } else {
        k.attentionBackward(s.dq, s.dk, s.dv, s.dO, a.probs, a.q, a.k, a.v, dims);
      }
      k.rope(s.dq, T, c.heads, c.headDim, true);
      k.rope(s.dk, T, c.kvHeads, c.headDim, true);
      k.zero(s.dxn, T * d);
      lin(s.dxn, gw.wq, s.dq, a.xn1, w.wq, d, qd);
      lin(s.dxn, gw.wk, s.dk, a.xn1, w.wk, d, kvd);
      lin(s.dxn, gw.wv, s.dv, a.xn1, w.wv, d, kvd);
      k.rmsnormBackward(s.dx, W ? gw.inputNorm : null, s.dxn, a.xIn, a.rinv1, w.inputNorm, T, d);
    }
    if (W) k.embedScatterAdd(g.embed, s.dx, d);
  }

  /**
   * Training step on one sequence: ids at `positions`, loss Σ weights[r]·CE(logits[r], targets[r])
   * added to `loss`. Parameter gradients are added to `grads`.
   */
  step(ids: Int32Array, positions: Int32Array, targets: Int32Array, weights: Float32Array): void {
    const { c, k, p, g, s, fin } = this;
    const T = ids.length, d = c.hidden, V = c.vocab;
    this.forward(ids, positions);
    k.linearForward(fin.logits, fin.xf, p.lmHead, T, d, V);
    k.crossEntropy(fin.dlogits, fin.logits, targets, weights, T, V, this.loss);
    k.zero(s.dxn, T * d);
    k.linearBackward(s.dxn, g.lmHead, fin.dlogits, fin.xf, p.lmHead, T, d, V);
    this.backward(s.dxn, { weights: true });
  }

  /** A layer's normed attention input (the residual after input_layernorm, which q/k/v project) of the last forward pass, [rows][hidden]. */
  normedInput(layer: number): T {
    return this.k.slice(this.acts[layer].xn1, 0, this.rows * this.c.hidden);
  }

  /** Full-attention probabilities [heads][rows][rows] of a layer from the last forward pass. */
  attentionProbs(layer: number): T {
    return this.k.slice(this.acts[layer].probs, 0, this.c.heads * this.rows * this.rows);
  }

  /**
   * A layer's q, k, v from the last forward pass: q [rows][heads·hd] and k [rows][kvHeads·hd]
   * after RoPE (rotated in place by forward), v [rows][kvHeads·hd]. Views, valid until the next pass.
   */
  attentionQkv(layer: number): { q: T; k: T; v: T } {
    const a = this.acts[layer], T = this.rows, qd = this.c.heads * this.c.headDim, kvd = this.c.kvHeads * this.c.headDim;
    return { q: this.k.slice(a.q, 0, T * qd), k: this.k.slice(a.k, 0, T * kvd), v: this.k.slice(a.v, 0, T * kvd) };
  }

  /** Optional q/k/v biases per layer (qwen2), used by forward; frozen. */
  biases: Array<{ bq: T; bk: T; bv: T } | null> | null = null;
}

function maxDim(c: TrainConfig): number {
  return Math.max(c.hidden, c.heads * c.headDim, c.intermediate, c.vocab);
}

/** A model on the CPU: tensors in the arena, SIMD WebAssembly kernels. */
export function cpuTrainModel(ar: Arena, c: TrainConfig, options: { gated?: boolean } = {}): TrainModel<Float32Array> {
  return new TrainModel(new CpuTrainKernels(ar, c.maxRows, maxDim(c), c.headDim), c, options);
}
