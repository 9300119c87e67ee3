// out[outRow0 + r][d] = T[ids[r]][d] with the table T read packed (lib/dequant.wgsl, FORMAT) from a
// u32 array, row t at byte t·rowBytes; one thread per output element. ids come from the uniform
// block when rows ≤ 56, else from a storage buffer. The host checks 0 ≤ id < the table's rows.

struct Params {
  rows: u32,
  dim: u32,
  // 1: ids are in `ids` below; 0: in the `idBuffer` storage buffer.
  inUniform: u32,
  rowBytes: u32,
  // First output row written (a table split by rows is looked up one part at a time).
  outRow0: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
  ids: array<vec4<i32>, 14>,
}

@group(0) @binding(0) var<storage, read> wq: array<u32>;
@group(0) @binding(1) var<storage, read> idBuffer: array<i32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

#include "lib/dequant.wgsl"

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let idx = (wid.y * nwg.x + wid.x) * 256u + li;
  if (idx >= p.rows * p.dim) { return; }
  let r = idx / p.dim;
  let d = idx % p.dim;
  var id: i32;
  if (p.inUniform != 0u) { id = p.ids[r >> 2u][r & 3u]; } else { id = idBuffer[r]; }
  out[(p.outRow0 + r) * p.dim + d] = decode4(u32(id) * p.rowBytes, d & ~3u)[d & 3u];
}
