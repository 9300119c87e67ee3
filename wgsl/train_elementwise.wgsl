// Elementwise pieces of the training forward/backward passes, one thread per element (the linear
// index folded over x/y workgroups). Tensors are element offsets into whole buffers.
//   add:             y += x
//   add_bias:        y[r][c] += b[c]                       (n = rows·cols, cols in `cols`)
//   rope:            rotate-half rotation of x [rows][heads][hd] by a host-made table
//                    (cos [rows][hd/2] then sin [rows][hd/2]; sin negated for the inverse)
//   swiglu_forward:  h = silu(gate)·up
//   swiglu_backward: dgate, dup = the gradients of swiglu_forward given dh (overwritten)
//   embed_gather:    x[t] = embed[ids[t]]
//   embed_scatter:   dembed[ids[t]] += dx[t], one thread per column walking every row (no races)

struct Params {
  n: u32, cols: u32, rows: u32, heads: u32,
  hd: u32, a_off: u32, b_off: u32, c_off: u32,
  d_off: u32, e_off: u32,
}

const WG: u32 = 256u;

// add, add_bias: a_off: x or b, b_off: y
@group(0) @binding(0) var<storage, read> ax: array<f32>;
@group(0) @binding(1) var<storage, read_write> ay: array<f32>;
@group(0) @binding(2) var<uniform> ap: Params;

// rope: a_off: x, b_off: table
@group(0) @binding(0) var<storage, read> rtable: array<f32>;
@group(0) @binding(1) var<storage, read_write> rx: array<f32>;
@group(0) @binding(2) var<uniform> rp: Params;

// swiglu_forward: a_off: gate, b_off: up, c_off: h
@group(0) @binding(0) var<storage, read> sgate: array<f32>;
@group(0) @binding(1) var<storage, read> sup: array<f32>;
@group(0) @binding(2) var<storage, read_write> sh: array<f32>;
@group(0) @binding(3) var<uniform> sp: Params;

// swiglu_backward: a_off: gate, b_off: up, c_off: dh, d_off: dgate, e_off: dup
@group(0) @binding(0) var<storage, read> bgate: array<f32>;
@group(0) @binding(1) var<storage, read> bup: array<f32>;
@group(0) @binding(2) var<storage, read> bdh: array<f32>;
@group(0) @binding(3) var<storage, read_write> bdgate: array<f32>;
@group(0) @binding(4) var<storage, read_write> bdup: array<f32>;
@group(0) @binding(5) var<uniform> bp: Params;

// embed_gather: a_off: embed, b_off: x;  embed_scatter: a_off: dx, b_off: dembed
@group(0) @binding(0) var<storage, read> esrc: array<f32>;
@group(0) @binding(1) var<storage, read> eids: array<i32>;
@group(0) @binding(2) var<storage, read_write> edst: array<f32>;
@group(0) @binding(3) var<uniform> ep: Params;

fn elementIndex(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + li;
}

@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = elementIndex(wid, nwg, li);
  if (i >= ap.n) { return; }
  ay[ap.b_off + i] += ax[ap.a_off + i];
}

@compute @workgroup_size(WG)
fn add_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = elementIndex(wid, nwg, li);
  if (i >= ap.n) { return; }
  ay[ap.b_off + i] += ax[ap.a_off + i % ap.cols];
}

@compute @workgroup_size(WG)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let halfDim = rp.hd / 2u;
  let idx = elementIndex(wid, nwg, li);
  if (idx >= rp.rows * rp.heads * halfDim) { return; }
  let i = idx % halfDim;
  let rh = idx / halfDim;
  let r = rh / rp.heads;
  let c = rtable[rp.b_off + r * halfDim + i];
  let s = rtable[rp.b_off + (rp.rows + r) * halfDim + i];
  let o = rp.a_off + rh * rp.hd + i;
  let a = rx[o];
  let b = rx[o + halfDim];
  rx[o] = a * c - b * s;
  rx[o + halfDim] = b * c + a * s;
}

@compute @workgroup_size(WG)
fn swiglu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = elementIndex(wid, nwg, li);
  if (i >= sp.n) { return; }
  let g = sgate[sp.a_off + i];
  sh[sp.c_off + i] = g / (1.0 + exp(-g)) * sup[sp.b_off + i];
}

@compute @workgroup_size(WG)
fn swiglu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = elementIndex(wid, nwg, li);
  if (i >= bp.n) { return; }
  let g = bgate[bp.a_off + i];
  let s = 1.0 / (1.0 + exp(-g));
  let dh = bdh[bp.c_off + i];
  bdup[bp.e_off + i] = dh * g * s;
  bdgate[bp.d_off + i] = dh * bup[bp.b_off + i] * s * (1.0 + g * (1.0 - s));
}

@compute @workgroup_size(WG)
fn embed_gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = elementIndex(wid, nwg, li);
  if (i >= ep.rows * ep.cols) { return; }
  let t = i / ep.cols;
  let c = i % ep.cols;
  edst[ep.b_off + i] = esrc[ep.a_off + u32(eids[t]) * ep.cols + c];
}

@compute @workgroup_size(WG)
fn embed_scatter(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= ep.cols) { return; }
  for (var t = 0u; t < ep.rows; t++) {
    edst[ep.b_off + u32(eids[t]) * ep.cols + c] += esrc[ep.a_off + t * ep.cols + c];
  }
}
