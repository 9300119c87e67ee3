// In-place rotary embedding ("rotate half"): one thread per (row, head, i < headDim/2).
//   θ = positions[row] · invFreq[i];  a = x[i], b = x[i + half]
//   x[i] = a cos θ − b sin θ;  x[i + half] = b cos θ + a sin θ.
// Positions come from the uniform block when rows ≤ 60 (no extra buffer per call), else from a
// storage buffer. θ is reduced to [−π, π] before sin/cos (WGSL only bounds their error there).

struct Params {
  rows: u32,
  numHeads: u32,
  headDim: u32,
  // 1: positions are in `pos` below; 0: in the `positions` buffer.
  inUniform: u32,
  pos: array<vec4<i32>, 15>,
}

@group(0) @binding(0) var<storage, read_write> xs: array<f32>;
@group(0) @binding(1) var<storage, read> invFreq: array<f32>;
@group(0) @binding(2) var<storage, read> positions: array<i32>;
@group(0) @binding(3) var<uniform> p: Params;

const INV_TWO_PI: f32 = 0.15915494309189535;
const TWO_PI_HI: f32 = 6.28125;                 // exact in f32 (8 significant bits)
const TWO_PI_LO: f32 = 0.0019353071795864769;   // 2π − TWO_PI_HI

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let idx = (wid.y * nwg.x + wid.x) * 256u + li;
  let half = p.headDim / 2u;
  if (idx >= p.rows * p.numHeads * half) { return; }
  let i = idx % half;
  let rh = idx / half;             // row · numHeads + head
  let row = rh / p.numHeads;
  var pos: i32;
  if (p.inUniform != 0u) { pos = p.pos[row >> 2u][row & 3u]; } else { pos = positions[row]; }
  let theta = f32(pos) * invFreq[i];
  let n = round(theta * INV_TWO_PI);
  let t = (theta - n * TWO_PI_HI) - n * TWO_PI_LO;
  let c = cos(t);
  let s = sin(t);
  let base = rh * p.headDim;
  let a = xs[base + i];
  let b = xs[base + i + half];
  xs[base + i] = a * c - b * s;
  xs[base + i + half] = b * c + a * s;
}
