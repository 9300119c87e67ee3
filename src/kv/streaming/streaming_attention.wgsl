// Streaming-head attention: query row r (position i = past_len + r) attends the keys j ≤ i with
// j < sink or j > i − recent. Keys before the chunk come from the ring ([kv_heads][sink+recent][D],
// slot j for sinks, sink + (j − sink) mod recent otherwise), the chunk's own keys from k/v
// ([rows][kv_heads][D]). At most sink + recent keys per query, so one pass per (head, row) with
// tiles of 64 keys and an online softmax; cost never depends on past_len.
//
// With comp = 1 (RazorAttention) the query also attends one compensation token standing for the
// n = i − recent + 1 − sink positions it no longer sees (none when n ≤ 0): the sums S = k_sum/v_sum
// of the state (positions [sink, past_len − recent)) plus positions max(sink, past_len − recent) …
// i − recent, added in that order (as compensation_append does, so chunks and decode agree); key
// S_k / n, value S_v / n, logit q·S_k / n + ln n. With comp = 0 the sums are not read (any buffer).
//
// Decoupled heads (DHA, mapped = 1): head h reads key head head_map[h] of the K ring / k chunk
// (num_kv_heads heads) and value head head_map[num_heads + h] of the V ring / v chunk (num_v_heads
// heads). Binding 6 then holds the head map instead of k_sum (no compensation with maps; the
// device's limit of 8 storage buffers leaves no binding to spare).
//
// With lse = 1 thread 0 also writes the query's log-sum-exp of its logits, m + ln l (the
// compensation token's included), at out[rows · num_heads · D + r · num_heads + h], after the
// output rows (no binding left for a buffer of its own): callers merge the partial softmax by it.

