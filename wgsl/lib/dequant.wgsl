// Decoding of packed weight rows, byte for byte as src/model/quant.ts (ggml's layouts): four
// consecutive elements at a time. FORMAT (a pipeline constant) picks the format:
//   0 f16    2 bytes per element, no blocks
//   1 q8_0   34-byte blocks of 32: f16 d, 32 int8            (x = d·q)
//   2 q4_0   18-byte blocks of 32: f16 d, 16 bytes of nibbles (x = d·(q − 8); byte j: elements j, j+16)
//   3 q4_k   144-byte super-blocks of 256: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes
//            of nibbles (x = d·sc·q − dmin·m; 64-element chunk c: bytes 32c.., low nibbles first)
// Rows are padded to whole blocks (their padding decodes to zeros); callers mask elements ≥ cols.
#include "lib/f16.wgsl"
#include "lib/packed_bytes.wgsl"

override FORMAT: u32 = 0u;

// Sign-extended byte k of `word`.
fn i8At(word: u32, k: u32) -> f32 { return f32(bitcast<i32>(word << (24u - 8u * k)) >> 24u); }

// Nibbles 2k (shift 0) or 2k+1 (shift 4) of the four bytes of `word`.
fn nibbles4(word: u32, shift: u32) -> vec4<f32> {
  let n = (word >> shift) & 0x0f0f0f0fu;
  return vec4<f32>(f32(n & 0xffu), f32((n >> 8u) & 0xffu), f32((n >> 16u) & 0xffu), f32(n >> 24u));
}

// Q4_K sub-block j's 6-bit scale and min from the 12 bytes at `q` (ggml's get_scale_min_k4).
fn q4kScaleMin(j: u32, q: u32) -> vec2<f32> {
  if (j < 4u) { return vec2<f32>(f32(byteAt(q + j) & 63u), f32(byteAt(q + j + 4u) & 63u)); }
  let sc = (byteAt(q + j + 4u) & 0xfu) | ((byteAt(q + j - 4u) >> 6u) << 4u);
  let m = (byteAt(q + j + 4u) >> 4u) | ((byteAt(q + j) >> 6u) << 4u);
  return vec2<f32>(f32(sc), f32(m));
}

// Elements e..e+3 (e a multiple of 4) of the row starting at byte `row`.
fn decode4(row: u32, e: u32) -> vec4<f32> {
  switch FORMAT {
    case 0u: {
      let off = row + 2u * e;
      return halves4(wordAt(off), wordAt(off + 4u));
    }
    case 1u: {
      let b = row + (e >> 5u) * 34u;
      let d = halfLo(halfWordAt(b));
      let q = wordAt(b + 2u + (e & 31u));
      return d * vec4<f32>(i8At(q, 0u), i8At(q, 1u), i8At(q, 2u), i8At(q, 3u));
    }
    case 2u: {
      let b = row + (e >> 5u) * 18u;
      let d = halfLo(halfWordAt(b));
      let i = e & 31u;
      let q = wordAt(b + 2u + (i & 15u));
      return d * (nibbles4(q, select(0u, 4u, i >= 16u)) - 8.0);
    }
    default: {
      let b = row + (e >> 8u) * 144u;
      let dm = unpack2x16float(wq[b >> 2u]);
      let i = e & 255u;
      let sub = i >> 5u;                      // scale index: chunk i/64, low (even) or high (odd) nibbles
      let sm = q4kScaleMin(sub, b + 4u);
      let q = wq[(b + 16u + 32u * (sub >> 1u) + (i & 31u)) >> 2u];
      return dm.x * sm.x * nibbles4(q, 4u * (sub & 1u)) - dm.y * sm.y;
    }
  }
}

// decode4 with elements at index ≥ cols set to 0 (they may be padding or the next row).
fn decode4Masked(row: u32, e: u32, cols: u32) -> vec4<f32> {
  let v = decode4(row, e);
  let idx = vec4<u32>(e, e + 1u, e + 2u, e + 3u);
  return select(vec4<f32>(0.0), v, idx < vec4<u32>(cols));
}
