// Retrieval-head attention over a full cache, flash-decoding style: workgroup (split, head, row)
// walks its share of the keys [split·split_len, …) ∩ [0, past_len + row] in tiles of 64 keys with an
// online softmax (running max m, sum l, rescaled accumulator) and writes a partial (m, l, o[head_dim]);
// attention_combine.wgsl merges the splits by log-sum-exp. Scores never leave workgroup memory.
// Used for prefill chunks (row > 0) and decode (one row) alike; GQA: head h reads KV head
// h / (num_heads / num_kv_heads); decoupled heads (DHA, mapped = 1): key head head_map[h] and value
// head head_map[num_heads + h], the V cache of its own head count (whole caches only, one part).
// The cache rows are KV_DTYPE (src/backend/kv-dtype.ts): 0 = f32, 1 = f16 (pairs unpacked from u32),
// 2 = int8 (codes sign-extended from u32, times the row's f32 scale, the row's last word).

override KV_DTYPE: u32 = 0u;

// A cache split over several buffers (src/gpu/tensor.ts GpuSplitTensor: consecutive parts of
// part_words words) runs one dispatch per part p over the cache rows (KV head, position) whose first
// word lies in it: rows row_first .. row_end, the first starting at word first_offset of the part.
// A row may run on into the next part, bound as k_next / v_next (the same part when there is none).
// Each part's splits write their own partials (split_base + split of total_splits), so the combine
// pass merges the parts like any other splits. A whole cache is one part.

struct Params {
  rows: u32, num_heads: u32, num_kv_heads: u32, head_dim: u32,
  past_len: u32, capacity: u32, split_len: u32, num_splits: u32,
  scale: f32,
  part_words: u32, row_first: u32, row_end: u32, first_offset: u32,
  split_base: u32, total_splits: u32,
  mapped: u32,
}

@group(0) @binding(0) var<storage, read_write> partials: array<f32>;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k_cache: array<u32>;
@group(0) @binding(3) var<storage, read> v_cache: array<u32>;
@group(0) @binding(4) var<storage, read> k_next: array<u32>;
@group(0) @binding(5) var<storage, read> v_next: array<u32>;
@group(0) @binding(6) var<storage, read> head_map: array<u32>;
@group(0) @binding(7) var<uniform> p: Params;

// Word i of this part's view (it continues into the next part).
fn k_word(i: u32) -> u32 {
  if (i < p.part_words) { return k_cache[i]; }
  return k_next[i - p.part_words];
}
fn v_word(i: u32) -> u32 {
  if (i < p.part_words) { return v_cache[i]; }
  return v_next[i - p.part_words];
}

const WG: u32 = 64u;
const MAX_D: u32 = 256u;

#include "lib/online_softmax.wgsl"

var<workgroup> q_s: array<f32, MAX_D>;

fn row_words(D: u32) -> u32 {
  if (KV_DTYPE == 1u) { return (D + 1u) / 2u; }
  if (KV_DTYPE == 2u) { return (D + 3u) / 4u + 1u; }
  return D;
}

// Byte b of w as a signed 8-bit value.
fn s8(w: u32, b: u32) -> f32 {
  return f32(bitcast<i32>(w << (24u - 8u * b)) >> 24u);
}

// Element d of the cache row starting at word `row` (V reads: one element per thread).
fn v_at(row: u32, d: u32, D: u32) -> f32 {
  if (KV_DTYPE == 1u) { return unpack2x16float(v_word(row + d / 2u))[d & 1u]; }
  if (KV_DTYPE == 2u) { return s8(v_word(row + d / 4u), d & 3u) * bitcast<f32>(v_word(row + (D + 3u) / 4u)); }
  return bitcast<f32>(v_word(row + d));
}

// q_s · the key row starting at word `row`, a word at a time.
fn q_dot_k(row: u32, D: u32) -> f32 {
  var dot = 0.0;
  if (KV_DTYPE == 1u) {
    let pairs = D / 2u;
    for (var w = 0u; w < pairs; w++) {
      let k2 = unpack2x16float(k_word(row + w));
      dot += q_s[2u * w] * k2.x + q_s[2u * w + 1u] * k2.y;
    }
    if ((D & 1u) != 0u) { dot += q_s[D - 1u] * unpack2x16float(k_word(row + pairs)).x; }
    return dot;
  }
  if (KV_DTYPE == 2u) {
    let words = (D + 3u) / 4u;
    for (var w = 0u; w < words; w++) {
      let k4 = k_word(row + w);
      for (var b = 0u; b < 4u; b++) {
        let d = 4u * w + b;
        if (d < D) { dot += q_s[d] * s8(k4, b); }
      }
    }
    return dot * bitcast<f32>(k_word(row + words));
  }
  for (var d = 0u; d < D; d++) { dot += q_s[d] * bitcast<f32>(k_word(row + d)); }
  return dot;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let split = wid.x;
  let h = wid.y;
  let r = wid.z;
  let D = p.head_dim;
  var kvh = h / (p.num_heads / p.num_kv_heads);
  var vh = kvh;
  if (p.mapped != 0u) {
    kvh = head_map[h];
    vh = head_map[p.num_heads + h];
  }
  let limit = p.past_len + r + 1u;
  // This part's rows of KV head kvh: positions lo .. hi (empty when hi ≤ lo).
  let head_row = kvh * p.capacity;
  let lo = max(p.row_first, head_row) - head_row;
  let hi = max(min(p.row_end, head_row + p.capacity), head_row) - head_row;
  let start = max(split * p.split_len, lo);
  let end = min(min(split * p.split_len + p.split_len, limit), hi);
  let q_base = (r * p.num_heads + h) * D;
  for (var d = t; d < D; d += WG) { q_s[d] = q[q_base + d] * p.scale; }
  workgroupBarrier();

  let W = row_words(D);
  // Word of position j's row in this part's view: kv_base + j·W (wrapping arithmetic: j ≥ lo).
  let kv_base = p.first_offset - (p.row_first - head_row) * W;
  // V rows of value head vh (= kvh unless mapped; mapped caches are one part, so this stays in it).
  let v_base = kv_base + (vh * p.capacity - head_row) * W;
  var m = NEG;
  var l = 0.0;
  var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
  var j0 = start;
  loop {
    if (j0 >= end) { break; }
    let n = min(WG, end - j0);
    var s = NEG;
    if (t < n) { s = q_dot_k(kv_base + (j0 + t) * W, D); }
    let tile = softmax_tile(m, l, s, t, n);
    for (var c = 0u; c < 4u; c++) {
      let d = t + c * WG;
      if (d < D) {
        var a = acc[c] * tile.alpha;
        var vb = v_base + j0 * W;
        for (var i = 0u; i < n; i++) { a += probs[i] * v_at(vb, d, D); vb += W; }
        acc[c] = a;
      }
    }
    m = tile.m;
    l = tile.l;
    workgroupBarrier();
    j0 += WG;
  }
  let base = ((r * p.num_heads + h) * p.total_splits + p.split_base + split) * (D + 2u);
  if (t == 0u) { partials[base] = m; partials[base + 1u] = l; }
  for (var c = 0u; c < 4u; c++) {
    let d = t + c * WG;
    if (d < D) { partials[base + 2u + d] = acc[c]; }
  }
}
