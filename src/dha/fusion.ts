// DHA's fusion parameterisation on Duet's trainer. The training runs an unchanged multi-head
// TrainModel whose K and V weights are *expanded* from the DHA parameters, per layer and side:
//   Ŵ_h = Σ_{j ∈ support(h)} ω_hj · W_j        (W_j: base head j, ω: the side's [heads][heads] mix)
// Fusion: support(h) = h's group, ω trainable and initialised to the identity, so step 0 is the
// original model exactly. Tied (after the collapse, and the GQA baseline): support(h) = {the kept
// head of h's group}, ω = 1 fixed, so the multi-head model is the DHA model with shared K/V rows.
// Gradients follow from the model's gradient G_h wrt the expanded weights by the chain rule:
//   ∂L/∂W_j = Σ_h ω_hj G_h,   ∂L/∂ω_hj = ⟨G_h, W_j⟩_F.
//
// The fusion constraint (our instantiation; the paper's exact form is not public, see
// docs/dha.md): per layer and side, c = Σ_g Σ_{i∈g} ‖Ŵ_i − mean_{k∈g} Ŵ_k‖²_Σ / E, the output error
// (under the attention inputs' covariance Σ, similarity.ts) that the collapse to the group mean
// would introduce, in units of the side's average head energy E (fixed at the start). It is 0
// exactly when each group's fused heads are equal. With a target t that falls from c's start value
// to 0 over the fusion (the caller's schedule, as Sheared-LLaMA ramps its target sparsity), the
// training minimises L_LM + Σ (λ·(c − t) + φ·(c − t)²) over the weights and ω while the
// multipliers take ascent steps, λ += η·(c − t) and φ += η·(c − t)²: λ settles at the pull that
// holds c on its target against the language-modelling loss, so the heads merge gradually and the
// rest of the model adapts on the way.
import type { NamedTensor, TrainModel } from '../train/model.js';
import { SIDES, type HeadGroups, type Side } from './allocate.js';
import { poolHeads } from './meanpool.js';

/** out_h = Σ_{j ∈ support[h]} mix[h·H + j]·base_j, heads of `block` floats; H = support.length. */
export function expandHeads(out: Float32Array, mix: Float32Array, support: number[][], base: Float32Array, block: number): void {
  const H = support.length;
  for (let h = 0; h < H; h++) {
    const o = out.subarray(h * block, (h + 1) * block);
    o.fill(0);
    for (const j of support[h]) {
      const w = mix[h * H + j], b = j * block;
      for (let e = 0; e < block; e++) o[e] += w * base[b + e];
    }
  }
}

/**
 * Backward of expandHeads from G = ∂L/∂out: adds ∂L/∂base_j = Σ_h mix[h,j]·G_h into dBase and,
 * when dMix is given, ∂L/∂mix[h,j] = ⟨G_h, base_j⟩ for j ∈ support[h].
 */
export function expandHeadsBackward(G: Float32Array, mix: Float32Array, support: number[][], base: Float32Array, block: number,
  dBase: Float32Array, dMix: Float32Array | null): void {
  const H = support.length;
  for (let h = 0; h < H; h++) {
    const g = h * block;
    for (const j of support[h]) {
      const w = mix[h * H + j], b = j * block;
      let dot = 0;
      for (let e = 0; e < block; e++) { dBase[b + e] += w * G[g + e]; dot += G[g + e] * base[b + e]; }
      if (dMix) dMix[h * H + j] += dot;
    }
  }
}

/**
 * The fusion constraint of one side (header): c = Σ_g Σ_{i∈g} ‖W_i − W̄_g‖²_Σ / energy, with heads
 * of hd rows × d in w. With `grad`, adds coef·∂c/∂W_i = coef·2·(W_i − W̄_g)·Σ / energy (the mean's
 * own term vanishes because the deviations sum to zero).
 */
