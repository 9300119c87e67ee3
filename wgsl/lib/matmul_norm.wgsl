// The RMSNorm folded into a matmul's input (flags bit 2; Backend.matmul's `norm`): row r of x is used
// as x[r] · normWeight · s(r), s(r) = 1 / sqrt(mean(x[r]²) + normEps). The loads multiply by
// normWeight; the sum of squares comes from the same loads, and s(r) scales row r's dot products
// before finish(), so the normalised row is never written. normWeight is always bound (to a dummy
// buffer when the norm is off). Included by lib/matmul_params.wgsl.

@group(0) @binding(4) var<storage, read> normWeight: array<f32>;

fn normOn() -> bool { return (p.flags & 4u) != 0u; }

// normWeight[k .. k + 3], zeros at k + c ≥ inDim (where the loads of x give zeros too).
fn normWeight4(k: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  for (var c = 0u; c < 4u; c++) {
    if (k + c < p.inDim) { v[c] = normWeight[k + c]; }
  }
  return v;
}

// A loaded group x[k .. k + 3] as the matmul uses it: times the norm weight, its squares added to
// *sumSquares (the caller's share of the row's); unchanged when the norm is off.
fn normLoad(xv: vec4<f32>, k: u32, sumSquares: ptr<function, f32>) -> vec4<f32> {
  if (!normOn()) { return xv; }
  *sumSquares += dot(xv, xv);
  return xv * normWeight4(k);
}

// The row scale s from the row's sum of squares.
fn normScale(sumSquares: f32) -> f32 { return 1.0 / sqrt(sumSquares / f32(p.inDim) + p.normEps); }

// GEMM: the 4 loader threads of each of the 64 tile rows (thread li loads row li / 4) keep their
// share of the row's sum of squares here, so every thread can scale the rows it writes.
var<workgroup> normRowShares: array<f32, 256>;

// Stores loader li's share; call once after the K loop, in uniform control flow.
fn normShareRows(li: u32, share: f32) {
  if (normOn()) { normRowShares[li] = share; }
  workgroupBarrier();
}

// s of tile row `row` (1 when the norm is off), after normShareRows.
fn normRowScale(row: u32) -> f32 {
  if (!normOn()) { return 1.0; }
  let b = 4u * row;
  return normScale(normRowShares[b] + normRowShares[b + 1u] + normRowShares[b + 2u] + normRowShares[b + 3u]);
}
