// RazorAttention's compensation state: adds the positions a chunk evicts from a streaming ring,
// [max(sink, past_len − recent), past_len + rows − recent), to the per-KV-head sums of keys and
// values ([kv_heads][head_dim]), in ascending order (streaming_attention.wgsl builds each query's
// sum in the same order). Positions before the chunk come from the ring, so this runs before
// ring_append overwrites them. One thread per (KV head, element).

#include "lib/ring_slot.wgsl"

struct Params {
  rows: u32, num_kv_heads: u32, head_dim: u32, past_len: u32, sink: u32, recent: u32,
}

@group(0) @binding(0) var<storage, read_write> k_sum: array<f32>;
@group(0) @binding(1) var<storage, read_write> v_sum: array<f32>;
@group(0) @binding(2) var<storage, read> k_ring: array<f32>;
@group(0) @binding(3) var<storage, read> v_ring: array<f32>;
@group(0) @binding(4) var<storage, read> k_chunk: array<f32>;
@group(0) @binding(5) var<storage, read> v_chunk: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let e = gid.x;
  if (e >= p.num_kv_heads * p.head_dim) { return; }
  let h = e / p.head_dim;
  let d = e % p.head_dim;
  let end = p.past_len + p.rows;
  if (end < p.recent + p.sink + 1u) { return; }
  let j0 = max(p.sink, select(0u, p.past_len - p.recent, p.past_len >= p.recent));
  var sk = k_sum[e];
  var sv = v_sum[e];
  for (var j = j0; j + p.recent < end; j++) {
    if (j < p.past_len) {
      let b = (h * (p.sink + p.recent) + ring_slot(j, p.sink, p.recent)) * p.head_dim + d;
      sk += k_ring[b];
      sv += v_ring[b];
    } else {
      let b = ((j - p.past_len) * p.num_kv_heads + h) * p.head_dim + d;
      sk += k_chunk[b];
      sv += v_chunk[b];
    }
  }
  k_sum[e] = sk;
  v_sum[e] = sv;
}
