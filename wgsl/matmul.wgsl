// out[r][o] (+)= Σ_i x[xOffset + r·inDim + i] · w[o·inDim + i] + bias[o]   (y = x·Wᵀ + b, all f32).
// A weight split by rows into several buffers (one too big to bind whole) runs as one dispatch per
// part: w is the part, o its local row, and the result goes to column outCol + o of rows of outStride.
//
// Two entry points:
//  - gemv (rows == 1): each workgroup of 256 threads computes GEMV_RPW output rows; GEMV_TPR threads
//    stride over inDim for one output row (vec4 loads when VEC4), then reduce (lib/gemv_reduce.wgsl).
// matmul_packed.wgsl is the same for weights held packed (f16, Q8_0, Q4_0, Q4_K).
//  - gemm (rows > 1): 64×64 output tiles, K in steps of 16 through workgroup memory; each thread
//    accumulates a 4×4 block (rows ty + 16i, columns tx + 16j, so writes are coalesced).
// x and w are bound as arrays of vec4 (GPU buffers are padded to 16 bytes); the scalar path reads
// single elements out of them, so odd inDim and unaligned xOffset work too.
// Workgroups beyond dimension limits are folded into y: group = wid.y · nwg.x + wid.x.

struct Params {
  rows: u32,
  inDim: u32,
  outDim: u32,
  xOffset: u32,
  // bit 0: add bias; bit 1: accumulate into out.
  flags: u32,
  // gemm: number of 64-wide tiles along outDim.
  tilesN: u32,
  // Row stride of out and bias, and the first column written (outDim and 0 unless w is a part).
  outStride: u32,
  outCol: u32,
}

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

// inDim % 4 == 0 and xOffset % 4 == 0: whole-vec4 loads.
override VEC4: bool = false;

fn xAt(i: u32) -> f32 { return x[i >> 2u][i & 3u]; }
fn wAt(i: u32) -> f32 { return w[i >> 2u][i & 3u]; }

fn finish(index: u32, o: u32, sum: f32) {
  var v = sum;
  if ((p.flags & 1u) != 0u) { v += bias[p.outCol + o]; }
  if ((p.flags & 2u) != 0u) { v += out[index]; }
  out[index] = v;
}

// ---------------------------------------------------------------------------------------------
// GEMV

#include "lib/gemv_reduce.wgsl"

@compute @workgroup_size(256)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let group = wid.y * nwg.x + wid.x;
  let lane = li % GEMV_TPR;
  let o = group * GEMV_RPW + li / GEMV_TPR;
  var s = 0.0;
  if (o < p.outDim) {
    if (VEC4) {
      let n4 = p.inDim >> 2u;
      let wb = o * n4;
      let xb = p.xOffset >> 2u;
      var acc = vec4<f32>(0.0);
      var i = lane;
      // Two independent vec4 FMAs per iteration.
      for (; i + GEMV_TPR < n4; i += 2u * GEMV_TPR) {
        acc += x[xb + i] * w[wb + i];
        acc += x[xb + i + GEMV_TPR] * w[wb + i + GEMV_TPR];
      }
      if (i < n4) { acc += x[xb + i] * w[wb + i]; }
      s = (acc.x + acc.y) + (acc.z + acc.w);
    } else {
      let wb = o * p.inDim;
      for (var i = lane; i < p.inDim; i += GEMV_TPR) {
        s += xAt(p.xOffset + i) * wAt(wb + i);
      }
    }
  }
  let total = rowSum(li, s);
  if (lane == 0u && o < p.outDim) {
    finish(p.outCol + o, o, total);
  }
}

// ---------------------------------------------------------------------------------------------
// GEMM

const TILE: u32 = 64u;                 // output rows and columns per workgroup
const TK4: u32 = 4u;                   // K step in vec4s (16 floats)
const PAD: u32 = 5u;                   // row stride in vec4s of the tiles (TK4 + 1: fewer bank conflicts)

var<workgroup> tileX: array<vec4<f32>, 320>;   // [TILE][PAD] vec4, rows of x
var<workgroup> tileW: array<vec4<f32>, 320>;   // [TILE][PAD] vec4, rows of w

fn loadX(r: u32, k: u32) -> vec4<f32> {
  if (r >= p.rows || k >= p.inDim) { return vec4<f32>(0.0); }
  let base = p.xOffset + r * p.inDim + k;
  if (VEC4) { return x[base >> 2u]; }
  var v = vec4<f32>(0.0);
  for (var c = 0u; c < 4u; c++) {
    if (k + c < p.inDim) { v[c] = xAt(base + c); }
  }
  return v;
}

fn loadW(o: u32, k: u32) -> vec4<f32> {
  if (o >= p.outDim || k >= p.inDim) { return vec4<f32>(0.0); }
  let base = o * p.inDim + k;
  if (VEC4) { return w[base >> 2u]; }
  var v = vec4<f32>(0.0);
  for (var c = 0u; c < 4u; c++) {
    if (k + c < p.inDim) { v[c] = wAt(base + c); }
  }
  return v;
}

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

  for (var k0 = 0u; k0 < p.inDim; k0 += 4u * TK4) {
    tileX[lr * PAD + lk] = loadX(m0 + lr, k0 + 4u * lk);
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
