// gemv8Reduce for lib/gemv8.wgsl with subgroup operations (the including shader starts with
// `enable subgroups;`): subgroupAdd sums each subgroup's 8 partials, one invocation per subgroup
// stores them, and threads 0..7 add the subgroups' sums. No assumption is made about how
// invocations map to subgroups or how large subgroups are: each subgroup's slot is the smallest
// local index among its invocations (distinct per subgroup), recorded in a bit mask, and the slots
// are summed in ascending order, so the result does not depend on scheduling (deterministic).

var<workgroup> gemv8Mask: array<atomic<u32>, 8>;
var<workgroup> gemv8Lo: array<vec4<f32>, 256>;
var<workgroup> gemv8Hi: array<vec4<f32>, 256>;

// The workgroup's sum of row li's partials, for li < 8 (other threads get 0). Call in uniform control flow.
fn gemv8Reduce(lo: vec4<f32>, hi: vec4<f32>, li: u32) -> f32 {
  let a = subgroupAdd(lo);
  let b = subgroupAdd(hi);
  let slot = subgroupMin(li);
  if (subgroupElect()) {
    gemv8Lo[slot] = a;
    gemv8Hi[slot] = b;
    atomicOr(&gemv8Mask[slot >> 5u], 1u << (slot & 31u));
  }
  workgroupBarrier();
  var total = 0.0;
  if (li < 8u) {
    for (var m = 0u; m < 8u; m++) {
      var bits = atomicLoad(&gemv8Mask[m]);
      while (bits != 0u) {
        let s = 32u * m + countTrailingZeros(bits);
        bits &= bits - 1u;
        total += select(gemv8Hi[s], gemv8Lo[s], li < 4u)[li & 3u];
      }
    }
  }
  return total;
}
