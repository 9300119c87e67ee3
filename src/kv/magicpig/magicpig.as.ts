// MagicPIG's CPU kernels (src/kv/magicpig/reference.ts has the math): SimHash codes of a batch of
// vectors, and for one KV head the gather-and-attend of its GQA group of queries over the keys
// that collide with each query in at least 2 of the L tables.
//
// Layouts (byte addresses; the host, src/kv/magicpig/cpu.ts, owns them):
//   planes  [K·L][d] f32: hyperplane ℓK+b is row ℓK+b (MagicPIG's W transposed).
//   codes   [n][cs] u16: table ℓ's code in column ℓ; cs is L rounded up to a multiple of 8 and the
//           columns from L on are ignored (masked), so one v128 compares 8 tables.
//   keys, values [n][d] f32 (original keys), kNorms [n] f32 = |k − k̄|.
//
//   tables  (optional) per table ℓ the keys sorted by code, CSR style as in MagicPIG's lsh.cc:
//           order [L][n] i32 key indices, start [L][2^K + 1] i32 (bucket b of table ℓ is
//           order[ℓ][start[ℓ][b] .. start[ℓ][b+1])), built by lshBuildTables.
//
// Collisions are counted either by a linear SIMD scan of the codes (8 tables per i16x8 compare +
// popcount of the lane mask: n·cs/8 compares per query, no extra memory) or, with tables, by
// walking the query's L buckets with a u8 counter per key that lists the key at its second hit
// (cost ∝ the buckets' sizes, about L·n/2^K).
import { gemmSet } from '../../../assembly/matmul';
import { expv, exps } from '../../../assembly/simd';

/** Rows hashed per gemmSet (the planes are read once per tile). */
const TILE: i32 = 16;

/** Scratch floats simhashCodes needs: a tile of centered rows, its projections and a bit buffer. */
export function simhashScratchFloats(K: i32, L: i32, d: i32): i32 {
  const kl = K * L;
  return TILE * d + TILE * kl + (((kl + 7) >> 3) + 8 + 3) / 4;
}

/**
 * codes[r][ℓ] = Σ_{b<K} [(x_r − center)·planes[ℓK+b] > 0]·2^b for r < n (x rows `stride` floats
 * apart; center = 0: none). norms ≠ 0: norms[r] = |x_r − center|. Columns L..cs−1 are set to 0.
 */
export function simhashCodes(codes: usize, norms: usize, x: usize, n: i32, d: i32, stride: i32, center: usize,
  planes: usize, K: i32, L: i32, cs: i32, scratch: usize): void {
  const kl = K * L;
  const rowBytes: usize = (<usize>d) << 2;
  const xs = scratch;
  const proj = xs + <usize>TILE * rowBytes;
  const bits = proj + ((<usize>TILE * <usize>kl) << 2);
  const mask: u64 = (<u64>1 << <u64>K) - 1;
  const end4: usize = (<usize>(d & ~3)) << 2;
  for (let r0 = 0; r0 < n; r0 += TILE) {
    const nr = min(TILE, n - r0);
    for (let r = 0; r < nr; r++) {
      const src = x + <usize>(r0 + r) * (<usize>stride << 2);
      const dst = xs + <usize>r * rowBytes;
      let ss = f32x4.splat(0);
      let s: f32 = 0;
      let i: usize = 0;
      for (; i < end4; i += 16) {
        let v = v128.load(src + i);
        if (center) v = f32x4.sub(v, v128.load(center + i));
        v128.store(dst + i, v);
        ss = f32x4.add(ss, f32x4.mul(v, v));
      }
      for (; i < rowBytes; i += 4) {
        let v = load<f32>(src + i);
        if (center) v -= load<f32>(center + i);
        store<f32>(dst + i, v);
        s += v * v;
      }
      if (norms) {
        s += f32x4.extract_lane(ss, 0) + f32x4.extract_lane(ss, 1) + f32x4.extract_lane(ss, 2) + f32x4.extract_lane(ss, 3);
        store<f32>(norms + ((<usize>(r0 + r)) << 2), Mathf.sqrt(s));
      }
    }
    gemmSet(proj, kl, xs, d, planes, d, nr, d, kl);
    for (let r = 0; r < nr; r++) {
      // Sign bits of the row's K·L projections, 8 per byte (bit c of the buffer = projection c > 0).
      const pr = proj + ((<usize>r * <usize>kl) << 2);
      let c = 0;
      for (; c + 8 <= kl; c += 8) {
        const p = pr + ((<usize>c) << 2);
        const lo = i32x4.bitmask(f32x4.gt(v128.load(p), f32x4.splat(0)));
        const hi = i32x4.bitmask(f32x4.gt(v128.load(p, 16), f32x4.splat(0)));
        store<u8>(bits + <usize>(c >> 3), <u8>(lo | (hi << 4)));
      }
      if (c < kl) {
        let byte: i32 = 0;
        for (let b = 0; c + b < kl; b++) if (load<f32>(pr + ((<usize>(c + b)) << 2)) > 0) byte |= 1 << b;
        store<u8>(bits + <usize>(c >> 3), <u8>byte);
      }
      const out = codes + ((<usize>(r0 + r) * <usize>cs) << 1);
      for (let t = 0; t < L; t++) {
        const bit = t * K;
        // K ≤ 16 bits starting at most 7 bits into a byte: within one unaligned u64 (the buffer has 8 spare bytes).
        const word = load<u64>(bits + <usize>(bit >> 3));
        store<u16>(out + ((<usize>t) << 1), <u16>((word >> <u64>(bit & 7)) & mask));
      }
      for (let t = L; t < cs; t++) store<u16>(out + ((<usize>t) << 1), 0);
    }
  }
}

