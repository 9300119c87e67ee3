// Byte-addressed reads of packed weights held as `wq: array<u32>` (the including shader declares
// that binding). Packed blocks need not start on a 4-byte boundary (Q8_0 blocks are 34 bytes, Q4_0
// 18, f16 rows of odd length 2·cols): a word at any byte offset is funnel-shifted from two words.

fn byteAt(off: u32) -> u32 { return (wq[off >> 2u] >> ((off & 3u) * 8u)) & 0xffu; }

// The little-endian u32 at byte offset `off` (any alignment).
fn wordAt(off: u32) -> u32 {
  let s = (off & 3u) * 8u;
  let a = wq[off >> 2u];
  if (s == 0u) { return a; }
  return (a >> s) | (wq[(off >> 2u) + 1u] << (32u - s));
}

// The little-endian u16 at byte offset `off` (any alignment), in the low bits.
fn halfWordAt(off: u32) -> u32 {
  let s = (off & 3u) * 8u;
  let a = wq[off >> 2u];
  if (s <= 16u) { return (a >> s) & 0xffffu; }
  return (a >> 24u) | ((wq[(off >> 2u) + 1u] & 0xffu) << 8u);
}
