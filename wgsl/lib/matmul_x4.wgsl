// loadX4 for matmul shaders that bind x as `array<f32>` (any alignment of xOffset and inDim).

// x[base + k .. base + k + 3], zeros at k + c ≥ inDim.
fn loadX4(base: u32, k: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  for (var c = 0u; c < 4u; c++) {
    if (k + c < p.inDim) { v[c] = x[base + k + c]; }
  }
  return v;
}
