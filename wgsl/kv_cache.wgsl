// KV cache writes. `append`: a chunk's k/v ([rows][kv_heads][head_dim]) into a full head-major cache
// ([kv_heads][capacity][head_dim]) at positions past_len… `ring_append`: the positions a streaming
// ring keeps (p < sink, or among the chunk's last `recent`) into slot p (sinks) or
// sink + (p − sink) mod recent. One thread per element; workgroups folded into y. A full cache
// split over several buffers (src/gpu/tensor.ts GpuSplitTensor) is appended to once per part.

#include "lib/ring_slot.wgsl"

struct Params {
  rows: u32, num_kv_heads: u32, head_dim: u32, past_len: u32,
  capacity: u32, sink: u32, recent: u32, total: u32,
  // append: the bound k_dst / v_dst are words part_first .. part_first + part_words of the cache (a
  // cache split over several buffers is appended to once per part; whole: 0 and 0xffffffff).
  part_first: u32, part_words: u32,
  // value heads (decoupled heads, DHA: may differ from num_kv_heads, the key heads; the caches
  // are then whole) and v's element count; total covers the key side, the dispatch the larger.
  num_v_heads: u32, total_v: u32,
}

@group(0) @binding(0) var<storage, read_write> k_dst: array<f32>;
@group(0) @binding(1) var<storage, read_write> v_dst: array<f32>;
@group(0) @binding(2) var<storage, read> k_src: array<f32>;
@group(0) @binding(3) var<storage, read> v_src: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = 256u;

fn element(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + lid;
}

@compute @workgroup_size(256)
fn append(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
  let e = element(wid, nwg, lid);
  let d = e % p.head_dim;
  if (e < p.total) {
    let h = (e / p.head_dim) % p.num_kv_heads;
    let r = e / (p.head_dim * p.num_kv_heads);
    let dst = (h * p.capacity + p.past_len + r) * p.head_dim + d;
    if (dst >= p.part_first && dst - p.part_first < p.part_words) { k_dst[dst - p.part_first] = k_src[e]; }
  }
  if (e < p.total_v) {
    let h = (e / p.head_dim) % p.num_v_heads;
    let r = e / (p.head_dim * p.num_v_heads);
    let dst = (h * p.capacity + p.past_len + r) * p.head_dim + d;
    if (dst >= p.part_first && dst - p.part_first < p.part_words) { v_dst[dst - p.part_first] = v_src[e]; }
  }
}

@compute @workgroup_size(256)
fn ring_append(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let e = element(wid, nwg, lid);
  let d = e % p.head_dim;
  if (e < p.total) {
    let h = (e / p.head_dim) % p.num_kv_heads;
    let r = e / (p.head_dim * p.num_kv_heads);
    let dst = ring_dst(r, h, d);
    if (dst != NONE) { k_dst[dst] = k_src[e]; }
  }
  if (e < p.total_v) {
    let h = (e / p.head_dim) % p.num_v_heads;
    let r = e / (p.head_dim * p.num_v_heads);
    let dst = ring_dst(r, h, d);
    if (dst != NONE) { v_dst[dst] = v_src[e]; }
  }
}

const NONE: u32 = 0xffffffffu;

// Element d of chunk row r, head h: its word in the ring, or NONE when the ring does not keep the position.
fn ring_dst(r: u32, h: u32, d: u32) -> u32 {
  let pos = p.past_len + r;
  let keep = pos < p.sink || pos + p.recent >= p.past_len + p.rows;
  if (!keep) { return NONE; }
  return (h * (p.sink + p.recent) + ring_slot(pos, p.sink, p.recent)) * p.head_dim + d;
}