export function fusionConstraint(w: Float32Array, groups: number[][], sigma: Float64Array, hd: number, d: number, energy: number,
  grad: Float32Array | null = null, coef = 0): number {
  const block = hd * d;
  let c = 0;
  const dev = new Float64Array(block), ds = new Float64Array(d);
  for (const g of groups) {
    if (g.length < 2) continue;
    const mean = new Float64Array(block);
    for (const i of g) for (let e = 0; e < block; e++) mean[e] += w[i * block + e];
    for (let e = 0; e < block; e++) mean[e] /= g.length;
    for (const i of g) {
      for (let e = 0; e < block; e++) dev[e] = w[i * block + e] - mean[e];
      for (let r = 0; r < hd; r++) {
        const row = r * d;
        ds.fill(0);
        for (let a = 0; a < d; a++) {
          const v = dev[row + a];
          if (v === 0) continue;
          for (let b = 0; b < d; b++) ds[b] += v * sigma[a * d + b];
        }
        for (let b = 0; b < d; b++) {
          c += dev[row + b] * ds[b];
          if (grad) grad[i * block + row + b] += (coef * 2 * ds[b]) / energy;
        }
      }
    }
  }
  return c / energy;
}

interface SideState {
  /** The groups of original heads (each becomes one head at the collapse). */
  groups: number[][];
  /** Per query head: the base heads its expanded head mixes. */
  support: number[][];
  /** [heads][heads] mixing weights ω (a view into HeadFusion.mix). */
  mix: Float32Array;
  /** Offset of the side's weight tensor in the model's parameters. */
  offset: number;
  /** Base heads held in the tensor's rows (heads in fusion, the kept heads when tied). */
  baseHeads: number;
}

const projName = (l: number, side: Side) => `model.layers.${l}.self_attn.${side === 'key' ? 'k' : 'v'}_proj.weight`;

/** The DHA parameters of a whole model, in fusion or tied form (header). */
export class HeadFusion {
  /** Multipliers λ, φ per layer and side ([layer·2 + side]), raised by ascent (ascend). */
  readonly lambda: Float64Array;
  readonly phi: Float64Array;

  private constructor(
    readonly mode: 'fusion' | 'tied',
    readonly shape: { layers: number; heads: number; headDim: number; hidden: number },
    /** Model-shaped parameters; each layer's k_proj/v_proj slot holds its base heads in its first rows (zeros after them). */
    readonly params: Float32Array,
    /** All sides' ω, [layer][side][heads][heads]; entries outside a head's support stay 0. */
    readonly mix: Float32Array,
    readonly sides: Array<Record<Side, SideState>>,
    /** Fusion: Σ per layer and E per layer and side, for the constraint. */
    private readonly sigma: Float64Array[] | null,
    private readonly energy: Float64Array | null,
  ) {
    this.lambda = new Float64Array(shape.layers * 2);
    this.phi = new Float64Array(shape.layers * 2);
  }

  private static build(mode: 'fusion' | 'tied', model: { c: TrainModel['c']; named: Array<NamedTensor<unknown>> }, params: Float32Array,
    groups: HeadGroups[], sigma: Float64Array[] | null): HeadFusion {
    const { layers, heads, headDim, hidden, kvHeads } = model.c;
    if (kvHeads !== heads) throw new Error(`DHA needs a multi-head model: num_key_value_heads ${kvHeads} ≠ num_attention_heads ${heads}`);
    if (groups.length !== layers) throw new Error(`head groups for ${groups.length} layers, the model has ${layers}`);
    const offsets = new Map(model.named.map((t) => [t.name, t.offset]));
    const mix = new Float32Array(layers * 2 * heads * heads);
    const sides = groups.map((lg, l) => {
      const side = (s: Side, k: number): SideState => {
        const gs = lg[s];
        const owner = new Array<number>(heads).fill(-1);
        gs.forEach((g, i) => { for (const h of g) { if (owner[h] !== -1) throw new Error(`layer ${l} ${s} head ${h} is in two groups`); owner[h] = i; } });
        if (owner.some((o) => o < 0)) throw new Error(`layer ${l} ${s} groups ${JSON.stringify(gs)} leave a head out`);
        const view = mix.subarray(((l * 2 + k) * heads) * heads, ((l * 2 + k + 1) * heads) * heads);
        // Fusion: identity within the group. Tied: one-hot on the kept head.
        const support = mode === 'fusion' ? owner.map((o) => [...gs[o]]) : owner.map((o) => [o]);
        for (let h = 0; h < heads; h++) view[h * heads + (mode === 'fusion' ? h : owner[h])] = 1;
        return { groups: gs.map((g) => [...g]), support, mix: view, offset: offsets.get(projName(l, s))!, baseHeads: mode === 'fusion' ? heads : gs.length };
      };
      return { key: side('key', 0), value: side('value', 1) };
    });
    let energy: Float64Array | null = null;
    if (mode === 'fusion') {
      if (!sigma || sigma.length !== layers) throw new Error('fusion needs the attention-input covariance of every layer');
      energy = new Float64Array(layers * 2);
      sides.forEach((s, l) => SIDES.forEach((side, k) => {
        const w = params.subarray(s[side].offset, s[side].offset + heads * headDim * hidden);
        let e = 0;
        for (let h = 0; h < heads; h++) e += headEnergy(w, h, sigma[l], headDim, hidden);
        energy![l * 2 + k] = e / heads;
        if (!(energy![l * 2 + k] > 0)) throw new Error(`layer ${l}: its ${side} heads produce no output on the data (all-zero weights?)`);
      }));
    }
    return new HeadFusion(mode, { layers, heads, headDim, hidden }, params, mix, sides, sigma, energy);
  }

