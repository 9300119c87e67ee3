// Retrieval-head attention over a full cache, flash-decoding style: workgroup (split, head, row)
// walks its share of the keys [split·split_len, …) ∩ [0, past_len + row] in tiles of 64 keys with an
// online softmax (running max m, sum l, rescaled accumulator) and writes a partial (m, l, o[head_dim]);
// attention_combine.wgsl merges the splits by log-sum-exp. Scores never leave workgroup memory.
// Used for prefill chunks (row > 0) and decode (one row) alike; GQA: head h reads KV head
// h / (num_heads / num_kv_heads).

struct Params {
  rows: u32, num_heads: u32, num_kv_heads: u32, head_dim: u32,
  past_len: u32, capacity: u32, split_len: u32, num_splits: u32,
  scale: f32,
}

@group(0) @binding(0) var<storage, read_write> partials: array<f32>;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k_cache: array<f32>;
@group(0) @binding(3) var<storage, read> v_cache: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = 64u;
const MAX_D: u32 = 256u;
const NEG: f32 = -3.0e38;

var<workgroup> q_s: array<f32, MAX_D>;
var<workgroup> probs: array<f32, WG>;

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

  let kv_base = kvh * p.capacity * D;
  var m = NEG;
  var l = 0.0;
  var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
  var j0 = start;
  loop {
    if (j0 >= end) { break; }
    let n = min(WG, end - j0);
    var s = NEG;
    if (t < n) {
      let kb = kv_base + (j0 + t) * D;
      var dot = 0.0;
      for (var d = 0u; d < D; d++) { dot += q_s[d] * k_cache[kb + d]; }
      s = dot;
    }
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
        var vb = kv_base + j0 * D + d;
        for (var i = 0u; i < n; i++) { a += probs[i] * v_cache[vb]; vb += D; }
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
