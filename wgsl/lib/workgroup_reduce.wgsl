// Sum and max of one value per thread over a workgroup of WG threads (WG a power of two, declared by
// the including shader), by a tree in workgroup memory; every thread gets the result. Call from
// uniform control flow: both contain barriers, and the last one lets the caller reuse the memory.

var<workgroup> wg_reduce: array<f32, WG>;

fn workgroupSum(li: u32, v: f32) -> f32 {
  wg_reduce[li] = v;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (li < stride) { wg_reduce[li] += wg_reduce[li + stride]; }
    workgroupBarrier();
  }
  let total = wg_reduce[0];
  workgroupBarrier();
  return total;
}

fn workgroupMax(li: u32, v: f32) -> f32 {
  wg_reduce[li] = v;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (li < stride) { wg_reduce[li] = max(wg_reduce[li], wg_reduce[li + stride]); }
    workgroupBarrier();
  }
  let top = wg_reduce[0];
  workgroupBarrier();
  return top;
}
