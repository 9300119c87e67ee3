// Packed KV rows (f16 or int8, src/backend/kv-dtype.ts) back to f32: the values a packed streaming
// ring holds, for the f32 streaming kernels. The rows are head-major, [kv_heads][n] rows of row_words
// words; the output is [kv_heads][n][head_dim] (token_major 0: a ring) or [n][kv_heads][head_dim]
// (token_major 1: a chunk, after kv_append_packed encoded it with capacity n). One thread per
// element. KV_DTYPE: 1 = f16, 2 = int8. The V side may have its own head count (decoupled heads,
// DHA): num_v_heads and total_v (the dispatch covers the larger side).

override KV_DTYPE: u32 = 1u;

struct Params {
  n: u32, num_kv_heads: u32, head_dim: u32, row_words: u32,
  token_major: u32, total: u32, num_v_heads: u32, total_v: u32,
}

@group(0) @binding(0) var<storage, read_write> k_dst: array<f32>;
@group(0) @binding(1) var<storage, read_write> v_dst: array<f32>;
@group(0) @binding(2) var<storage, read> k_src: array<u32>;
@group(0) @binding(3) var<storage, read> v_src: array<u32>;
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = 256u;

fn decode(word: u32, scale_word: u32, d: u32) -> f32 {
  if (KV_DTYPE == 1u) { return unpack2x16float(word)[d & 1u]; }
  let q = bitcast<i32>(word << (24u - 8u * (d & 3u))) >> 24u;
  return f32(q) * bitcast<f32>(scale_word);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let e = (wid.y * nwg.x + wid.x) * WG + lid; // element d of row s of KV head h, head-major
  let D = p.head_dim;
  let d = e % D;
  let s = (e / D) % p.n;
  let h = e / (D * p.n);
  let row = (h * p.n + s) * p.row_words;
  var w = d / 2u;
  if (KV_DTYPE == 2u) { w = d / 4u; }
  let sw = row + p.row_words - 1u;
  if (e < p.total) {
    var dst = e;
    if (p.token_major == 1u) { dst = (s * p.num_kv_heads + h) * D + d; }
    k_dst[dst] = decode(k_src[row + w], k_src[sw], d);
  }
  if (e < p.total_v) {
    var dst = e;
    if (p.token_major == 1u) { dst = (s * p.num_v_heads + h) * D + d; }
    v_dst[dst] = decode(v_src[row + w], v_src[sw], d);
  }
}
