// A chunk's k/v ([rows][kv_heads][head_dim] f32) into a full cache stored as f16 or int8 rows
// (layout and rounding: src/backend/kv-dtype.ts; the stored words equal its reference encoder's).
// One thread per (row, KV head). What WGSL leaves to the device is done in integer arithmetic, so
// every adapter stores the same words: f16 halves are rounded to nearest even (overflow to ±Inf)
// rather than by pack2x16float, and int8's two divisions per row (127 / max|x|, max|x| / 127) are
// correctly rounded long divisions (WGSL's x / y may be 2.5 ulp off: SwiftShader's is). Products and
// round() (half to even) are exact in WGSL. KV_DTYPE: 1 = f16, 2 = int8.

override KV_DTYPE: u32 = 1u;

struct Params {
  rows: u32, num_kv_heads: u32, head_dim: u32, past_len: u32,
  capacity: u32, row_words: u32, total: u32,
  // The bound k_dst / v_dst are words part_first .. part_first + part_words of the cache (a cache
  // split over several buffers is appended to once per part; whole: 0 and 0xffffffff).
  part_first: u32, part_words: u32,
  // Value heads (decoupled heads, DHA; the caches are then whole) and their (row, head) count.
  num_v_heads: u32, total_v: u32,
}

@group(0) @binding(0) var<storage, read_write> k_dst: array<u32>;
@group(0) @binding(1) var<storage, read_write> v_dst: array<u32>;
@group(0) @binding(2) var<storage, read> k_src: array<u32>;
@group(0) @binding(3) var<storage, read> v_src: array<u32>;
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = 64u;

// f32 bits → IEEE half bits, exactly as the reference (f32ToF16 in src/model/quant.ts).
fn to_half(b: u32) -> u32 {
  let sign = (b >> 16u) & 0x8000u;
  let ex = i32((b >> 23u) & 0xffu);
  var mant = b & 0x7fffffu;
  if (ex == 255) { return sign | 0x7c00u | select(0u, 0x200u, mant != 0u); }
  let e = ex - 127 + 15;
  if (e >= 31) { return sign | 0x7c00u; }
  if (e <= 0) {
    if (e < -10) { return sign; }
    mant = mant | 0x800000u;
    let shift = u32(14 - e);
    let h = mant >> shift;
    let rem = mant & ((1u << shift) - 1u);
    let mid = 1u << (shift - 1u);
    return sign | (h + select(0u, 1u, rem > mid || (rem == mid && (h & 1u) != 0u)));
  }
  let h = (u32(e) << 10u) | (mant >> 13u);
  let rem = mant & 0x1fffu;
  return sign | (h + select(0u, 1u, rem > 0x1000u || (rem == 0x1000u && (h & 1u) != 0u)));
}

// Significand in [2^23, 2^24) and unbiased exponent of a positive finite f32 (subnormals normalised).
fn split(x: f32) -> vec2<i32> {
  let bits = bitcast<u32>(x);
  var m = bits & 0x7fffffu;
  var e = i32(bits >> 23u);
  if (e == 0) {
    let s = countLeadingZeros(m) - 8u;
    m = m << s;
    e = 1 - i32(s);
  } else {
    m = m | 0x800000u;
  }
  return vec2<i32>(i32(m), e - 127);
}

// The bits of a / b rounded to nearest even, for positive finite a and b (overflow → +Inf,
// subnormal results kept). Bits, not f32: a constant +Inf is not a valid WGSL f32.
fn div_rn(a: f32, b: f32) -> u32 {
  let A = split(a);
  let B = split(b);
  var ma = u32(A.x);
  let mb = u32(B.x);
  var e = A.y - B.y;
  if (ma < mb) { ma = ma << 1u; e -= 1; }
  // 25 quotient bits (1.xxx plus a guard bit): value q · 2^(e − 24); r ≠ 0 when bits remain below.
  var q = 0u;
  var r = ma;
  for (var i = 0u; i < 25u; i++) {
    q = q << 1u;
    if (r >= mb) { r -= mb; q = q | 1u; }
    r = r << 1u;
  }
  let E = e + 127;
  if (E >= 255) { return 0x7f800000u; }
  var s = 1u; // bits below the stored significand: the guard bit, more for a subnormal result
  if (E <= 0) { s = u32(2 - E); }
  if (s >= 26u) { return 0u; }
  let keep = q >> s;
  let round_bit = (q >> (s - 1u)) & 1u;
  let sticky = r != 0u || (q & ((1u << (s - 1u)) - 1u)) != 0u;
  let up = round_bit == 1u && (sticky || (keep & 1u) == 1u);
  // A carry out of the significand bumps the exponent (and reaches +Inf at the top).
  return select(0u, u32(E - 1) << 23u, E > 0) + keep + select(0u, 1u, up);
}

fn src_word(which: u32, i: u32) -> u32 {
  if (which == 0u) { return k_src[i]; }
  return v_src[i];
}

fn store(which: u32, i: u32, w: u32) {
  if (i < p.part_first || i - p.part_first >= p.part_words) { return; }
  let j = i - p.part_first;
  if (which == 0u) { k_dst[j] = w; } else { v_dst[j] = w; }
}

fn encode_row(which: u32, src: u32, dst: u32) {
  let D = p.head_dim;
  if (KV_DTYPE == 1u) {
    for (var w = 0u; w < p.row_words; w++) {
      let lo = to_half(src_word(which, src + 2u * w));
      var hi = 0u;
      if (2u * w + 1u < D) { hi = to_half(src_word(which, src + 2u * w + 1u)); }
      store(which, dst + w, lo | (hi << 16u));
    }
    return;
  }
  var amax = 0.0;
  for (var d = 0u; d < D; d++) { amax = max(amax, abs(bitcast<f32>(src_word(which, src + d)))); }
  var inv = 0.0;
  var scale = amax;
  if (amax > 0.0 && bitcast<u32>(amax) < 0x7f800000u) {
    inv = bitcast<f32>(div_rn(127.0, amax));
    scale = bitcast<f32>(div_rn(amax, 127.0));
  }
  let code_words = p.row_words - 1u;
  for (var w = 0u; w < code_words; w++) {
    var word = 0u;
    for (var b = 0u; b < 4u; b++) {
      let d = 4u * w + b;
      if (d < D) {
        let q = clamp(round(bitcast<f32>(src_word(which, src + d)) * inv), -127.0, 127.0);
        word = word | ((u32(i32(q)) & 0xffu) << (8u * b));
      }
    }
    store(which, dst + w, word);
  }
  store(which, dst + code_words, bitcast<u32>(scale));
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let e = (wid.y * nwg.x + wid.x) * WG + lid; // one (row, key head) and one (row, value head)
  if (e < p.total) {
    let h = e % p.num_kv_heads;
    let r = e / p.num_kv_heads;
    encode_row(0u, e * p.head_dim, (h * p.capacity + p.past_len + r) * p.row_words);
  }
  if (e < p.total_v) {
    let h = e % p.num_v_heads;
    let r = e / p.num_v_heads;
    encode_row(1u, e * p.head_dim, (h * p.capacity + p.past_len + r) * p.row_words);
  }
}
