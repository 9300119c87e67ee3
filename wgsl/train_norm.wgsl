// RMSNorm for training: the forward keeps 1/rms per row for the backward, which is split in two
// kernels: dx (one workgroup per row) and the gain's gradient dg (one thread per column, summing
// over rows, so no two threads write the same element). Tensors are element offsets into whole
// buffers; x, y, dx, dy are [rows][dim].

struct Params {
  rows: u32, dim: u32, eps: f32, x_off: u32,
  y_off: u32, g_off: u32, rinv_off: u32, dy_off: u32,
  dx_off: u32, dg_off: u32,
}

const WG: u32 = 64u;

// forward: x, g → y, rinv
@group(0) @binding(0) var<storage, read> fx: array<f32>;
@group(0) @binding(1) var<storage, read> fg: array<f32>;
@group(0) @binding(2) var<storage, read_write> fy: array<f32>;
@group(0) @binding(3) var<storage, read_write> frinv: array<f32>;
@group(0) @binding(4) var<uniform> fp: Params;

// backward_dx: dy, x, rinv, g → dx (+=)
@group(0) @binding(0) var<storage, read> bdy: array<f32>;
@group(0) @binding(1) var<storage, read> bx: array<f32>;
@group(0) @binding(2) var<storage, read> brinv: array<f32>;
@group(0) @binding(3) var<storage, read> bg: array<f32>;
@group(0) @binding(4) var<storage, read_write> bdx: array<f32>;
@group(0) @binding(5) var<uniform> bp: Params;

// backward_dg: dy, x, rinv → dg (+=)
@group(0) @binding(0) var<storage, read> gdy: array<f32>;
@group(0) @binding(1) var<storage, read> gx: array<f32>;
@group(0) @binding(2) var<storage, read> grinv: array<f32>;
@group(0) @binding(3) var<storage, read_write> gdg: array<f32>;
@group(0) @binding(4) var<uniform> gp: Params;

#include "lib/workgroup_reduce.wgsl"

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= fp.rows) { return; }
  let xb = fp.x_off + row * fp.dim;
  var ss = 0.0;
  for (var i = li; i < fp.dim; i += WG) { let v = fx[xb + i]; ss += v * v; }
  let inv = 1.0 / sqrt(workgroupSum(li, ss) / f32(fp.dim) + fp.eps);
  if (li == 0u) { frinv[fp.rinv_off + row] = inv; }
  let yb = fp.y_off + row * fp.dim;
  for (var i = li; i < fp.dim; i += WG) { fy[yb + i] = fx[xb + i] * inv * fg[fp.g_off + i]; }
}

@compute @workgroup_size(WG)
fn backward_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= bp.rows) { return; }
  let inv = brinv[bp.rinv_off + row];
  let xb = bp.x_off + row * bp.dim;
  let yb = bp.dy_off + row * bp.dim;
  var rowDot = 0.0;
  for (var i = li; i < bp.dim; i += WG) { rowDot += bg[bp.g_off + i] * bdy[yb + i] * bx[xb + i]; }
  let c = inv * inv * inv * workgroupSum(li, rowDot) / f32(bp.dim);
  let ob = bp.dx_off + row * bp.dim;
  for (var i = li; i < bp.dim; i += WG) {
    bdx[ob + i] += inv * bg[bp.g_off + i] * bdy[yb + i] - c * bx[xb + i];
  }
}

@compute @workgroup_size(WG)
fn backward_dg(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= gp.dim) { return; }
  var s = 0.0;
  for (var r = 0u; r < gp.rows; r++) {
    s += gdy[gp.dy_off + r * gp.dim + i] * gx[gp.x_off + r * gp.dim + i] * grinv[gp.rinv_off + r];
  }
  gdg[gp.dg_off + i] += s;
}
