// Merges the per-split partial softmax states (m, l, o) of attention.wgsl by log-sum-exp:
// out = Σ_s o_s·e^(m_s − M) / Σ_s l_s·e^(m_s − M), M = max_s m_s. Workgroup (head, row).

struct Params {
  rows: u32, num_heads: u32, head_dim: u32, num_splits: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

const WG: u32 = 64u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let h = wid.x;
  let r = wid.y;
  let D = p.head_dim;
  let stride = D + 2u;
  let base = (r * p.num_heads + h) * p.num_splits * stride;
  var m_max = -3.0e38;
  for (var s = 0u; s < p.num_splits; s++) { m_max = max(m_max, partials[base + s * stride]); }
  var l_sum = 0.0;
  for (var s = 0u; s < p.num_splits; s++) {
    l_sum += partials[base + s * stride + 1u] * exp(partials[base + s * stride] - m_max);
  }
  let inv = 1.0 / l_sum;
  for (var d = t; d < D; d += WG) {
    var o = 0.0;
    for (var s = 0u; s < p.num_splits; s++) {
      o += partials[base + s * stride + 2u + d] * exp(partials[base + s * stride] - m_max);
    }
    out[(r * p.num_heads + h) * D + d] = o * inv;
  }
}
