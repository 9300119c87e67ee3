// Training GEMM with arbitrary strides, so the three products of a linear layer (y = x·Wᵀ,
// dx += dy·W, dW += dyᵀ·x) need no transposed copies:
//   out[o_off + r·ldo + c] (+)= Σ_i A(r, i)·B(c, i)
//   A(r, i) = a[a_off + r·a_rs + i·a_cs],  B(c, i) = b[b_off + c·b_rs + i·b_cs].
// 16×16 output tile per workgroup, the inner dimension staged through workgroup memory.

struct Params {
  rows: u32, cols: u32, inner: u32, accumulate: u32,
  o_off: u32, ldo: u32, a_off: u32, a_rs: u32,
  a_cs: u32, b_off: u32, b_rs: u32, b_cs: u32,
}

const TILE: u32 = 16u;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

// [row][inner] of A and [col][inner] of B; the extra column avoids bank conflicts.
var<workgroup> ta: array<array<f32, 17>, 16>;
var<workgroup> tb: array<array<f32, 17>, 16>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let r0 = wid.y * TILE;
  let c0 = wid.x * TILE;
  var acc = 0.0;
  for (var k0 = 0u; k0 < p.inner; k0 += TILE) {
    let k = k0 + lid.x;
    let ar = r0 + lid.y;
    var av = 0.0;
    if (ar < p.rows && k < p.inner) { av = a[p.a_off + ar * p.a_rs + k * p.a_cs]; }
    ta[lid.y][lid.x] = av;
    let bc = c0 + lid.y;
    var bv = 0.0;
    if (bc < p.cols && k < p.inner) { bv = b[p.b_off + bc * p.b_rs + k * p.b_cs]; }
    tb[lid.y][lid.x] = bv;
    workgroupBarrier();
    for (var kk = 0u; kk < TILE; kk++) { acc += ta[lid.y][kk] * tb[lid.x][kk]; }
    workgroupBarrier();
  }
  let r = r0 + lid.y;
  let c = c0 + lid.x;
  if (r < p.rows && c < p.cols) {
    let o = p.o_off + r * p.ldo + c;
    if (p.accumulate != 0u) { out[o] += acc; } else { out[o] = acc; }
  }
}
