// Retrieval-head attention over a full cache, flash-decoding style: workgroup (split, head, row)
// walks its share of the keys [split·split_len, …) ∩ [0, past_len + row] in tiles of 64 keys with an
// online softmax (running max m, sum l, rescaled accumulator) and writes a partial (m, l, o[head_dim]);
// attention_combine.wgsl merges the splits by log-sum-exp. Scores never leave workgroup memory.
// Used for prefill chunks (row > 0) and decode (one row) alike; GQA: head h reads KV head
// h / (num_heads / num_kv_heads).
// The cache rows are KV_DTYPE (src/backend/kv-dtype.ts): 0 = f32, 1 = f16 (pairs unpacked from u32),
// 2 = int8 (codes sign-extended from u32, times the row's f32 scale, the row's last word).

override KV_DTYPE: u32 = 0u;

struct Params {
  rows: u32, num_heads: u32, num_kv_heads: u32, head_dim: u32,
  past_len: u32, capacity: u32, split_len: u32, num_splits: u32,
  scale: f32,
}

@group(0) @binding(0) var<storage, read_write> partials: array<f32>;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k_cache: array<u32>;
@group(0) @binding(3) var<storage, read> v_cache: array<u32>;
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = 64u;
const MAX_D: u32 = 256u;
const NEG: f32 = -3.0e38;

var<workgroup> q_s: array<f32, MAX_D>;
var<workgroup> probs: array<f32, WG>;

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
  if (KV_DTYPE == 1u) { return unpack2x16float(v_cache[row + d / 2u])[d & 1u]; }
  if (KV_DTYPE == 2u) { return s8(v_cache[row + d / 4u], d & 3u) * bitcast<f32>(v_cache[row + (D + 3u) / 4u]); }
  return bitcast<f32>(v_cache[row + d]);
}

// q_s · the key row starting at word `row`, a word at a time.
fn q_dot_k(row: u32, D: u32) -> f32 {
  var dot = 0.0;
  if (KV_DTYPE == 1u) {
    let pairs = D / 2u;
    for (var w = 0u; w < pairs; w++) {
      let k2 = unpack2x16float(k_cache[row + w]);
      dot += q_s[2u * w] * k2.x + q_s[2u * w + 1u] * k2.y;
    }
    if ((D & 1u) != 0u) { dot += q_s[D - 1u] * unpack2x16float(k_cache[row + pairs]).x; }
    return dot;
  }
  if (KV_DTYPE == 2u) {
    let words = (D + 3u) / 4u;
    for (var w = 0u; w < words; w++) {
      let k4 = k_cache[row + w];
      for (var b = 0u; b < 4u; b++) {
        let d = 4u * w + b;
        if (d < D) { dot += q_s[d] * s8(k4, b); }
      }
    }
    return dot * bitcast<f32>(k_cache[row + words]);
  }
  for (var d = 0u; d < D; d++) { dot += q_s[d] * bitcast<f32>(k_cache[row + d]); }
  return dot;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let split = wid.x;
  let h = wid.y;
  let r = wid.z;
  let D = p.head_dim;
  let kvh = h / (p.num_heads / p.num_kv_heads);
  let limit = p.past_len + r + 1u;
  let start = split * p.split_len;
  let end = min(start + p.split_len, limit);
  let q_base = (r * p.num_heads + h) * D;
  for (var d = t; d < D; d += WG) { q_s[d] = q[q_base + d] * p.scale; }
  workgroupBarrier();

  let W = row_words(D);
  let kv_base = kvh * p.capacity * W;
  var m = NEG;
  var l = 0.0;
  var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
  var j0 = start;
  loop {
    if (j0 >= end) { break; }
    let n = min(WG, end - j0);
    var s = NEG;
    if (t < n) { s = q_dot_k(kv_base + (j0 + t) * W, D); }
    probs[t] = s;
    workgroupBarrier();
    var tile_max = NEG;
    for (var i = 0u; i < n; i++) { tile_max = max(tile_max, probs[i]); }
    let m_new = max(m, tile_max);
    workgroupBarrier();
    probs[t] = select(0.0, exp(s - m_new), t < n);
    workgroupBarrier();
    var tile_sum = 0.0;
    for (var i = 0u; i < n; i++) { tile_sum += probs[i]; }
    let alpha = exp(m - m_new);
    l = l * alpha + tile_sum;
    for (var c = 0u; c < 4u; c++) {
      let d = t + c * WG;
      if (d < D) {
        var a = acc[c] * alpha;
        var vb = kv_base + j0 * W;
        for (var i = 0u; i < n; i++) { a += probs[i] * v_at(vb, d, D); vb += W; }
        acc[c] = a;
      }
    }
    m = m_new;
    workgroupBarrier();
    j0 += WG;
  }
  let base = ((r * p.num_heads + h) * p.num_splits + split) * (D + 2u);
  if (t == 0u) { partials[base] = m; partials[base + 1u] = l; }
  for (var c = 0u; c < 4u; c++) {
    let d = t + c * WG;
    if (d < D) { partials[base + 2u + d] = acc[c]; }
  }
}
