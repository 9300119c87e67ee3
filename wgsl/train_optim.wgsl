// AdamW on the GPU over the flat parameter array, with global gradient-norm clipping.
//   sum_squares: acc[slot] = Σ g² (a single workgroup; its result feeds `adamw` and the host's report)
//   adamw:       the update of src/train/adamw.ts, element by element; the clipping scale comes from
//                the squared norm in stats[0], so the host never waits for it

struct Params {
  n: u32, slot: u32, lr: f32, beta1: f32,
  beta2: f32, eps: f32, weight_decay: f32, c1: f32,
  c2: f32, clip: f32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> sg: array<f32>;
@group(0) @binding(1) var<storage, read_write> sacc: array<f32>;
@group(0) @binding(2) var<uniform> sp: Params;

@group(0) @binding(0) var<storage, read> ag: array<f32>;
@group(0) @binding(1) var<storage, read> amask: array<f32>;
@group(0) @binding(2) var<storage, read> astats: array<f32>;
@group(0) @binding(3) var<storage, read_write> aparams: array<f32>;
@group(0) @binding(4) var<storage, read_write> am: array<f32>;
@group(0) @binding(5) var<storage, read_write> av: array<f32>;
@group(0) @binding(6) var<uniform> ap: Params;

#include "lib/workgroup_reduce.wgsl"

@compute @workgroup_size(WG)
fn sum_squares(@builtin(local_invocation_index) li: u32) {
  var s = 0.0;
  for (var i = li; i < sp.n; i += WG) { let g = sg[i]; s += g * g; }
  let total = workgroupSum(li, s);
  if (li == 0u) { sacc[sp.slot] = total; }
}

@compute @workgroup_size(WG)
fn adamw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + li;
  if (i >= ap.n) { return; }
  let norm = sqrt(astats[0]);
  var scale = 1.0;
  if (norm > ap.clip) { scale = ap.clip / norm; }
  let g = ag[i] * scale;
  let m = ap.beta1 * am[i] + (1.0 - ap.beta1) * g;
  let v = ap.beta2 * av[i] + (1.0 - ap.beta2) * g * g;
  am[i] = m;
  av[i] = v;
  var p = aparams[i];
  if (amask[i] != 0.0) { p -= ap.lr * ap.weight_decay * p; }
  aparams[i] = p - ap.lr * (m / ap.c1) / (sqrt(v / ap.c2) + ap.eps);
}