/**
 * SIMHASH_KERNEL's CPU side (src/kv/magicpig/kernels.ts): codes of n rows (x rows `xStride` floats
 * apart) into [n][2·pairs] u16 at `codes`, each row centered by its own center (`centerStride`
 * floats apart; 0: one center for all) when `centered` ≠ 0. Rows sharing a center go to simhashCodes
 * together (one tile pass over the planes per 16 rows); rows with centers of their own, one by one.
 * 2·pairs must be ≥ L (the host passes codeStride(L) / 2); columns L..2·pairs−1 are set to 0.
 */
export function simhashRows(codes: usize, x: usize, xStride: i32, center: usize, centerStride: i32, centered: i32,
  n: i32, d: i32, planes: usize, K: i32, L: i32, pairs: i32, scratch: usize): void {
  const cs = 2 * pairs;
  if (cs < L) unreachable();
  if (centered == 0 || centerStride == 0) {
    simhashCodes(codes, 0, x, n, d, xStride, centered != 0 ? center : 0, planes, K, L, cs, scratch);
    return;
  }
  for (let r = 0; r < n; r++) {
    simhashCodes(codes + ((<usize>r * <usize>cs) << 1), 0, x + ((<usize>r * <usize>xStride) << 2), 1, d, xStride,
      center + ((<usize>r * <usize>centerStride) << 2), planes, K, L, cs, scratch);
  }
}

/** Scratch floats magicpigAttend needs: an index list per query of the group and one logit row. */
export function magicpigScratchFloats(n: i32, group: i32): i32 {
  // Index lists, logits, u8 counters (tables only).
  return group * n + n + (n + 3) / 4 + 4;
}

/** Scratch floats lshBuildTables needs: one bucket cursor row. */
export function lshTablesScratchFloats(K: i32): i32 {
  return (1 << K) + 4;
}

/** Builds order / start (see the header) from codes [n][cs] u16: a counting sort per table. */
export function lshBuildTables(order: usize, start: usize, codes: usize, n: i32, cs: i32, L: i32, K: i32, scratch: usize): void {
  const buckets = 1 << K;
  const startRow: usize = (<usize>(buckets + 1)) << 2;
  const codeBytes: usize = (<usize>cs) << 1;
  for (let t = 0; t < L; t++) {
    const st = start + <usize>t * startRow;
    memory.fill(st, 0, startRow);
    const col = codes + ((<usize>t) << 1);
    for (let j = 0; j < n; j++) {
      const p = st + ((<usize>load<u16>(col + <usize>j * codeBytes) + 1) << 2);
      store<i32>(p, load<i32>(p) + 1);
    }
    for (let b = 0; b < buckets; b++) {
      const p = st + ((<usize>(b + 1)) << 2);
      store<i32>(p, load<i32>(p) + load<i32>(p - 4));
    }
    memory.copy(scratch, st, (<usize>buckets) << 2);
    const ord = order + ((<usize>t * <usize>n) << 2);
    for (let j = 0; j < n; j++) {
      const cp = scratch + ((<usize>load<u16>(col + <usize>j * codeBytes)) << 2);
      const c = load<i32>(cp);
      store<i32>(ord + ((<usize>c) << 2), j);
      store<i32>(cp, c + 1);
    }
  }
}

