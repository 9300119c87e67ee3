enable subgroups;
// The packed-weight decode GEMV (rows == 1; f16 as u32 pairs, Q8_0, Q4_0, Q4_K by FORMAT) with
// subgroup reductions, for adapters with the `subgroups` feature: lib/gemv8.wgsl over
// matmul_packed.wgsl's bindings, each 4-element group decoded where it is used (lib/dequant.wgsl).

#include "lib/matmul_params.wgsl"
#include "lib/matmul_packed_io.wgsl"
#include "lib/gemv8_subgroup.wgsl"

fn gemvX4(k: u32) -> vec4<f32> { return loadX4(p.xOffset, k); }
fn gemvW4(o: u32, k: u32) -> vec4<f32> { return decode4Masked(o * p.rowBytes, k, p.inDim); }

#include "lib/gemv8.wgsl"
