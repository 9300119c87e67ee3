// gemv8Reduce for lib/gemv8.wgsl without subgroups: a tree reduction of the 256 threads' 8
// partials (two vec4s each) in workgroup memory. Call in uniform control flow.

var<workgroup> gemv8Lo: array<vec4<f32>, 256>;
var<workgroup> gemv8Hi: array<vec4<f32>, 256>;

// The workgroup's sum of row li's partials, for li < 8.
fn gemv8Reduce(lo: vec4<f32>, hi: vec4<f32>, li: u32) -> f32 {
  gemv8Lo[li] = lo;
  gemv8Hi[li] = hi;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride >>= 1u) {
    if (li < stride) {
      gemv8Lo[li] += gemv8Lo[li + stride];
      gemv8Hi[li] += gemv8Hi[li + stride];
    }
    workgroupBarrier();
  }
  return select(gemv8Hi[0], gemv8Lo[0], li < 4u)[li & 3u];
}