  /** Fusion of a model's current weights (copied) over `groups`, ω = I: expanding gives the model back exactly. */
  static fusion(model: TrainModel<Float32Array>, groups: HeadGroups[], sigma: Float64Array[]): HeadFusion {
    return HeadFusion.build('fusion', model, Float32Array.from(model.params), groups, sigma);
  }

  /**
   * A tied (DHA) model from model-shaped parameters whose k_proj/v_proj slots hold the kept heads
   * in group order in their first rows.
   */
  static tied(model: { c: TrainModel['c']; named: Array<NamedTensor<unknown>> }, params: Float32Array, groups: HeadGroups[]): HeadFusion {
    return HeadFusion.build('tied', model, params, groups, null);
  }

  private get block(): number { return this.shape.headDim * this.shape.hidden; }

  private base(s: SideState): Float32Array {
    return this.params.subarray(s.offset, s.offset + s.baseHeads * this.block);
  }

  /** A side's expanded [heads·hd][hidden] weights. */
  expanded(layer: number, side: Side): Float32Array {
    const s = this.sides[layer][side];
    const out = new Float32Array(this.shape.heads * this.block);
    expandHeads(out, s.mix, s.support, this.base(s), this.block);
    return out;
  }

  /** Writes the parameters into the model, K and V expanded. */
  writeModel(model: TrainModel<Float32Array>): void {
    model.params.set(this.params);
    const full = this.shape.heads * this.block;
    this.sides.forEach((ls) => SIDES.forEach((side) => {
      const s = ls[side];
      expandHeads(model.params.subarray(s.offset, s.offset + full), s.mix, s.support, this.base(s), this.block);
    }));
  }

  /** The fusion constraint c of every layer and side ([layer·2 + side]) at the current parameters; zeros when tied. */
  constraints(): Float64Array {
    const out = new Float64Array(this.shape.layers * 2);
    if (this.mode === 'tied') return out;
    this.sides.forEach((ls, l) => SIDES.forEach((side, k) => {
      out[l * 2 + k] = fusionConstraint(this.expanded(l, side), ls[side].groups, this.sigma![l], this.shape.headDim, this.shape.hidden, this.energy![l * 2 + k]);
    }));
    return out;
  }

