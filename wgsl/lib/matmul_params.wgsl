// The uniform block, the folded input norm (lib/matmul_norm.wgsl) and the output step shared by the
// matmul shaders (matmul*.wgsl). The including shader declares `bias: array<f32>`, `out: array<f32>`
// (read_write) and `p: Params` (bindings 2, 3 and 5; the norm weight is binding 4).

struct Params {
  rows: u32,
  inDim: u32,
  outDim: u32,
  xOffset: u32,
  // bit 0: add bias; bit 1: accumulate into out; bit 2: RMS-normalise x first (lib/matmul_norm.wgsl).
  flags: u32,
  // gemm: number of 64-wide tiles along outDim.
  tilesN: u32,
  // Row stride of out and bias, and the first column written (outDim and 0 unless w is a row part).
  outStride: u32,
  outCol: u32,
  // Packed weights: bytes of one packed row of W (whole blocks); unused for f32.
  rowBytes: u32,
  // The folded norm's epsilon (bit 2).
  normEps: f32,
}

#include "lib/matmul_norm.wgsl"

fn finish(index: u32, o: u32, sum: f32) {
  var v = sum;
  if ((p.flags & 1u) != 0u) { v += bias[p.outCol + o]; }
  if ((p.flags & 2u) != 0u) { v += out[index]; }
  out[index] = v;
}
