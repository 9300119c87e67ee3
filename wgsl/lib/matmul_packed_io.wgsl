// Bindings and loads of the packed-weight matmul shaders (matmul_packed*.wgsl): W is read packed
// from a u32 array (row o starts at byte o·rowBytes) and decoded by lib/dequant.wgsl (FORMAT).

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

#include "lib/dequant.wgsl"

#include "lib/matmul_x4.wgsl"
