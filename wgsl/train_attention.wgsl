// Causal GQA attention for training, one sequence, probabilities kept for the backward pass.
// Layouts (element offsets into whole buffers): q, o, dq [T][H][hd]; k, v, dk, dv [T][KV][hd];
// probs and ds [H][T][T] (row i holds P[i][0..i], zeros after). With a streaming window, query i
// sees key j only when j < sink or j > i − recent (recent ≥ T: full attention).
//   forward:       one workgroup per (head, query row): scores, softmax, o = P·v.
//   backward_rows: one workgroup per (head, query row): dS = P ∘ (dP − rowsum(P ∘ dP)) with
//                  dP = dO·vᵀ, kept in ds; dq += scale·dS·k.
//   backward_keys: one workgroup per (KV head, key row): dk += scale·dSᵀ·q, dv += Pᵀ·dO, summed
//                  over the query heads of the group (so no two workgroups write one element).

struct Params {
  rows: u32, heads: u32, kv_heads: u32, hd: u32,
  scale: f32, sink: u32, recent: u32, q_off: u32,
  k_off: u32, v_off: u32, o_off: u32, p_off: u32,
  ds_off: u32,
}

const WG: u32 = 64u;

// forward
@group(0) @binding(0) var<storage, read> fq: array<f32>;
@group(0) @binding(1) var<storage, read> fk: array<f32>;
@group(0) @binding(2) var<storage, read> fv: array<f32>;
@group(0) @binding(3) var<storage, read_write> fo: array<f32>;
@group(0) @binding(4) var<storage, read_write> fprobs: array<f32>;
@group(0) @binding(5) var<uniform> fp: Params;

// backward_rows (o_off: dO, q_off: dq)
@group(0) @binding(0) var<storage, read> rdo: array<f32>;
@group(0) @binding(1) var<storage, read> rprobs: array<f32>;
@group(0) @binding(2) var<storage, read> rk: array<f32>;
@group(0) @binding(3) var<storage, read> rv: array<f32>;
@group(0) @binding(4) var<storage, read_write> rds: array<f32>;
@group(0) @binding(5) var<storage, read_write> rdq: array<f32>;
@group(0) @binding(6) var<uniform> rp: Params;

// backward_keys (o_off: dO, k_off: dk, v_off: dv)
@group(0) @binding(0) var<storage, read> kq: array<f32>;
@group(0) @binding(1) var<storage, read> kdo: array<f32>;
@group(0) @binding(2) var<storage, read> kprobs: array<f32>;
@group(0) @binding(3) var<storage, read> kds: array<f32>;
@group(0) @binding(4) var<storage, read_write> kdk: array<f32>;
@group(0) @binding(5) var<storage, read_write> kdv: array<f32>;
@group(0) @binding(6) var<uniform> kp: Params;

#include "lib/workgroup_reduce.wgsl"

fn visible(i: u32, j: u32, sink: u32, recent: u32) -> bool {
  return j <= i && (j < sink || j + recent > i);
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
  let g = wid.y * nwg.x + wid.x;
  let T = fp.rows;
  if (g >= fp.heads * T) { return; }
  let h = g / T;
  let i = g % T;
  let kvh = h / (fp.heads / fp.kv_heads);
  let qb = fp.q_off + (i * fp.heads + h) * fp.hd;
  let prow = fp.p_off + g * T;
  var m = -3.0e38;
  for (var j = li; j < T; j += WG) {
    var s = 0.0;
    if (visible(i, j, fp.sink, fp.recent)) {
      let kb = fp.k_off + (j * fp.kv_heads + kvh) * fp.hd;
      for (var d = 0u; d < fp.hd; d++) { s += fq[qb + d] * fk[kb + d]; }
      s *= fp.scale;
      m = max(m, s);
    }
    fprobs[prow + j] = s;
  }
  m = workgroupMax(li, m);
  var sum = 0.0;
  for (var j = li; j < T; j += WG) {
    var e = 0.0;
    if (visible(i, j, fp.sink, fp.recent)) { e = exp(fprobs[prow + j] - m); }
    fprobs[prow + j] = e;
    sum += e;
  }
  let inv = 1.0 / workgroupSum(li, sum);
  for (var j = li; j <= i; j += WG) { fprobs[prow + j] *= inv; }
  storageBarrier();
  let ob = fp.o_off + (i * fp.heads + h) * fp.hd;
  for (var d = li; d < fp.hd; d += WG) {
    var acc = 0.0;
    for (var j = 0u; j <= i; j++) { acc += fprobs[prow + j] * fv[fp.v_off + (j * fp.kv_heads + kvh) * fp.hd + d]; }
    fo[ob + d] = acc;
  }
}

@compute @workgroup_size(WG)
fn backward_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
  let g = wid.y * nwg.x + wid.x;
  let T = rp.rows;
  if (g >= rp.heads * T) { return; }
  let h = g / T;
  let i = g % T;
  let kvh = h / (rp.heads / rp.kv_heads);
  let db = rp.o_off + (i * rp.heads + h) * rp.hd;
  let prow = rp.p_off + g * T;
  let srow = rp.ds_off + g * T;
  var rowDot = 0.0;
  for (var j = li; j <= i; j += WG) {
    let vb = rp.v_off + (j * rp.kv_heads + kvh) * rp.hd;
    var dp = 0.0;
    for (var d = 0u; d < rp.hd; d++) { dp += rdo[db + d] * rv[vb + d]; }
    rds[srow + j] = dp;
    rowDot += rprobs[prow + j] * dp;
  }
  let D = workgroupSum(li, rowDot);
  for (var j = li; j < T; j += WG) {
    var ds = 0.0;
    if (j <= i) { ds = rprobs[prow + j] * (rds[srow + j] - D); }
    rds[srow + j] = ds;
  }
  storageBarrier();
  let qb = rp.q_off + (i * rp.heads + h) * rp.hd;
  for (var d = li; d < rp.hd; d += WG) {
    var acc = 0.0;
    for (var j = 0u; j <= i; j++) { acc += rds[srow + j] * rk[rp.k_off + (j * rp.kv_heads + kvh) * rp.hd + d]; }
    rdq[qb + d] += rp.scale * acc;
  }
}

@compute @workgroup_size(WG)
fn backward_keys(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
  let g = wid.y * nwg.x + wid.x;
  let T = kp.rows;
  if (g >= kp.kv_heads * T) { return; }
  let kvh = g / T;
  let j = g % T;
  let groupSize = kp.heads / kp.kv_heads;
  let kb = (j * kp.kv_heads + kvh) * kp.hd;
  for (var d = li; d < kp.hd; d += WG) {
    var dk = 0.0;
    var dv = 0.0;
    for (var h = kvh * groupSize; h < (kvh + 1u) * groupSize; h++) {
      for (var i = j; i < T; i++) {
        let pi = (h * T + i) * T + j;
        let qi = (i * kp.heads + h) * kp.hd + d;
        dk += kds[kp.ds_off + pi] * kq[kp.q_off + qi];
        dv += kprobs[kp.p_off + pi] * kdo[kp.o_off + qi];
      }
    }
    kdk[kp.k_off + kb + d] += kp.scale * dk;
    kdv[kp.v_off + kb + d] += dv;
  }
}
