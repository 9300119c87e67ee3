// One tile of an online softmax over keys (flash-attention style), shared by the attention kernels:
// a workgroup of WG threads (declared by the including shader) walks the keys in tiles of up to WG,
// thread t holding the score s of key t of the tile (n keys in it). It keeps the running max m and
// sum l of e^(s − m); each tile rescales the earlier sum and the caller's value accumulator by
// alpha = e^(m_old − m_new). After softmax_tile, probs[i] = e^(s_i − m_new) for i < n, ready for the
// caller's V pass; the caller ends the tile with a workgroupBarrier before the next one overwrites
// probs. Call from uniform control flow (it contains barriers).

const NEG: f32 = -3.0e38;

var<workgroup> probs: array<f32, WG>;

struct SoftmaxTile {
  // Running max and sum after this tile.
  m: f32,
  l: f32,
  // Factor for everything accumulated before this tile.
  alpha: f32,
}

fn softmax_tile(m: f32, l: f32, s: f32, t: u32, n: u32) -> SoftmaxTile {
  probs[t] = s;
  workgroupBarrier();
  var tile_max = NEG;
  for (var i = 0u; i < n; i++) { tile_max = max(tile_max, probs[i]); }
  let m_new = max(m, tile_max);
  workgroupBarrier();
  probs[t] = select(0.0, exp(s - m_new), t < n);
  workgroupBarrier();
  var tile_sum = 0.0;
  for (var i = 0u; i < n; i++) { tile_sum += probs[i]; }
  let alpha = exp(m - m_new);
  return SoftmaxTile(m_new, l * alpha + tile_sum, alpha);
}
