enable f16;
// The decode GEMV (rows == 1) of f16 weights with the `shader-f16` feature and without `subgroups`:
// lib/gemv8.wgsl reading halves natively (lib/matmul_f16_io.wgsl), reduced in workgroup memory.
// Validated on Dawn's null backend (test/gpu-shader-f16.test.ts); no adapter here executes it.

#include "lib/matmul_params.wgsl"
#include "lib/matmul_f16_io.wgsl"
#include "lib/gemv8_workgroup.wgsl"
#include "lib/gemv8.wgsl"
