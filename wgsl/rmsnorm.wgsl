// out[r] = x[r] / sqrt(mean(x[r]²) + eps) * weight, one workgroup per row (folded into y when
// rows exceed the per-dimension limit). `main` reads x and writes out; `in_place` works on one buffer
// (binding the same buffer as read-only and read-write storage in one dispatch is not allowed).
// Backend.rmsnorm, for callers that need the normalised rows (the forward pass folds its norms into
// the matmuls instead: lib/matmul_norm.wgsl).

struct Params {
  rows: u32,
  dim: u32,
  eps: f32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

// in_place bindings (only used by that entry point).
@group(0) @binding(0) var<storage, read_write> io: array<f32>;
@group(0) @binding(1) var<storage, read> weightIp: array<f32>;
@group(0) @binding(2) var<uniform> pIp: Params;

#include "lib/workgroup_reduce.wgsl"

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }
  let base = row * p.dim;
  var ss = 0.0;
  for (var i = li; i < p.dim; i += WG) { let v = x[base + i]; ss += v * v; }
  let inv = 1.0 / sqrt(workgroupSum(li, ss) / f32(p.dim) + p.eps);
  for (var i = li; i < p.dim; i += WG) { out[base + i] = x[base + i] * inv * weight[i]; }
}

@compute @workgroup_size(WG)
fn in_place(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= pIp.rows) { return; }
  let base = row * pIp.dim;
  var ss = 0.0;
  for (var i = li; i < pIp.dim; i += WG) { let v = io[base + i]; ss += v * v; }
  let inv = 1.0 / sqrt(workgroupSum(li, ss) / f32(pIp.dim) + pIp.eps);
  for (var i = li; i < pIp.dim; i += WG) { io[base + i] = io[base + i] * inv * weightIp[i]; }
}
