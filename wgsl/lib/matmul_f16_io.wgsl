// Bindings and loads of the shader-f16 GEMVs (matmul_f16*.wgsl; the including shader starts with
// `enable f16;`): an f16 weight's rows bound as vec4<f16>, read natively instead of unpacking u32
// pairs (lib/f16.wgsl). Only for inDim % 4 == 0, so that each row starts on a vec4<f16> (8 bytes).

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w16: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

#include "lib/matmul_x4.wgsl"

fn gemvX4(k: u32) -> vec4<f32> { return loadX4(p.xOffset, k); }
fn gemvW4(o: u32, k: u32) -> vec4<f32> { return vec4<f32>(w16[o * (p.inDim >> 2u) + (k >> 2u)]); }
