// The decode GEMV (rows == 1) for real GPUs, as a template: a workgroup of 256 threads computes 8
// consecutive output rows o0..o0+7. Every thread walks the 4-element groups g = li, li + 256, … of
// inDim, loads x's group once and dots it with the same group of all 8 rows, so each row is read as
// 256 consecutive vec4s per step (coalesced) and x is reused 8 times. The 8 partial sums are then
// reduced over the workgroup by gemv8Reduce (lib/gemv8_subgroup.wgsl: subgroupAdd, or
// lib/gemv8_workgroup.wgsl: workgroup memory). The including shader defines, before including this:
//   gemvX4(k) -> vec4<f32>     x[k .. k + 3] of the one input row (zeros past inDim)
//   gemvW4(o, k) -> vec4<f32>  W[o][k .. k + 3] (zeros past inDim; called only for o < outDim)
// and includes lib/matmul_params.wgsl (p, finish, the folded norm) and one gemv8Reduce. Same parameters and row-part
// convention (outCol) as matmul.wgsl's gemv, and the same 8 rows per workgroup, folded into y.

const GEMV8_ROWS: u32 = 8u;
const GEMV8_THREADS: u32 = 256u;

@compute @workgroup_size(256)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let o0 = (wid.y * nwg.x + wid.x) * GEMV8_ROWS;
  let n = min(GEMV8_ROWS, max(p.outDim, o0) - o0);
  let norm = normOn();
  var lo = vec4<f32>(0.0);
  var hi = vec4<f32>(0.0);
  var sumSquares = 0.0;
  for (var k = 4u * li; k < p.inDim; k += 4u * GEMV8_THREADS) {
    let xv = normLoad(gemvX4(k), k, &sumSquares);
    var s = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var r = 0u; r < n; r++) { s[r] = dot(xv, gemvW4(o0 + r, k)); }
    lo += vec4<f32>(s[0], s[1], s[2], s[3]);
    hi += vec4<f32>(s[4], s[5], s[6], s[7]);
  }
  // The folded norm's scale: the workgroup's sum of squares, reduced like the rows' sums (the
  // barrier lets the second reduction reuse the workgroup memory).
  var scale = 1.0;
  if (norm) {
    scale = normScale(gemv8Reduce(vec4<f32>(sumSquares), vec4<f32>(sumSquares), li));
    workgroupBarrier();
  }
  let total = gemv8Reduce(lo, hi, li);
  if (li < n) { finish(p.outCol + o0 + li, o0 + li, total * scale); }
}
