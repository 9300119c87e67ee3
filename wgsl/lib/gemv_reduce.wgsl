// GEMV row reduction: a workgroup of 256 threads works on GEMV_RPW output rows, GEMV_TPR threads per
// row (threads li = row·GEMV_TPR + lane). rowSum returns the sum of the row's GEMV_TPR values to its
// lane 0 (other lanes get partial sums). Every thread of the workgroup must call it (barriers).

const GEMV_TPR: u32 = 32u;             // threads per output row
const GEMV_RPW: u32 = 8u;              // output rows per workgroup (GEMV_TPR · GEMV_RPW = 256)

var<workgroup> gemvPartial: array<f32, 256>;

fn rowSum(li: u32, v: f32) -> f32 {
  let lane = li % GEMV_TPR;
  gemvPartial[li] = v;
  workgroupBarrier();
  for (var stride = GEMV_TPR / 2u; stride > 0u; stride >>= 1u) {
    if (lane < stride) { gemvPartial[li] += gemvPartial[li + stride]; }
    workgroupBarrier();
  }
  return gemvPartial[li];
}
