// Locret's eviction (Huang et al., arXiv 2410.01805) as a KV method: each KV head keeps at most
// `budget` positions. After every chunk is stored, the retaining heads (./retaining-heads.ts) score
// the chunk's tokens, one score per KV head, computed once when the token arrives and kept with it
// (as Locret keeps them); the `stabilizers` most recent positions stay whatever their score, and the
// rest of the budget goes to the highest-scored older positions (equal scores: the earlier position).
//
// Positions: keys stay rotated at their true positions and new tokens get their true positions.
// Locret's code instead gives new tokens positions counted from the compressed cache's length; we
// keep true positions so the method drops into the engine's RoPE unchanged and matches full
// attention exactly when nothing is evicted.
//
// Part of a layer: a retaining head reads the whole layer's q, k, v (Locret's input) and scores every
// KV head, so a group serving only some of a layer's heads (the rest full or streaming) scores from
// every group's q, k, v, which the coordinator passes to append (LayerChunk), and keeps its heads' scores.
//
// Kernels: Backend.copy, Backend.kvAppend and Backend.attention (the full method's); scoring of a
// whole layer's group on the group's backend: Backend.rope with the negated inverse frequencies undoes RoPE on copies of q and
// k, then the named kernel locret_score (./kernels.ts, through Backend.run) scores the chunk, and
// one Backend.read brings the [rows][kvHeads] scores to the host, which selects what stays. A group
// serving part of a layer gathers the layer's q, k, v on the host and scores there (retainingForward).
//
// Layout: K and V, head-major [numKvHeads][min(capacity, budget)][headDim] f32, the kept positions
// in position order. While a chunk is processed a work cache [numKvHeads][kept + rows][headDim]
// holds the kept rows followed by the chunk: the full-cache attention kernel runs on it with
// pastLen = kept, so query row r attends rows ≤ kept + r. That is exactly causal attention over the
// kept positions and the chunk, because every kept position precedes the chunk. The kept positions
// and their scores live on the host (one number pair per position and KV head).
import type { Backend, DeviceTensor } from '../../backend/contract.js';
import { groupAttentionShape, tensorBytes, type KvGroupCache, type KvGroupShape, type KvMethod, type KvSettings, type KvTensorSpec, type LayerChunk } from '../method.js';
import { retainingForward, type RetainingHeadParams } from './retaining-heads.js';
import { runLocretScores } from './kernels.js';
import { checkLocretSettings, type LocretSettings } from './settings.js';

/**
 * The retaining heads' input rows [rows][inDim]: q and k with RoPE undone (the inverse rotation at
 * position pastLen + r, computed in float64: exact up to f32 rounding), then v.
 */
export function retainingInputs(q: Float32Array, k: Float32Array, v: Float32Array, rows: number, pastLen: number,
  shape: KvGroupShape, invFreq: Float32Array): Float32Array {
  const { numKvHeads: H, group, headDim: D } = shape;
  const qd = H * group * D, kvd = H * D, inDim = qd + 2 * kvd, half = D / 2;
  const x = new Float32Array(rows * inDim);
  const unrope = (src: Float32Array, from: number, heads: number, at: number, pos: number) => {
    for (let h = 0; h < heads; h++) {
      const s = from + h * D, o = at + h * D;
      for (let i = 0; i < half; i++) {
        const t = pos * invFreq[i], c = Math.cos(t), sn = Math.sin(t), a = src[s + i], b = src[s + i + half];
        x[o + i] = a * c + b * sn;
        x[o + i + half] = b * c - a * sn;
      }
    }
  };
  for (let r = 0; r < rows; r++) {
    unrope(q, r * qd, H * group, r * inDim, pastLen + r);
    unrope(k, r * kvd, H, r * inDim + qd, pastLen + r);
    x.set(v.subarray(r * kvd, (r + 1) * kvd), r * inDim + qd + kvd);
  }
  return x;
}