// @ts-ignore: decorator
@inline
function dotf(a: usize, b: usize, d: i32): f32 {
  const bytes: usize = (<usize>d) << 2, end4: usize = (<usize>(d & ~3)) << 2;
  let acc = f32x4.splat(0);
  let i: usize = 0;
  for (; i < end4; i += 16) acc = f32x4.add(acc, f32x4.mul(v128.load(a + i), v128.load(b + i)));
  let s: f32 = 0;
  for (; i < bytes; i += 4) s += load<f32>(a + i) * load<f32>(b + i);
  return s + (f32x4.extract_lane(acc, 0) + f32x4.extract_lane(acc, 1)) + (f32x4.extract_lane(acc, 2) + f32x4.extract_lane(acc, 3));
}

/** log(w + 1e−4), w = P(Binomial(L, u) ≥ 2), u = (1 − θ/π)^K; in f64 (w ≈ C(L,2)u² cancels in f32). */
function logSamplingWeight(theta: f64, K: i32, L: i32): f64 {
  const u = Math.pow(1.0 - theta / Math.PI, <f64>K);
  const a = Math.exp(<f64>(L - 1) * Math.log1p(-u));
  const w = max(0.0, 1.0 - a * (1.0 + <f64>(L - 1) * u));
  return Math.log(w + 1e-4);
}

/**
 * The correction is a function of θ alone for given K, L, smooth in θ (in cos θ it has square-root
 * ends), so a decode step reads it from a table over θ ∈ [0, π] (WEIGHT_CELLS cells, linear
 * interpolation) instead of five f64 transcendentals per sampled key. At build each cell is
 * checked at its quarter points; one off by more than WEIGHT_TOLERANCE (only near θ = π, where
 * K = 1 or 2 with a large L turns steeply) computes the formula instead.
 */
const WEIGHT_CELLS: i32 = 4096;
const WEIGHT_TOLERANCE: f64 = 1e-5;

/** f64 entries of a sampling-weight table: per cell its start value and its slope (NaN: computed exactly). */
export function samplingWeightEntries(): i32 {
  return 2 * WEIGHT_CELLS;
}

/** Fills `table` (samplingWeightEntries f64) for K, L: cell i spans θ ∈ [i, i + 1]·π / WEIGHT_CELLS. */
export function buildSamplingWeights(table: usize, K: i32, L: i32): void {
  const h = Math.PI / <f64>WEIGHT_CELLS;
  let a = logSamplingWeight(0, K, L);
  for (let i = 0; i < WEIGHT_CELLS; i++) {
    const b = logSamplingWeight(<f64>(i + 1) * h, K, L);
    let off = 0.0;
    for (let q = 1; q < 4; q++) {
      const f = <f64>q * 0.25;
      off = max(off, Math.abs(logSamplingWeight((<f64>i + f) * h, K, L) - (a + f * (b - a))));
    }
    const p = table + ((<usize>i) << 4);
    store<f64>(p, a);
    store<f64>(p, off <= WEIGHT_TOLERANCE ? b - a : NaN, 8);
    a = b;
  }
}

/** log(w + 1e−4) of a key at cos θ to the query, from `table` (buildSamplingWeights for K, L). */
export function tabledLogWeight(table: usize, cosTheta: f64, K: i32, L: i32): f64 {
  const theta = Math.acos(min(1.0, max(-1.0, cosTheta)));
  const t = theta * (<f64>WEIGHT_CELLS / Math.PI);
  const i = min(<i32>t, WEIGHT_CELLS - 1);
  const p = table + ((<usize>i) << 4);
  const slope = load<f64>(p, 8);
  if (isNaN(slope)) return logSamplingWeight(theta, K, L);
  return load<f64>(p) + (t - <f64>i) * slope;
}

