// out[r][o] (+)= Σ_i x[xOffset + r·inDim + i] · w[o·inDim + i] + bias[o]   (y = x·Wᵀ + b, all f32).
// A weight split by rows into several buffers (one too big to bind whole) runs as one dispatch per
// part: w is the part, o its local row, and the result goes to column outCol + o of rows of outStride.
//
// Two entry points:
//  - gemv (rows == 1): lib/gemv8.wgsl, 8 output rows per workgroup of 256 threads (vec4 loads when
//    VEC4), reduced in workgroup memory; matmul_subgroup.wgsl is the same with subgroup reductions.
// matmul_packed.wgsl is the same for weights held packed (f16, Q8_0, Q4_0, Q4_K).
//  - gemm (rows > 1): 64×64 output tiles, K in steps of 16 through workgroup memory; each thread
//    accumulates a 4×4 block (rows ty + 16i, columns tx + 16j, so writes are coalesced).
// Bindings and loads: lib/matmul_f32_io.wgsl.
// Workgroups beyond dimension limits are folded into y: group = wid.y · nwg.x + wid.x.

#include "lib/matmul_params.wgsl"
#include "lib/matmul_f32_io.wgsl"

// ---------------------------------------------------------------------------------------------
// GEMV: lib/gemv8.wgsl with the workgroup-memory reduction (matmul_subgroup.wgsl: with subgroupAdd).

#include "lib/gemv8_workgroup.wgsl"

fn gemvX4(k: u32) -> vec4<f32> { return loadX(0u, k); }
fn gemvW4(o: u32, k: u32) -> vec4<f32> { return loadW(o, k); }

#include "lib/gemv8.wgsl"

// ---------------------------------------------------------------------------------------------
// GEMM

const TILE: u32 = 64u;                 // output rows and columns per workgroup
const TK4: u32 = 4u;                   // K step in vec4s (16 floats)
const PAD: u32 = 5u;                   // row stride in vec4s of the tiles (TK4 + 1: fewer bank conflicts)

var<workgroup> tileX: array<vec4<f32>, 320>;   // [TILE][PAD] vec4, rows of x
var<workgroup> tileW: array<vec4<f32>, 320>;   // [TILE][PAD] vec4, rows of w

@compute @workgroup_size(256)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let group = wid.y * nwg.x + wid.x;
  let n0 = (group % p.tilesN) * TILE;
  let m0 = (group / p.tilesN) * TILE;
  let tx = li % 16u;
  let ty = li / 16u;
  // Loader role: one vec4 of x and one of w per K step.
  let lr = li / TK4;
  let lk = li % TK4;

  var acc: array<vec4<f32>, 4>;
  for (var i = 0u; i < 4u; i++) { acc[i] = vec4<f32>(0.0); }
  var sumSquares = 0.0;   // this loader's share of row lr's, for the folded norm

  for (var k0 = 0u; k0 < p.inDim; k0 += 4u * TK4) {
    tileX[lr * PAD + lk] = normLoad(loadX(m0 + lr, k0 + 4u * lk), k0 + 4u * lk, &sumSquares);
    tileW[lr * PAD + lk] = loadW(n0 + lr, k0 + 4u * lk);
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
