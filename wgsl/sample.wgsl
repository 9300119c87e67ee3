// Token selection on the GPU, so a decode step reads back 8 bytes instead of the logits row.
// The order is the CPU sampler's (src/engine/sampler.ts): logits descending, ties by lower id.
//
//  - candidates: workgroup g takes a chunk of the logits, finds the first non-finite logit in it, and
//    its top k in that order (k rounds, each the best logit ranked after the previous round's),
//    written to the scratch buffer.
//  - draw (one workgroup): merges the groups' candidates the same way into the global top k, then
//    thread 0 draws as the CPU sampler does: p_j = exp((l_j − l_0) / T), the top-p prefix, then the
//    first j with r·Σp < p_0 + … + p_j, where r is the uniform number the host drew from the seeded
//    stream. temperature 0 = greedy (k = 1).
// out = [token id, NONE], or [bits of the first non-finite logit, its index] (candidates clears it).
// Scratch (u32): ids [G·k], values (f32 bits) [G·k], first non-finite index per group [G].

struct Params {
  vocab: u32,
  k: u32,
  groups: u32,
  chunk: u32,
  temperature: f32,
  top_p: f32,
  r: f32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> scratch: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@group(0) @binding(3) var<uniform> p: Params;

const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu;

var<workgroup> red_v: array<f32, 256>;
var<workgroup> red_i: array<u32, 256>;
var<workgroup> prev_v: f32;
var<workgroup> prev_i: u32;
var<workgroup> cand_v: array<f32, 256>;
var<workgroup> cand_i: array<u32, 256>;
var<workgroup> probs: array<f32, 256>;

fn is_finite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u; }

/** (a_v, a_i) ranks before (b_v, b_i): larger value, or equal value and lower id; NONE ranks last. */
fn before(a_v: f32, a_i: u32, b_v: f32, b_i: u32) -> bool {
  return a_i != NONE && (b_i == NONE || a_v > b_v || (a_v == b_v && a_i < b_i));
}

/** Ranks after the previous round's pick (every candidate does in round 0). */
fn after_prev(round: u32, v: f32, i: u32) -> bool {
  return round == 0u || v < prev_v || (v == prev_v && i > prev_i);
}

/** Workgroup reduction of each thread's best (v, i); the winner lands in red_*[0] and prev_*. */
fn reduce_best(t: u32, v: f32, i: u32) {
  red_v[t] = v; red_i[t] = i;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s && before(red_v[t + s], red_i[t + s], red_v[t], red_i[t])) {
      red_v[t] = red_v[t + s]; red_i[t] = red_i[t + s];
    }
    workgroupBarrier();
  }
  if (t == 0u) { prev_v = red_v[0]; prev_i = red_i[0]; }
  workgroupBarrier();
}

@compute @workgroup_size(256)
fn candidates(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let g = wid.x;
  let start = g * p.chunk;
  let end = min(p.vocab, start + p.chunk);
  var bad = NONE;
  for (var i = start + t; i < end; i += WG) {
    if (!is_finite(logits[i])) { bad = min(bad, i); }
  }
  red_i[t] = bad;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) { red_i[t] = min(red_i[t], red_i[t + s]); }
    workgroupBarrier();
  }
  if (t == 0u) { scratch[2u * p.groups * p.k + g] = red_i[0]; }
  if (g == 0u && t == 0u) { out[0] = 0u; out[1] = NONE; }
  workgroupBarrier();
  for (var round = 0u; round < p.k; round++) {
    var best_v = 0.0;
    var best_i = NONE;
    for (var i = start + t; i < end; i += WG) {
      let v = logits[i];
      if (after_prev(round, v, i) && before(v, i, best_v, best_i)) { best_v = v; best_i = i; }
    }
    reduce_best(t, best_v, best_i);
    if (t == 0u) {
      scratch[g * p.k + round] = prev_i;
      scratch[p.groups * p.k + g * p.k + round] = bitcast<u32>(prev_v);
    }
  }
}

@compute @workgroup_size(256)
fn draw(@builtin(local_invocation_index) t: u32) {
  let n = p.groups * p.k;
  var bad = NONE;
  for (var g = t; g < p.groups; g += WG) { bad = min(bad, scratch[2u * n + g]); }
  red_i[t] = bad;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) { red_i[t] = min(red_i[t], red_i[t + s]); }
    workgroupBarrier();
  }
  let first_bad = workgroupUniformLoad(&red_i[0]);
  if (first_bad != NONE) {
    if (t == 0u) { out[0] = bitcast<u32>(logits[first_bad]); out[1] = first_bad; }
    return;
  }
  for (var round = 0u; round < p.k; round++) {
    var best_v = 0.0;
    var best_i = NONE;
    for (var c = t; c < n; c += WG) {
      let i = scratch[c];
      let v = bitcast<f32>(scratch[n + c]);
      if (i != NONE && after_prev(round, v, i) && before(v, i, best_v, best_i)) { best_v = v; best_i = i; }
    }
    reduce_best(t, best_v, best_i);
    if (t == 0u) { cand_v[round] = prev_v; cand_i[round] = prev_i; }
  }
  if (t != 0u) { return; }
  out[1] = NONE;
  if (p.temperature == 0.0) { out[0] = cand_i[0]; return; }
  var count = 0u;
  while (count < p.k && cand_i[count] != NONE) { count++; }
  let m = cand_v[0];
  var total = 0.0;
  for (var j = 0u; j < count; j++) {
    probs[j] = exp((cand_v[j] - m) / p.temperature);
    total += probs[j];
  }
  if (p.top_p < 1.0) {
    var cumulative = 0.0;
    var keep = 0u;
    while (keep < count && cumulative < p.top_p * total) { cumulative += probs[keep]; keep++; }
    count = max(1u, keep);
    total = 0.0;
    for (var j = 0u; j < count; j++) { total += probs[j]; }
  }
  var r = p.r * total;
  for (var j = 0u; j < count; j++) {
    r -= probs[j];
    if (r < 0.0) { out[0] = cand_i[j]; return; }
  }
  out[0] = cand_i[count - 1u];
}