  /**
   * The DHA parameters' gradient from the model's gradient wrt its (expanded) parameters (the last
   * writeModel's), with the constraint terms λ·(c − t) + φ·(c − t)² added in fusion (t: `targets`,
   * [layer·2 + side], default 0). Returns the parameter gradient
   * (model-shaped, K/V slots wrt the base heads), ω's gradient, and each side's c.
   */
  gradients(modelGrads: Float32Array, targets: Float64Array | null = null): { params: Float32Array; mix: Float32Array; constraints: Float64Array; penalty: number } {
    const grads = Float32Array.from(modelGrads);
    const dMix = new Float32Array(this.mix.length);
    const constraints = new Float64Array(this.shape.layers * 2);
    let penalty = 0;
    const full = this.shape.heads * this.block;
    this.sides.forEach((ls, l) => SIDES.forEach((side, k) => {
      const s = ls[side];
      const G = Float32Array.from(modelGrads.subarray(s.offset, s.offset + full));
      if (this.mode === 'fusion') {
        const i = l * 2 + k;
        // d(λc + φc²)/dc = λ + 2φc; c is needed before its gradient's scale, so measure it first.
        const w = this.expanded(l, side);
        const c = fusionConstraint(w, s.groups, this.sigma![l], this.shape.headDim, this.shape.hidden, this.energy![i]);
        const gap = c - (targets?.[i] ?? 0);
        const coef = this.lambda[i] + 2 * this.phi[i] * gap;
        if (coef !== 0) fusionConstraint(w, s.groups, this.sigma![l], this.shape.headDim, this.shape.hidden, this.energy![i], G, coef);
        constraints[i] = c;
        penalty += this.lambda[i] * gap + this.phi[i] * gap * gap;
      }
      const slot = grads.subarray(s.offset, s.offset + full);
      slot.fill(0);
      const at = (l * 2 + k) * s.mix.length;
      expandHeadsBackward(G, s.mix, s.support, this.base(s), this.block, slot, this.mode === 'fusion' ? dMix.subarray(at, at + s.mix.length) : null);
    }));
    return { params: grads, mix: dMix, constraints, penalty };
  }

  /** The multipliers' ascent step: λ += η·(c − t), φ += η·(c − t)² (t = 0 without targets). */
  ascend(constraints: Float64Array, eta: number, targets: Float64Array | null = null): void {
    for (let i = 0; i < constraints.length; i++) {
      const gap = constraints[i] - (targets?.[i] ?? 0);
      this.lambda[i] += eta * gap; this.phi[i] += eta * gap * gap;
    }
  }

  /** The collapse: every group becomes the mean of its expanded heads; a tied model over the same groups. */
  collapse(model: { c: TrainModel['c']; named: Array<NamedTensor<unknown>> }): HeadFusion {
    const params = Float32Array.from(this.params);
    const full = this.shape.heads * this.block;
    this.sides.forEach((ls, l) => SIDES.forEach((side) => {
      const s = ls[side];
      const pooled = poolHeads(this.expanded(l, side), s.groups, this.block);
      const slot = params.subarray(s.offset, s.offset + full);
      slot.fill(0);
      slot.set(pooled);
    }));
    return HeadFusion.tied(model, params, this.sides.map((ls) => ({ key: ls.key.groups, value: ls.value.groups })));
  }

  /**
   * A tied model's checkpoint tensors, in the model's order: k_proj with key_heads·head_dim rows and
   * v_proj with value_heads·head_dim rows, every other tensor as it is.
   */
  checkpointTensors(named: Array<NamedTensor<unknown>>): Array<{ name: string; shape: number[]; data: Float32Array }> {
    if (this.mode !== 'tied') throw new Error('collapse the fusion before saving: a checkpoint holds one head per group');
    const kept = new Map<string, number>();
    this.sides.forEach((ls, l) => SIDES.forEach((side) => kept.set(projName(l, side), ls[side].baseHeads)));
    return named.map((t) => {
      const n = kept.get(t.name);
      const shape = n === undefined ? t.shape : [n * this.shape.headDim, this.shape.hidden];
      const size = shape.reduce((a, b) => a * b, 1);
      return { name: t.name, shape, data: this.params.subarray(t.offset, t.offset + size) };
    });
  }
}

function headEnergy(w: Float32Array, h: number, sigma: Float64Array, hd: number, d: number): number {
  let e = 0;
  for (let r = 0; r < hd; r++) {
    const row = (h * hd + r) * d;
    for (let a = 0; a < d; a++) {
      const va = w[row + a];
      if (va === 0) continue;
      let s = 0;
      for (let b = 0; b < d; b++) s += sigma[a * d + b] * w[row + b];
      e += va * s;
    }
  }
  return e;
}