function storeWords(shape: KvGroupShape, capacity: number, budget: number): number {
  return shape.numKvHeads * Math.min(capacity, budget) * shape.headDim;
}

/**
 * Which of n candidates (in position order, with their scores) stay: all when n ≤ budget; else the
 * last `stabilizers` and the budget − stabilizers best-scored of the others (ties: lower index).
 * Returns candidate indices ascending.
 */
export function selectKept(scores: ArrayLike<number>, n: number, budget: number, stabilizers: number): number[] {
  if (n <= budget) return Array.from({ length: n }, (_, i) => i);
  const older = Array.from({ length: n - stabilizers }, (_, i) => i);
  older.sort((a, b) => scores[b] - scores[a] || a - b);
  const kept = older.slice(0, budget - stabilizers);
  for (let i = n - stabilizers; i < n; i++) kept.push(i);
  return kept.sort((a, b) => a - b);
}

/** The layer's retaining head on the device, and −invFreq (RoPE at −θ is its inverse). */
interface DeviceHead { params: RetainingHeadParams; fc1: DeviceTensor; fc2: DeviceTensor; negInvFreq: DeviceTensor }

interface Work { k: DeviceTensor; v: DeviceTensor; kIn: DeviceTensor; vIn: DeviceTensor; rows: number; pastLen: number }

class LocretCache implements KvGroupCache {
  private slots: number;
  private k: DeviceTensor;
  private v: DeviceTensor;
  /** How many positions each head keeps now (the same count for every head). */
  private count = 0;
  /** Per KV head: the kept positions (ascending) and their scores. */
  private keptPos: number[][];
  private keptScore: number[][];
  /** Positions seen so far (the next chunk must start here). */
  private seen = 0;
  private work: Work | null = null;
  private head: DeviceHead | null = null;

  constructor(private readonly be: Backend, private readonly shape: KvGroupShape, capacity: number,
    private readonly s: LocretSettings) {
    this.slots = Math.min(capacity, s.budget);
    this.k = be.alloc(storeWords(shape, capacity, s.budget));
    this.v = be.alloc(storeWords(shape, capacity, s.budget));
    this.keptPos = Array.from({ length: shape.numKvHeads }, () => []);
    this.keptScore = Array.from({ length: shape.numKvHeads }, () => []);
  }

  bytes(): number {
    return tensorBytes([this.k, this.v, this.work?.k ?? null, this.work?.v ?? null]);
  }

  attend(out: DeviceTensor, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, rows: number, pastLen: number): void {
    const w = this.workFor(k, v, rows, pastLen);
    this.be.attention(out, q, w.k, w.v, groupAttentionShape(this.shape, rows, this.count), this.count + rows);
  }

  async append(k: DeviceTensor, v: DeviceTensor, rows: number, pastLen: number, q: DeviceTensor, layer?: LayerChunk): Promise<void> {
    const w = this.workFor(k, v, rows, pastLen);
    const { numKvHeads: H, headDim: D } = this.shape;
    const own = Array.from({ length: this.shape.numKvHeads }, (_, h) => h);
    const { scores, stride, columns } = layer !== undefined && layer.groups.length > 1
      ? await this.scorePartLayer(rows, pastLen, layer)
      : { scores: await this.score(q, k, v, rows, pastLen), stride: this.shape.numKvHeads, columns: own };
    const n = this.count + rows, keep = Math.min(n, this.s.budget);
    for (let h = 0; h < H; h++) {
      const pos = [...this.keptPos[h]], score = [...this.keptScore[h]];
      for (let r = 0; r < rows; r++) { pos.push(pastLen + r); score.push(scores[r * stride + columns[h]]); }
      const kept = selectKept(score, n, this.s.budget, this.s.stabilizers);
      // Copy runs of consecutive work rows into the store.
      for (let t = 0; t < kept.length;) {
        let e = t + 1;
        while (e < kept.length && kept[e] === kept[e - 1] + 1) e++;
        const from = (h * n + kept[t]) * D, to = (h * this.slots + t) * D, len = (e - t) * D;
        this.be.copy(this.k, to, w.k, from, len);
        this.be.copy(this.v, to, w.v, from, len);
        t = e;
      }
      this.keptPos[h] = kept.map((i) => pos[i]);
      this.keptScore[h] = kept.map((i) => score[i]);
    }
    this.count = keep;
    this.seen = pastLen + rows;
    this.freeWork();
  }

