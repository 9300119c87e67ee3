enable subgroups;
// The f32 decode GEMV (rows == 1) with subgroup reductions, for adapters with the `subgroups`
// feature: lib/gemv8.wgsl over matmul.wgsl's bindings and loads (vec4 loads when VEC4). Only the
// gemv entry point; prefill (rows > 1) stays on matmul.wgsl's gemm.

#include "lib/matmul_params.wgsl"
#include "lib/matmul_f32_io.wgsl"
#include "lib/gemv8_subgroup.wgsl"

fn gemvX4(k: u32) -> vec4<f32> { return loadX(0u, k); }
fn gemvW4(o: u32, k: u32) -> vec4<f32> { return loadW(o, k); }

#include "lib/gemv8.wgsl"
