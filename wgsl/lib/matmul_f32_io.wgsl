// Bindings and loads of the f32 matmul shaders (matmul.wgsl, matmul_subgroup.wgsl). x and w are
// bound as arrays of vec4 (GPU buffers are padded to 16 bytes); without VEC4 the loads read single
// elements out of them, so odd inDim and an unaligned xOffset work too.

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

// inDim % 4 == 0 and xOffset % 4 == 0: whole-vec4 loads.
override VEC4: bool = false;

fn xAt(i: u32) -> f32 { return x[i >> 2u][i & 3u]; }
fn wAt(i: u32) -> f32 { return w[i >> 2u][i & 3u]; }

// x[row r][k .. k + 3], zeros at k + c ≥ inDim.
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

// w[row o][k .. k + 3], zeros at k + c ≥ inDim.
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
