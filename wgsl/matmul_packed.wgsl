// out[r][o] (+)= Σ_i x[xOffset + r·inDim + i] · W[o][i] + bias[o], with W read packed (f16, Q8_0,
// Q4_0, Q4_K: lib/dequant.wgsl, FORMAT) from a u32 array: row o starts at byte o·rowBytes. No f32
// copy of W exists; each element is decoded where it is used. Same parameters, entry points and
// row-part convention as matmul.wgsl (outStride, outCol), so the host dispatches either alike:
//  - gemv (rows == 1): GEMV_TPR threads per output row stride over its 4-element groups.
//  - gemm (rows > 1): 64×64 output tiles, K in steps of 16 through workgroup memory; W's tile is
//    decoded as it is loaded, each thread accumulates a 4×4 block.

struct Params {
  rows: u32,
  inDim: u32,
  outDim: u32,
  xOffset: u32,
  // bit 0: add bias; bit 1: accumulate into out.
  flags: u32,
  tilesN: u32,
  outStride: u32,
  outCol: u32,
  // Bytes of one packed row of W (whole blocks).
  rowBytes: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

#include "lib/dequant.wgsl"
#include "lib/gemv_reduce.wgsl"

fn finish(index: u32, o: u32, sum: f32) {
  var v = sum;
  if ((p.flags & 1u) != 0u) { v += bias[p.outCol + o]; }
  if ((p.flags & 2u) != 0u) { v += out[index]; }
  out[index] = v;
}

// x[base + k .. base + k + 3], zeros at k + c ≥ inDim.
fn loadX4(base: u32, k: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  for (var c = 0u; c < 4u; c++) {
    if (k + c < p.inDim) { v[c] = x[base + k + c]; }
  }
  return v;
}

@compute @workgroup_size(256)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let group = wid.y * nwg.x + wid.x;
  let lane = li % GEMV_TPR;
  let o = group * GEMV_RPW + li / GEMV_TPR;
  var acc = vec4<f32>(0.0);
  if (o < p.outDim) {
    let row = o * p.rowBytes;
    for (var k = 4u * lane; k < p.inDim; k += 4u * GEMV_TPR) {
      acc += loadX4(p.xOffset, k) * decode4Masked(row, k, p.inDim);
    }
  }
  let s = rowSum(li, (acc.x + acc.y) + (acc.z + acc.w));
  if (lane == 0u && o < p.outDim) {
    finish(p.outCol + o, o, s);
  }
}

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

  for (var k0 = 0u; k0 < p.inDim; k0 += 4u * TK4) {
    let k = k0 + 4u * lk;
    var xv = vec4<f32>(0.0);
    var wv = vec4<f32>(0.0);
    if (xr < p.rows && k < p.inDim) { xv = loadX4(p.xOffset + xr * p.inDim, k); }
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

  for (var i = 0u; i < 4u; i++) {
    let r = m0 + ty + 16u * i;
    if (r < p.rows) {
      for (var j = 0u; j < 4u; j++) {
        let o = n0 + tx + 16u * j;
        if (o < p.outDim) { finish(r * p.outStride + p.outCol + o, o, acc[i][j]); }
      }
    }
  }
}