// Pass 1 by scan: keys outer (each key's codes are read once for the whole group); lists ascending.
// Hits are counted in SIMD: an equal lane is −1, so subtracting the compare results counts per lane
// (at most cs/8 ≤ 32767 per lane), and one horizontal sum per (key, query) gives the tables hit.
function collectScan(lists: usize, counts: usize, qCodes: usize, kCodes: usize, n: i32, group: i32, cs: i32, L: i32): void {
  const codeBytes: usize = (<usize>cs) << 1;
  const nv = cs >> 3;
  // Lanes of the last vector that are tables (L − 8·(nv − 1) of 8): −1, the padding lanes 0.
  const tail = L - 8 * (nv - 1);
  const tailMask = i16x8.gt_s(i16x8(0, 1, 2, 3, 4, 5, 6, 7), i16x8.splat(<i16>(tail - 1)));
  for (let j = 0; j < n; j++) {
    const kr = kCodes + <usize>j * codeBytes;
    for (let g = 0; g < group; g++) {
      const qr = qCodes + <usize>g * codeBytes;
      let acc = i16x8.splat(0);
      let v = 0;
      for (; v < nv - 1; v++) {
        const o: usize = (<usize>v) << 4;
        acc = i16x8.sub(acc, i16x8.eq(v128.load(kr + o), v128.load(qr + o)));
      }
      const last: usize = (<usize>v) << 4;
      acc = i16x8.sub(acc, v128.andnot(i16x8.eq(v128.load(kr + last), v128.load(qr + last)), tailMask));
      const pairs = i32x4.extadd_pairwise_i16x8_s(acc);
      const hits = i32x4.extract_lane(pairs, 0) + i32x4.extract_lane(pairs, 1) + i32x4.extract_lane(pairs, 2) + i32x4.extract_lane(pairs, 3);
      if (hits >= 2) {
        const cp = counts + ((<usize>g) << 2);
        const c = load<i32>(cp);
        store<i32>(lists + ((<usize>g * <usize>n + <usize>c) << 2), j);
        store<i32>(cp, c + 1);
      }
    }
  }
}

// Pass 1 by tables: per query, the keys of its L buckets; a key is listed at its second hit (lists
// in discovery order). The counter stops at 2, so it cannot wrap whatever L.
function collectTables(lists: usize, counts: usize, qCodes: usize, order: usize, start: usize,
  n: i32, group: i32, cs: i32, L: i32, K: i32, counter: usize): void {
  const startRow: usize = (<usize>((1 << K) + 1)) << 2;
  for (let g = 0; g < group; g++) {
    memory.fill(counter, 0, <usize>n);
    const qr = qCodes + ((<usize>g * <usize>cs) << 1);
    const list = lists + ((<usize>g * <usize>n) << 2);
    let c = 0;
    for (let t = 0; t < L; t++) {
      const sp = start + <usize>t * startRow + ((<usize>load<u16>(qr + ((<usize>t) << 1))) << 2);
      const ord = order + ((<usize>t * <usize>n) << 2);
      const b1 = load<i32>(sp, 4);
      for (let i = load<i32>(sp); i < b1; i++) {
        const j = load<i32>(ord + ((<usize>i) << 2));
        const h = load<u8>(counter + <usize>j);
        if (h < 2) {
          store<u8>(counter + <usize>j, h + 1);
          if (h == 1) { store<i32>(list + ((<usize>c) << 2), j); c++; }
        }
      }
    }
    store<i32>(counts + ((<usize>g) << 2), c);
  }
}