  grow(capacity: number, pastLen: number): void {
    const slots = Math.min(capacity, this.s.budget);
    if (slots === this.slots) return;
    this.freeWork();
    const D = this.shape.headDim;
    const grow = (old: DeviceTensor): DeviceTensor => {
      const t = this.be.alloc(storeWords(this.shape, capacity, this.s.budget));
      for (let h = 0; h < this.shape.numKvHeads; h++) this.be.copy(t, h * slots * D, old, h * this.slots * D, this.count * D);
      this.be.free(old);
      return t;
    };
    if (pastLen !== this.seen) throw new Error(`locret cache holds ${this.seen} positions, asked to grow keeping ${pastLen}`);
    this.k = grow(this.k);
    this.v = grow(this.v);
    this.slots = slots;
  }

  free(): void {
    this.freeWork();
    this.be.free(this.k);
    this.be.free(this.v);
    if (this.head) for (const t of [this.head.fc1, this.head.fc2, this.head.negInvFreq]) this.be.free(t);
    this.head = null;
  }

  /** The chunk's scores [rows][kvHeads], computed on the backend from q, k (RoPE undone) and v. */
  private async score(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, rows: number, pastLen: number): Promise<Float32Array> {
    const { numKvHeads: H, group, headDim: D } = this.shape, qd = H * group * D, kvd = H * D;
    const head = this.retainingHead(), be = this.be;
    const qu = be.alloc(rows * qd), ku = be.alloc(rows * kvd), out = be.alloc(rows * H);
    try {
      be.copy(qu, 0, q, 0, rows * qd);
      be.copy(ku, 0, k, 0, rows * kvd);
      const positions = Int32Array.from({ length: rows }, (_, r) => pastLen + r);
      be.rope(qu, rows, H * group, D, positions, head.negInvFreq);
      be.rope(ku, rows, H, D, positions, head.negInvFreq);
      runLocretScores(be, { n: rows, qd, kvd, q: { tensor: qu, stride: qd }, k: { tensor: ku, stride: kvd }, v: { tensor: v, stride: kvd },
        fc1: head.fc1, fc2: head.fc2, hidden: head.params.hidden, outDim: H, scores: out });
      return await be.read(out);
    } finally {
      be.free(qu); be.free(ku); be.free(out);
    }
  }

  /** The work cache for this chunk: the kept rows, then the chunk (built once per chunk). */
  private workFor(k: DeviceTensor, v: DeviceTensor, rows: number, pastLen: number): Work {
    const w = this.work;
    if (w && w.kIn === k && w.vIn === v && w.rows === rows && w.pastLen === pastLen) return w;
    if (pastLen !== this.seen) throw new Error(`locret cache holds positions [0, ${this.seen}); a chunk at ${pastLen} does not follow them`);
    this.freeWork();
    const { numKvHeads: H, headDim: D } = this.shape, n = this.count + rows;
    const next: Work = { k: this.be.alloc(H * n * D), v: this.be.alloc(H * n * D), kIn: k, vIn: v, rows, pastLen };
    for (let h = 0; h < H; h++) {
      if (this.count === 0) break;
      this.be.copy(next.k, h * n * D, this.k, h * this.slots * D, this.count * D);
      this.be.copy(next.v, h * n * D, this.v, h * this.slots * D, this.count * D);
    }
    this.be.kvAppend(next.k, next.v, k, v, rows, H, D, n, this.count);
    this.work = next;
    return next;
  }

  private freeWork(): void {
    if (!this.work) return;
    this.be.free(this.work.k);
    this.be.free(this.work.v);
    this.work = null;
  }

