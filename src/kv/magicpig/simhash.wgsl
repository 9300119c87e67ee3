// MagicPIG SimHash codes (src/kv/magicpig/reference.ts has the math), the GPU side of SIMHASH_KERNEL
// (src/kv/magicpig/kernels.ts): one thread per (row, pair of tables) writes one
// u32 = code(2t) | code(2t + 1) << 16, so codes [n][pairs] u32 are byte for byte the CPU's [n][cs]
// u16 layout (cs = 2·pairs = L rounded up to 8; tables ≥ L give 0).
//   code_ℓ(x) = Σ_{b<K} [(x − center)·planes[ℓK + b] > 0] · 2^b,  planes [K·L][d] f32.
// Row r of x starts at float xOffset + r·xStride (a [rows][heads][d] tensor's head h: xOffset h·d,
// xStride heads·d; slot s of a ring [H][slots][d]: xOffset s·d, xStride slots·d). Centered, row r
// subtracts center[centerOffset + r·centerStride + i] (centerStride 0: one center for every row);
// not centered, the caller binds any read-only buffer as `center` (it is not read). Row r's codes
// start at u32 codesOffset + r·pairs.

struct Params {
  n: u32,
  d: u32,
  K: u32,
  L: u32,
  xStride: u32,
  xOffset: u32,
  // cs / 2: u32 words per row of codes.
  pairs: u32,
  centered: u32,
  centerStride: u32,
  centerOffset: u32,
  codesOffset: u32,
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> xs: array<f32>;
@group(0) @binding(1) var<storage, read> planes: array<f32>;
@group(0) @binding(2) var<storage, read> center: array<f32>;
@group(0) @binding(3) var<storage, read_write> codes: array<u32>;
@group(0) @binding(4) var<uniform> p: Params;

fn code(row: u32, t: u32) -> u32 {
  if (t >= p.L) { return 0u; }
  let x0 = p.xOffset + row * p.xStride;
  let c0 = p.centerOffset + row * p.centerStride;
  var c = 0u;
  for (var b = 0u; b < p.K; b++) {
    let w0 = (t * p.K + b) * p.d;
    var dot = 0.0;
    for (var i = 0u; i < p.d; i++) {
      var v = xs[x0 + i];
      if (p.centered != 0u) { v = v - center[c0 + i]; }
      dot += v * planes[w0 + i];
    }
    if (dot > 0.0) { c |= 1u << b; }
  }
  return c;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let idx = (wid.y * nwg.x + wid.x) * 64u + li;
  if (idx >= p.n * p.pairs) { return; }
  let row = idx / p.pairs;
  let t = (idx % p.pairs) * 2u;
  codes[p.codesOffset + idx] = code(row, t) | (code(row, t + 1u) << 16u);
}
