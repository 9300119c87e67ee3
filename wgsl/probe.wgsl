// Roofline probes of the bench's GPU kernel rows (the counterparts of assembly/probe.ts):
//  - read_sum:   every thread sums vec4s of `src` in a grid-stride loop (neighbouring threads read
//                neighbouring vec4s, so each workgroup's loads coalesce) and writes one float:
//                memory bandwidth when `src` is larger than the GPU's caches.
//  - fma_chains: eight independent vec4 fused multiply-add chains per thread on registers, `iters`
//                rounds: the f32 arithmetic peak (2 flops per lane per fma).
// Each thread writes its result to `sink`, so the compiler cannot drop the work.

struct Params {
  /** vec4 elements of src (read_sum) */
  n4: u32,
  /** rounds of the eight chains (fma_chains) */
  iters: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> sink: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@group(0) @binding(0) var<storage, read_write> sink_only: array<f32>;
@group(0) @binding(1) var<uniform> q: Params;

@compute @workgroup_size(WG)
fn read_sum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let stride = nwg.x * WG;
  var acc = vec4<f32>(0.0);
  for (var i = gid.x; i < p.n4; i += stride) {
    acc += src[i];
  }
  sink[gid.x] = acc.x + acc.y + acc.z + acc.w;
}

@compute @workgroup_size(WG)
fn fma_chains(@builtin(global_invocation_id) gid: vec3<u32>) {
  // Distinct starting values per chain and thread; m < 1 keeps every chain bounded (it tends to c / (1 − m)).
  let s = f32(gid.x & 1023u) * 1e-4;
  var a0 = vec4<f32>(s, s + 0.01, s + 0.02, s + 0.03);
  var a1 = a0 + 0.1; var a2 = a0 + 0.2; var a3 = a0 + 0.3;
  var a4 = a0 + 0.4; var a5 = a0 + 0.5; var a6 = a0 + 0.6; var a7 = a0 + 0.7;
  let m = vec4<f32>(0.999);
  let c = vec4<f32>(0.001);
  for (var i = 0u; i < q.iters; i++) {
    a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
    a4 = fma(a4, m, c); a5 = fma(a5, m, c); a6 = fma(a6, m, c); a7 = fma(a7, m, c);
  }
  let t = (a0 + a1) + (a2 + a3) + (a4 + a5) + (a6 + a7);
  sink_only[gid.x] = t.x + t.y + t.z + t.w;
}