struct Params {
  rows: u32, num_heads: u32, num_kv_heads: u32, head_dim: u32,
  past_len: u32, sink: u32, recent: u32, scale: f32,
  comp: u32, mapped: u32, num_v_heads: u32, lse: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k_chunk: array<f32>;
@group(0) @binding(3) var<storage, read> v_chunk: array<f32>;
@group(0) @binding(4) var<storage, read> k_ring: array<f32>;
@group(0) @binding(5) var<storage, read> v_ring: array<f32>;
@group(0) @binding(6) var<storage, read> k_sum_or_map: array<u32>;
@group(0) @binding(7) var<storage, read> v_sum: array<f32>;
@group(0) @binding(8) var<uniform> p: Params;

const WG: u32 = 64u;
const MAX_D: u32 = 256u;

#include "lib/online_softmax.wgsl"
#include "lib/ring_slot.wgsl"

var<workgroup> q_s: array<f32, MAX_D>;
var<workgroup> key_base: array<u32, WG>;
var<workgroup> val_base: array<u32, WG>;
var<workgroup> key_in_ring: array<u32, WG>;
var<workgroup> comp_k: array<f32, MAX_D>;

// Position j's element d for KV head kvh: from the ring when j < past_len, else from the chunk.
fn kv_at(j: u32, kvh: u32, d: u32, is_key: bool) -> f32 {
  if (j < p.past_len) {
    let b = (kvh * (p.sink + p.recent) + ring_slot(j, p.sink, p.recent)) * p.head_dim + d;
    if (is_key) { return k_ring[b]; }
    return v_ring[b];
  }
  let b = ((j - p.past_len) * p.num_kv_heads + kvh) * p.head_dim + d;
  if (is_key) { return k_chunk[b]; }
  return v_chunk[b];
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let h = wid.x;
  let r = wid.y;
  let D = p.head_dim;
  var kvh = h / (p.num_heads / p.num_kv_heads);
  var vh = kvh;
  if (p.mapped == 1u) {
    kvh = k_sum_or_map[h];
    vh = k_sum_or_map[p.num_heads + h];
  }
  let i = p.past_len + r;
  // Visible keys: the sinks [0, n_sink), then the window [lo, i].
  let n_sink = min(p.sink, i + 1u);
  let lo = max(p.sink, select(0u, i + 1u - p.recent, i + 1u >= p.recent));
  let n_recent = select(0u, i + 1u - lo, i + 1u > lo);
  let total = n_sink + n_recent;
  let q_base = (r * p.num_heads + h) * D;
  for (var d = t; d < D; d += WG) { q_s[d] = q[q_base + d] * p.scale; }
  workgroupBarrier();

  let slots = p.sink + p.recent;
  var m = NEG;
  var l = 0.0;
  var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
  var k0 = 0u;
  loop {
    if (k0 >= total) { break; }
    let n = min(WG, total - k0);
    var s = NEG;
    if (t < n) {
      let idx = k0 + t;
      let j = select(lo + (idx - n_sink), idx, idx < n_sink);
      var base = 0u;
      var vbase = 0u;
      var in_ring = 0u;
      var dot = 0.0;
      if (j < p.past_len) {
        let slot = ring_slot(j, p.sink, p.recent);
        base = (kvh * slots + slot) * D;
        vbase = (vh * slots + slot) * D;
        in_ring = 1u;
        for (var d = 0u; d < D; d++) { dot += q_s[d] * k_ring[base + d]; }
      } else {
        base = ((j - p.past_len) * p.num_kv_heads + kvh) * D;
        vbase = ((j - p.past_len) * p.num_v_heads + vh) * D;
        for (var d = 0u; d < D; d++) { dot += q_s[d] * k_chunk[base + d]; }
      }
      key_base[t] = base;
      val_base[t] = vbase;
      key_in_ring[t] = in_ring;
      s = dot;
    }
    let tile = softmax_tile(m, l, s, t, n);
    for (var c = 0u; c < 4u; c++) {
      let d = t + c * WG;
      if (d < D) {
        var a = acc[c] * tile.alpha;
        for (var e = 0u; e < n; e++) {
          let b = val_base[e] + d;
          if (key_in_ring[e] == 1u) { a += probs[e] * v_ring[b]; } else { a += probs[e] * v_chunk[b]; }
        }
        acc[c] = a;
      }
    }
    m = tile.m;
    l = tile.l;
    workgroupBarrier();
    k0 += WG;
  }
  if (p.comp == 1u && i + 1u >= p.recent + p.sink + 1u) {
    let n = i + 1u - p.recent - p.sink;
    let j0 = max(p.sink, select(0u, p.past_len - p.recent, p.past_len >= p.recent));
    var vs = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var c = 0u; c < 4u; c++) {
      let d = t + c * WG;
      if (d < D) {
        var sk = bitcast<f32>(k_sum_or_map[kvh * D + d]);
        var sv = v_sum[kvh * D + d];
        for (var j = j0; j + p.recent <= i; j++) {
          sk += kv_at(j, kvh, d, true);
          sv += kv_at(j, kvh, d, false);
        }
        comp_k[d] = sk;
        vs[c] = sv;
      }
    }
    workgroupBarrier();
    var dot = 0.0;
    for (var d = 0u; d < D; d++) { dot += q_s[d] * comp_k[d]; }
    let inv = 1.0 / f32(n);
    let s_c = dot * inv + log(f32(n));
    let m_new = max(m, s_c);
    let alpha = exp(m - m_new);
    let pc = exp(s_c - m_new);
    l = l * alpha + pc;
    m = m_new;
    for (var c = 0u; c < 4u; c++) { acc[c] = acc[c] * alpha + pc * inv * vs[c]; }
  }
  if (p.lse == 1u && t == 0u) { out[p.rows * p.num_heads * D + r * p.num_heads + h] = m + log(l); }
  for (var c = 0u; c < 4u; c++) {
    let d = t + c * WG;
    if (d < D) { out[(r * p.num_heads + h) * D + d] = acc[c] / l; }
  }
}
