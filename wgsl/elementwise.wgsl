// Elementwise ops, one thread per element (workgroups folded into y past the per-dimension limit).
//  - silu_mul:    out[i] = silu(gate[i]) · up[i]
//  - silu_mul_io: io[i] = silu(io[i]) · other[i]   (flags bit 0 clear: io is the gate)
//                 io[i] = silu(other[i]) · io[i]   (flags bit 0 set: io is up)
//  - add:         x[i] += y[i]
// silu(z) = z / (1 + e^−z).

struct Params {
  n: u32,
  flags: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p3: Params;

@group(0) @binding(0) var<storage, read_write> io: array<f32>;
@group(0) @binding(1) var<storage, read> other: array<f32>;
@group(0) @binding(2) var<uniform> p2: Params;

fn silu(z: f32) -> f32 { return z / (1.0 + exp(-z)); }

fn index(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 { return (wid.y * nwg.x + wid.x) * WG + li; }

@compute @workgroup_size(WG)
fn silu_mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
  let i = index(wid, nwg, li);
  if (i < p3.n) { out[i] = silu(gate[i]) * up[i]; }
}

@compute @workgroup_size(WG)
fn silu_mul_io(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
  let i = index(wid, nwg, li);
  if (i < p2.n) {
    if ((p2.flags & 1u) == 0u) { io[i] = silu(io[i]) * other[i]; } else { io[i] = silu(other[i]) * io[i]; }
  }
}

@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) li: u32) {
  let i = index(wid, nwg, li);
  if (i < p2.n) { io[i] += other[i]; }
}
