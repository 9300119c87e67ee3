enable f16;
enable subgroups;
// The decode GEMV (rows == 1) of f16 weights with both `shader-f16` and `subgroups`: lib/gemv8.wgsl
// reading halves natively (lib/matmul_f16_io.wgsl), reduced with subgroupAdd.
// Validated on Dawn's null backend (test/gpu-shader-f16.test.ts); no adapter here executes it.

#include "lib/matmul_params.wgsl"
#include "lib/matmul_f16_io.wgsl"
#include "lib/gemv8_subgroup.wgsl"
#include "lib/gemv8.wgsl"