/**
 * One KV head, `group` queries (q [group][d], qCodes [group][cs] u16) against keys j < n.
 * Per query g: the keys colliding in ≥ 2 tables go to list g (scratch) and counts[g], found by
 * the tables when order ≠ 0 (discovery order), else by the scan (ascending);
 * their logits are q·k·scale, minus log(w + 1e−4) read from the table `weights` when it is ≠ 0
 * (buildSamplingWeights for this K, L; cos θ between q and k − k̄ from q·k − q·k̄ and kNorms);
 * stats[2g] = max, stats[2g+1] = Σ exp(s − max), out[g] = Σ exp(s − max)·v (unnormalised). An empty
 * set gives −∞, 0 and zeros.
 */
export function magicpigAttend(out: usize, stats: usize, counts: usize, q: usize, qCodes: usize,
  keys: usize, values: usize, kNorms: usize, kCodes: usize, mean: usize,
  n: i32, group: i32, d: i32, cs: i32, L: i32, K: i32, scale: f32, weights: usize, order: usize, start: usize, scratch: usize): void {
  const rowBytes: usize = (<usize>d) << 2;
  const lists = scratch;
  const logits = scratch + ((<usize>group * <usize>n) << 2);
  for (let g = 0; g < group; g++) store<i32>(counts + ((<usize>g) << 2), 0);
  if (order) collectTables(lists, counts, qCodes, order, start, n, group, cs, L, K, logits + ((<usize>n) << 2));
  else collectScan(lists, counts, qCodes, kCodes, n, group, cs, L);
  // Pass 2 per query: corrected logits, max, exp, Σ, then P·V over the gathered rows.
  const end4: usize = (<usize>(d & ~3)) << 2;
  for (let g = 0; g < group; g++) {
    const qg = q + <usize>g * rowBytes;
    const m = load<i32>(counts + ((<usize>g) << 2));
    const list = lists + ((<usize>g * <usize>n) << 2);
    const og = out + <usize>g * rowBytes;
    memory.fill(og, 0, rowBytes);
    const sp = stats + ((<usize>g) << 3);
    if (m == 0) {
      store<f32>(sp, <f32>-Infinity);
      store<f32>(sp, 0, 4);
      continue;
    }
    const qNorm = Mathf.sqrt(dotf(qg, qg, d));
    const qMean = weights ? dotf(qg, mean, d) : <f32>0;
    let mx = <f32>-Infinity;
    for (let i = 0; i < m; i++) {
      const j = load<i32>(list + ((<usize>i) << 2));
      const qk = dotf(qg, keys + <usize>j * rowBytes, d);
      let s = qk * scale;
      if (weights) {
        const den = qNorm * load<f32>(kNorms + ((<usize>j) << 2));
        const cosTheta: f64 = den > 0 ? <f64>(qk - qMean) / <f64>den : 0.0;
        s = <f32>(<f64>s - tabledLogWeight(weights, cosTheta, K, L));
      }
      store<f32>(logits + ((<usize>i) << 2), s);
      mx = max(mx, s);
    }
    const mv = f32x4.splat(mx);
    let sumv = f32x4.splat(0);
    let sum: f32 = 0;
    let i = 0;
    for (; i + 4 <= m; i += 4) {
      const p = logits + ((<usize>i) << 2);
      const e = expv(f32x4.sub(v128.load(p), mv));
      v128.store(p, e);
      sumv = f32x4.add(sumv, e);
    }
    for (; i < m; i++) {
      const p = logits + ((<usize>i) << 2);
      const e = exps(load<f32>(p) - mx);
      store<f32>(p, e);
      sum += e;
    }
    sum += (f32x4.extract_lane(sumv, 0) + f32x4.extract_lane(sumv, 1)) + (f32x4.extract_lane(sumv, 2) + f32x4.extract_lane(sumv, 3));
    store<f32>(sp, mx);
    store<f32>(sp, sum, 4);
    for (let t = 0; t < m; t++) {
      const j = load<i32>(list + ((<usize>t) << 2));
      const w = load<f32>(logits + ((<usize>t) << 2));
      const vr = values + <usize>j * rowBytes;
      const wv = f32x4.splat(w);
      let c: usize = 0;
      for (; c < end4; c += 16) v128.store(og + c, f32x4.add(v128.load(og + c), f32x4.mul(wv, v128.load(vr + c))));
      for (; c < rowBytes; c += 4) store<f32>(og + c, load<f32>(og + c) + w * load<f32>(vr + c));
    }
  }
}
