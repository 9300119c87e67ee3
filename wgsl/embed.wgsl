// out[r][d] = table[ids[r]][d], one thread per output element. ids come from the uniform block when
// rows ≤ 60, else from a storage buffer. The host checks 0 ≤ id < vocab.

struct Params {
  rows: u32,
  dim: u32,
  // 1: ids are in `ids` below; 0: in the `idBuffer` storage buffer.
  inUniform: u32,
  _pad: u32,
  ids: array<vec4<i32>, 15>,
}

@group(0) @binding(0) var<storage, read> table: array<f32>;
@group(0) @binding(1) var<storage, read> idBuffer: array<i32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let idx = (wid.y * nwg.x + wid.x) * 256u + li;
  if (idx >= p.rows * p.dim) { return; }
  let r = idx / p.dim;
  let d = idx % p.dim;
  var id: i32;
  if (p.inUniform != 0u) { id = p.ids[r >> 2u][r & 3u]; } else { id = idBuffer[r]; }
  out[idx] = table[u32(id) * p.dim + d];
}
