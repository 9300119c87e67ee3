// DuoAttention gates in the identification forward/backward passes. Per (layer, KV head) a gate α
// mixes the head's full and streaming attention outputs: o = α·full + (1 − α)·stream. Tensors
// [rows][heads][hd] at element offsets; alphas holds the layer's KV heads' gates.
//   mix:        o = α·full + (1 − α)·stream
//   split:      dfull = α·dO, dstream = (1 − α)·dO
//   alpha_grad: grads[g_off + kvh] += Σ dO·(full − stream) over the KV head's query heads and rows
//               (one workgroup per KV head)

struct Params {
  rows: u32, heads: u32, kv_heads: u32, hd: u32,
  alpha_off: u32, a_off: u32, b_off: u32, c_off: u32,
  d_off: u32, g_off: u32,
}

const WG: u32 = 256u;

// mix: a_off: full, b_off: stream, c_off: o
@group(0) @binding(0) var<storage, read> mfull: array<f32>;
@group(0) @binding(1) var<storage, read> mstream: array<f32>;
@group(0) @binding(2) var<storage, read> malpha: array<f32>;
@group(0) @binding(3) var<storage, read_write> mo: array<f32>;
@group(0) @binding(4) var<uniform> mp: Params;

// split: a_off: dO, c_off: dfull, d_off: dstream
@group(0) @binding(0) var<storage, read> sdo: array<f32>;
@group(0) @binding(1) var<storage, read> salpha: array<f32>;
@group(0) @binding(2) var<storage, read_write> sdfull: array<f32>;
@group(0) @binding(3) var<storage, read_write> sdstream: array<f32>;
@group(0) @binding(4) var<uniform> sp: Params;

// alpha_grad: a_off: full, b_off: stream, c_off: dO
@group(0) @binding(0) var<storage, read> gfull: array<f32>;
@group(0) @binding(1) var<storage, read> gstream: array<f32>;
@group(0) @binding(2) var<storage, read> gdo: array<f32>;
@group(0) @binding(3) var<storage, read_write> ggrads: array<f32>;
@group(0) @binding(4) var<uniform> gp: Params;

#include "lib/workgroup_reduce.wgsl"

fn elementIndex(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + li;
}

// The KV head of element i of a [rows][heads][hd] tensor.
fn kvHead(i: u32, heads: u32, kvHeads: u32, hd: u32) -> u32 {
  return ((i / hd) % heads) / (heads / kvHeads);
}

@compute @workgroup_size(WG)
fn mix(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = elementIndex(wid, nwg, li);
  if (i >= mp.rows * mp.heads * mp.hd) { return; }
  let a = malpha[mp.alpha_off + kvHead(i, mp.heads, mp.kv_heads, mp.hd)];
  mo[mp.c_off + i] = a * mfull[mp.a_off + i] + (1.0 - a) * mstream[mp.b_off + i];
}

@compute @workgroup_size(WG)
fn split(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = elementIndex(wid, nwg, li);
  if (i >= sp.rows * sp.heads * sp.hd) { return; }
  let a = salpha[sp.alpha_off + kvHead(i, sp.heads, sp.kv_heads, sp.hd)];
  let g = sdo[sp.a_off + i];
  sdfull[sp.c_off + i] = a * g;
  sdstream[sp.d_off + i] = (1.0 - a) * g;
}

@compute @workgroup_size(WG)
fn alpha_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let kvh = wid.x;
  let groupSize = gp.heads / gp.kv_heads;
  let span = groupSize * gp.hd;
  var s = 0.0;
  for (var e = li; e < gp.rows * span; e += WG) {
    let r = e / span;
    let i = (r * gp.heads + kvh * groupSize) * gp.hd + e % span;
    s += gdo[gp.c_off + i] * (gfull[gp.a_off + i] - gstream[gp.b_off + i]);
  }
  let total = workgroupSum(li, s);
  if (li == 0u) { ggrads[gp.g_off + kvh] += total; }
}
