// Locret's retaining-head scores (src/kv/locret/retaining-heads.ts has the reference):
//   scores[t] = fc2 · silu(fc1 · [q_t; k_t; v_t])     fc1 [hidden][qd + 2·kvd], fc2 [outDim][hidden]
// One workgroup per token: its threads share the hidden units (fc1 rows), keep the activations in
// workgroup memory, then share the outputs (fc2 rows). q, k and v rows start at their own offsets
// and strides (floats), so the model's projection tensors are read in place; they may be one buffer.
// hidden ≤ MAX_HIDDEN (the host checks).

const WG: u32 = 64u;
const MAX_HIDDEN: u32 = 1024u;

struct Params {
  n: u32,
  qd: u32,
  kvd: u32,
  hidden: u32,
  outDim: u32,
  qStride: u32,
  kStride: u32,
  vStride: u32,
  qOffset: u32,
  kOffset: u32,
  vOffset: u32,
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> qs: array<f32>;
@group(0) @binding(1) var<storage, read> ks: array<f32>;
@group(0) @binding(2) var<storage, read> vs: array<f32>;
@group(0) @binding(3) var<storage, read> fc1: array<f32>;
@group(0) @binding(4) var<storage, read> fc2: array<f32>;
@group(0) @binding(5) var<storage, read_write> scores: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

var<workgroup> act: array<f32, MAX_HIDDEN>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let t = wid.y * nwg.x + wid.x;
  if (t >= p.n) { return; }
  let inDim = p.qd + 2u * p.kvd;
  let q0 = p.qOffset + t * p.qStride;
  let k0 = p.kOffset + t * p.kStride;
  let v0 = p.vOffset + t * p.vStride;
  for (var h = li; h < p.hidden; h += WG) {
    let w = h * inDim;
    var z = 0.0;
    for (var i = 0u; i < p.qd; i++) { z += fc1[w + i] * qs[q0 + i]; }
    for (var i = 0u; i < p.kvd; i++) { z += fc1[w + p.qd + i] * ks[k0 + i]; }
    for (var i = 0u; i < p.kvd; i++) { z += fc1[w + p.qd + p.kvd + i] * vs[v0 + i]; }
    act[h] = z / (1.0 + exp(-z));
  }
  workgroupBarrier();
  for (var o = li; o < p.outDim; o += WG) {
    let w = o * p.hidden;
    var s = 0.0;
    for (var h = 0u; h < p.hidden; h++) { s += fc2[w + h] * act[h]; }
    scores[t * p.outDim + o] = s;
  }
}