  /**
   * The scores [rows][stride] of a group serving part of its layer (its KV head h in column
   * columns[h]): the other groups' q, k, v come from `layer` (all on the main backend, this method's
   * home) and are put back in the model's head order; scored on the host.
   */
  private async scorePartLayer(rows: number, pastLen: number, layer: LayerChunk): Promise<{ scores: ArrayLike<number>; stride: number; columns: readonly number[] }> {
    const { numKvHeads: H, group, headDim: D } = this.shape;
    const total = layer.groups.reduce((n, g) => n + g.kvHeads.length, 0);
    const whole: KvGroupShape = { numKvHeads: total, group, headDim: D, layer: this.shape.layer };
    const qa = new Float32Array(rows * total * group * D), ka = new Float32Array(rows * total * D), va = new Float32Array(rows * total * D);
    for (const g of layer.groups) {
      const n = g.kvHeads.length;
      const [qg, kg, vg] = [await this.be.read(g.q, 0, rows * n * group * D), await this.be.read(g.k, 0, rows * n * D), await this.be.read(g.v, 0, rows * n * D)];
      for (let r = 0; r < rows; r++) {
        g.kvHeads.forEach((at, i) => {
          qa.set(qg.subarray((r * n + i) * group * D, (r * n + i + 1) * group * D), (r * total + at) * group * D);
          ka.set(kg.subarray((r * n + i) * D, (r * n + i + 1) * D), (r * total + at) * D);
          va.set(vg.subarray((r * n + i) * D, (r * n + i + 1) * D), (r * total + at) * D);
        });
      }
    }
    const x = retainingInputs(qa, ka, va, rows, pastLen, whole, this.s.heads.invFreq(D));
    const columns = this.shape.kvHeads ?? Array.from({ length: H }, (_, h) => h);
    if (columns.length !== H || columns.some((c) => !(c >= 0 && c < total))) {
      throw new Error(`locret: this group's KV heads [${columns.join(', ')}] are not ${H} heads of its layer's ${total}`);
    }
    return { scores: retainingForward(this.layerHead(whole), x, rows).scores, stride: total, columns };
  }


  /** The retaining head of a whole layer, checked against it (a partial group scores from the layer's q, k, v). */
  private layerHead(layerShape: KvGroupShape): RetainingHeadParams {
    const { numKvHeads: H, group, headDim: D } = layerShape, layer = layerShape.layer ?? 0;
    const p = this.s.heads.head(layer, layerShape), inDim = (H * group + 2 * H) * D;
    if (p.inDim !== inDim || p.outDim !== H) {
      throw new Error(`locret: layer ${layer}'s retaining head reads ${p.inDim} values and scores ${p.outDim} KV heads, but the layer has ${H} KV heads × ${group} query heads × headDim ${D} (inDim ${inDim}); a group serving part of a layer scores from the whole layer's q, k, v, which append's LayerChunk carries`);
    }
    return p;
  }

  /** This layer's retaining head, checked against the group: it reads the whole layer's q, k, v. */
  private retainingHead(): DeviceHead {
    if (this.head) return this.head;
    const p = this.layerHead(this.shape), D = this.shape.headDim;
    const negInvFreq = this.be.upload(this.s.heads.invFreq(D).map((f) => -f));
    return (this.head = { params: p, fc1: this.be.upload(p.fc1), fc2: this.be.upload(p.fc2), negInvFreq });
  }
}

export const locretMethod: KvMethod = {
  name: 'locret',
  home: 'main',
  layout(shape: KvGroupShape, capacity: number, settings: KvSettings): KvTensorSpec[] {
    const words = storeWords(shape, capacity, checkLocretSettings(settings.locret).budget);
    return [{ name: 'K (kept)', words }, { name: 'V (kept)', words }];
  },
  create(backend: Backend, shape: KvGroupShape, capacity: number, settings: KvSettings): KvGroupCache {
    return new LocretCache(backend, shape, capacity, checkLocretSettings(settings.locret));
  },
};
