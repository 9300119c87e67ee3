// Losses of the training and identification passes, one workgroup per row, each row's loss kept
// in row_loss so that `sum_into` can add the rows up in a fixed order (deterministic).
//   cross_entropy: loss[r] = w[r]·(logsumexp(logits[r]) − logits[r][target[r]]); dlogits its
//                  gradient (rows with weight 0: zeros)
//   mse:           loss[r] = w[r]·Σ (h − ref)², dh = 2·w[r]·(h − ref)
//   sum_into:      acc[slot] += Σ row_loss[0..rows) (a single workgroup)

struct Params {
  rows: u32, cols: u32, a_off: u32, b_off: u32,
  c_off: u32, slot: u32,
}

const WG: u32 = 256u;

// cross_entropy: a_off: logits, c_off: dlogits
@group(0) @binding(0) var<storage, read> clogits: array<f32>;
@group(0) @binding(1) var<storage, read> ctargets: array<i32>;
@group(0) @binding(2) var<storage, read> cweights: array<f32>;
@group(0) @binding(3) var<storage, read_write> cdlogits: array<f32>;
@group(0) @binding(4) var<storage, read_write> closs: array<f32>;
@group(0) @binding(5) var<uniform> cp: Params;

// mse: a_off: h, b_off: ref, c_off: dh
@group(0) @binding(0) var<storage, read> mh: array<f32>;
@group(0) @binding(1) var<storage, read> mref: array<f32>;
@group(0) @binding(2) var<storage, read> mweights: array<f32>;
@group(0) @binding(3) var<storage, read_write> mdh: array<f32>;
@group(0) @binding(4) var<storage, read_write> mloss: array<f32>;
@group(0) @binding(5) var<uniform> mp: Params;

// sum_into
@group(0) @binding(0) var<storage, read> srows: array<f32>;
@group(0) @binding(1) var<storage, read_write> sacc: array<f32>;
@group(0) @binding(2) var<uniform> sp: Params;

#include "lib/workgroup_reduce.wgsl"

@compute @workgroup_size(WG)
fn cross_entropy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
  let r = wid.y * nwg.x + wid.x;
  if (r >= cp.rows) { return; }
  let w = cweights[r];
  let base = cp.a_off + r * cp.cols;
  let dbase = cp.c_off + r * cp.cols;
  if (w == 0.0) {
    for (var c = li; c < cp.cols; c += WG) { cdlogits[dbase + c] = 0.0; }
    if (li == 0u) { closs[r] = 0.0; }
    return;
  }
  var m = -3.0e38;
  for (var c = li; c < cp.cols; c += WG) { m = max(m, clogits[base + c]); }
  m = workgroupMax(li, m);
  var s = 0.0;
  for (var c = li; c < cp.cols; c += WG) { s += exp(clogits[base + c] - m); }
  let lse = m + log(workgroupSum(li, s));
  let t = u32(ctargets[r]);
  for (var c = li; c < cp.cols; c += WG) {
    var g = w * exp(clogits[base + c] - lse);
    if (c == t) { g -= w; }
    cdlogits[dbase + c] = g;
  }
  if (li == 0u) { closs[r] = w * (lse - clogits[base + t]); }
}

@compute @workgroup_size(WG)
fn mse(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) li: u32) {
  let r = wid.y * nwg.x + wid.x;
  if (r >= mp.rows) { return; }
  let w = mweights[r];
  var s = 0.0;
  for (var c = li; c < mp.cols; c += WG) {
    let diff = mh[mp.a_off + r * mp.cols + c] - mref[mp.b_off + r * mp.cols + c];
    mdh[mp.c_off + r * mp.cols + c] = 2.0 * w * diff;
    s += diff * diff;
  }
  let total = workgroupSum(li, s);
  if (li == 0u) { mloss[r] = w * total; }
}

@compute @workgroup_size(WG)
fn sum_into(@builtin(local_invocation_index) li: u32) {
  var s = 0.0;
  for (var r = li; r < sp.rows; r += WG) { s += srows[r]; }
  let total = workgroupSum(li, s);
  if (li == 0u) { sacc[sp.slot] += total; }
}
