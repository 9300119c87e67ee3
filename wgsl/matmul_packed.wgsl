// out[r][o] (+)= Σ_i x[xOffset + r·inDim + i] · W[o][i] + bias[o], with W read packed (f16, Q8_0,
// Q4_0, Q4_K: lib/dequant.wgsl, FORMAT) from a u32 array: row o starts at byte o·rowBytes. No f32
// copy of W exists; each element is decoded where it is used. Same parameters, entry points and
// row-part convention as matmul.wgsl (outStride, outCol), so the host dispatches either alike:
//  - gemv (rows == 1): lib/gemv8.wgsl, 8 output rows per workgroup, reduced in workgroup memory
//    (matmul_packed_subgroup.wgsl: with subgroup reductions).
//  - gemm (rows > 1): 64×64 output tiles, K in steps of 16 through workgroup memory; W's tile is
//    decoded as it is loaded, each thread accumulates a 4×4 block.

#include "lib/matmul_params.wgsl"
#include "lib/matmul_packed_io.wgsl"
#include "lib/gemv8_workgroup.wgsl"

// GEMV: lib/gemv8.wgsl with the workgroup-memory reduction (matmul_packed_subgroup.wgsl: subgroupAdd).
fn gemvX4(k: u32) -> vec4<f32> { return loadX4(p.xOffset, k); }
fn gemvW4(o: u32, k: u32) -> vec4<f32> { return decode4Masked(o * p.rowBytes, k, p.inDim); }

#include "lib/gemv8.wgsl"

const TILE: u32 = 64u;                 // output rows and columns per workgroup
const TK4: u32 = 4u;                   // K step in vec4s (16 elements)
const PAD: u32 = 5u;                   // row stride in vec4s of the tiles (TK4 + 1: fewer bank conflicts)

var<workgroup> tileX: array<vec4<f32>, 320>;   // [TILE][PAD] vec4, rows of x
var<workgroup> tileW: array<vec4<f32>, 320>;   // [TILE][PAD] vec4, decoded rows of W

@compute @workgroup_size(256)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let group = wid.y * nwg.x + wid.x;
  let n0 = (group % p.tilesN) * TILE;
  let m0 = (group / p.tilesN) * TILE;
  let tx = li % 16u;
  let ty = li / 16u;
  // Loader role: one vec4 of x and one decoded vec4 of W per K step.
  let lr = li / TK4;
  let lk = li % TK4;
  let xr = m0 + lr;
  let wo = n0 + lr;

  var acc: array<vec4<f32>, 4>;
  for (var i = 0u; i < 4u; i++) { acc[i] = vec4<f32>(0.0); }
  var sumSquares = 0.0;   // this loader's share of row lr's, for the folded norm

  for (var k0 = 0u; k0 < p.inDim; k0 += 4u * TK4) {
    let k = k0 + 4u * lk;
    var xv = vec4<f32>(0.0);
    var wv = vec4<f32>(0.0);
    if (xr < p.rows && k < p.inDim) { xv = normLoad(loadX4(p.xOffset + xr * p.inDim, k), k, &sumSquares); }
    if (wo < p.outDim && k < p.inDim) { wv = decode4Masked(wo * p.rowBytes, k, p.inDim); }
    tileX[lr * PAD + lk] = xv;
    tileW[lr * PAD + lk] = wv;
    workgroupBarrier();
    for (var kq = 0u; kq < TK4; kq++) {
      let b0 = tileW[(tx) * PAD + kq];
      let b1 = tileW[(tx + 16u) * PAD + kq];
      let b2 = tileW[(tx + 32u) * PAD + kq];
      let b3 = tileW[(tx + 48u) * PAD + kq];
      for (var i = 0u; i < 4u; i++) {
        let a = tileX[(ty + 16u * i) * PAD + kq];
        acc[i] += vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
      }
    }
    workgroupBarrier();
  }

  normShareRows(li, sumSquares);
  for (var i = 0u; i < 4u; i++) {
    let r = m0 + ty + 16u * i;
    let scale = normRowScale(ty + 16u * i);
    if (r < p.rows) {
      for (var j = 0u; j < 4u; j++) {
        let o = n0 + tx + 16u * j;
        if (o < p.outDim) { finish(r * p.outStride + p.outCol + o, o, acc[i][j] * scale); }
      }
    }
  }
}
