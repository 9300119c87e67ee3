// Packed weight codecs (src/model/quant.ts): hand-computed GGUF byte vectors for each block format (a swapped
// nibble half, scale packing or f16 byte order fails them), f16/bf16 scalars against IEEE, round trips with
// per-format error bounds, and the zero-padding rule for rows that are not whole blocks.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  GGML_TYPE, bf16ToF32, blockSize, dequantizeMatrix, f16ToF32, f32ToF16, q4kScaleMin, quantizeMatrix, rowBytes,
  type PackedMatrix, type WeightDType,
} from '../src/model/quant.ts';

function gaussian(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 2 ** 32;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return out;
}

test('ggml type ids and block geometry', () => {
  assert.equal(GGML_TYPE, { f32: 0, f16: 1, q4_0: 2, q8_0: 8, q4_k: 12, bf16: 30 });
  assert.equal([blockSize('f32'), blockSize('f16'), blockSize('q8_0'), blockSize('q4_0'), blockSize('q4_k')], [1, 1, 32, 32, 256]);
  assert.equal([rowBytes('f32', 5), rowBytes('f16', 5), rowBytes('q8_0', 64), rowBytes('q4_0', 64), rowBytes('q4_k', 512)], [20, 10, 68, 36, 288]);
  // Partial blocks are padded to whole ones.
  assert.equal([rowBytes('q8_0', 33), rowBytes('q4_0', 31), rowBytes('q4_k', 257)], [68, 18, 288]);
  assert.throws(() => blockSize('q5_1' as WeightDType), /unknown weight dtype "q5_1"/);
});

test('f16 and bf16 scalars match IEEE bit patterns', () => {
  const cases: Array<[number, number]> = [
    [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [0.5, 0x3800], [65504, 0x7bff], [65520, 0x7c00], // 65520 rounds up to Inf
    [1e6, 0x7c00], [-Infinity, 0xfc00], [2 ** -24, 0x0001], [2 ** -14, 0x0400], [3 * 2 ** -25, 0x0002], // tie → even
    [2 ** -25, 0x0000], [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], [0.1, 0x2e66], [1 / 3, 0x3555],
  ];
  for (const [x, h] of cases) assert.is(f32ToF16(x), h, `f32ToF16(${x})`);
  assert.is(f32ToF16(NaN) & 0x7c00, 0x7c00);
  assert.ok(Number.isNaN(f16ToF32(f32ToF16(NaN))));
  assert.is(f16ToF32(0x3555), 0.333251953125);
  assert.is(f16ToF32(0x0001), 2 ** -24);
  assert.is(f16ToF32(0xfc00), -Infinity);
  // Every finite half survives f16 → f32 → f16.
  for (let h = 0; h < 0x10000; h++) if ((h & 0x7c00) !== 0x7c00) assert.is(f32ToF16(f16ToF32(h)), h);
  assert.is(bf16ToF32(0x3f80), 1);
  assert.is(bf16ToF32(0xc0a0), -5);
  assert.is(bf16ToF32(0x3e80), 0.25);
});

test('Q8_0 bytes: f16 d little-endian, then 32 int8 in order', () => {
  const x = new Float32Array(32);
  for (let i = 0; i < 32; i++) x[i] = i;
  x[0] = 127; x[1] = -127; // amax 127 → d = 1
  const m = quantizeMatrix('q8_0', x, 1, 32);
  const want = [0x00, 0x3c, 127, 0x81];
  for (let i = 2; i < 32; i++) want.push(i);
  assert.equal([...(m.data as Uint8Array)], want);
  assert.equal([...dequantizeMatrix(m)], [...x]);
});

test('Q4_0 bytes: d = max/-8, low nibbles hold elements 0..15 and high nibbles 16..31', () => {
  const x = new Float32Array(32);
  for (let j = 0; j < 16; j++) { x[j] = 2 * (j - 8); x[16 + j] = 2 * (7 - j); }
  const m = quantizeMatrix('q4_0', x, 1, 32);
  const want = [0x00, 0x40]; // d = -16 / -8 = 2
  for (let j = 0; j < 16; j++) want.push(j | ((15 - j) << 4));
  assert.equal([...(m.data as Uint8Array)], want);
  assert.equal([...dequantizeMatrix(m)], [...x]);
  // A largest-magnitude value that is positive gives a negative d: it maps to nibble 0.
  const y = new Float32Array(32).fill(1); y[5] = 8;
  const p = quantizeMatrix('q4_0', y, 1, 32).data as Uint8Array;
  assert.is(f16ToF32(p[0] | (p[1] << 8)), -1);
  assert.is(p[2 + 5] & 0xf, 0);
});

// One hand-packed block_q4_K: d = 1, dmin = 0.5, eight 6-bit scales and mins (several above 15, so their
// top two bits live in the high bits of bytes 0..7 as get_scale_min_k4 reads them).
const SC = [1, 2, 3, 4, 17, 33, 50, 63];
const MN = [0, 5, 10, 63, 16, 32, 48, 7];
const SCALE_BYTES = [65, 130, 195, 196, 64, 133, 202, 63, 1, 1, 2, 127];
function handQ4K(): Uint8Array {
  const b = new Uint8Array(144);
  b.set([0x00, 0x3c, 0x00, 0x38], 0);
  b.set(SCALE_BYTES, 4);
  for (let c = 0; c < 4; c++) for (let l = 0; l < 32; l++) b[16 + 32 * c + l] = (l & 15) | ((15 - (l & 15)) << 4);
  return b;
}

test('Q4_K: scales/mins unpack as get_scale_min_k4, 64-element chunks split into low then high nibbles', () => {
  const b = handQ4K();
  for (let j = 0; j < 8; j++) assert.equal(q4kScaleMin(j, b, 4), [SC[j], MN[j]], `sub-block ${j}`);
  const y = dequantizeMatrix({ dtype: 'q4_k', rows: 1, cols: 256, data: b });
  for (let c = 0; c < 4; c++) {
    for (let l = 0; l < 32; l++) {
      assert.is(y[64 * c + l], SC[2 * c] * (l & 15) - 0.5 * MN[2 * c], `element ${64 * c + l}`);
      assert.is(y[64 * c + 32 + l], SC[2 * c + 1] * (15 - (l & 15)) - 0.5 * MN[2 * c + 1], `element ${64 * c + 32 + l}`);
    }
  }
  // Requantizing what this block decodes to reproduces it: an exact grid is found again.
  const again = quantizeMatrix('q4_k', y, 1, 256);
  assert.equal([...dequantizeMatrix(again)], [...y]);
});

test('Q4_K packs scales above 15 into the high bits (round trip on sub-blocks of very different ranges)', () => {
  const x = gaussian(256, 7);
  for (let j = 0; j < 8; j++) for (let l = 0; l < 32; l++) x[32 * j + l] *= 2 ** (j - 4); // ranges 1/16 .. 8
  const m = quantizeMatrix('q4_k', x, 1, 256);
  const b = m.data as Uint8Array;
  const scales = Array.from({ length: 8 }, (_, j) => q4kScaleMin(j, b, 4)[0]);
  assert.ok(scales.slice(4).some((s) => s > 15), `scales ${scales}`);
  const y = dequantizeMatrix(m);
  for (let j = 0; j < 8; j++) {
    let err = 0, amp = 0;
    for (let l = 0; l < 32; l++) { err = Math.max(err, Math.abs(y[32 * j + l] - x[32 * j + l])); amp = Math.max(amp, Math.abs(x[32 * j + l])); }
    // Large sub-blocks: half a quantization step of their range/15 and some slack for the 6-bit scale.
    if (j >= 4) assert.ok(err <= 0.12 * amp, `sub-block ${j}: max error ${err} of amplitude ${amp}`);
  }
});

// Error bounds: per element for Q8_0 (half a step, plus the f16 rounding of d over 127 steps), Q4_0 (one
// step: the value of opposite sign to the extreme clamps at nibble 15) and f16 (2^-11 relative); relative
// RMS over gaussian rows for all (measured on 64x512: f16 2.1e-4, Q8_0 0.0053, Q4_0 0.086, Q4_K 0.072; bars
// carry margin).
const RMS_BAR: Record<WeightDType, number> = { f32: 0, f16: 3e-4, q8_0: 0.007, q4_0: 0.11, q4_k: 0.09 };
function relRms(a: Float32Array, b: Float32Array): number {
  let e = 0, s = 0;
  for (let i = 0; i < a.length; i++) { e += (a[i] - b[i]) ** 2; s += a[i] ** 2; }
  return Math.sqrt(e / s);
}

for (const dtype of ['f32', 'f16', 'q8_0', 'q4_0', 'q4_k'] as WeightDType[]) {
  test(`${dtype}: round trip on odd shapes within its error bound`, () => {
    for (const [rows, cols] of [[3, 512], [7, 96], [5, 257], [1, 31], [2, 0], [0, 64]]) {
      const x = gaussian(rows * cols, rows * 1000 + cols);
      const m = quantizeMatrix(dtype, x, rows, cols);
      assert.is(m.data.length, dtype === 'f32' ? rows * cols : rows * rowBytes(dtype, cols), `${rows}x${cols} storage`);
      const y = dequantizeMatrix(m);
      assert.is(y.length, rows * cols);
      if (rows * cols === 0) continue;
      if (dtype === 'f32') { assert.equal([...y], [...x]); continue; }
      if (cols >= 96) assert.ok(relRms(x, y) <= RMS_BAR[dtype], `${rows}x${cols}: relative RMS ${relRms(x, y)} > ${RMS_BAR[dtype]}`);
      const bs = blockSize(dtype);
      for (let r = 0; r < rows; r++) {
        for (let b = 0; b * bs < cols; b++) {
          let amax = 0;
          for (let i = b * bs; i < Math.min(cols, (b + 1) * bs); i++) amax = Math.max(amax, Math.abs(x[r * cols + i]));
          for (let i = b * bs; i < Math.min(cols, (b + 1) * bs); i++) {
            const e = Math.abs(y[r * cols + i] - x[r * cols + i]);
            const bound = dtype === 'f16' ? Math.abs(x[r * cols + i]) * 2 ** -11
              : dtype === 'q8_0' ? (amax / 127) * (0.5 + 127 * 2 ** -11) * 1.0001
              : dtype === 'q4_0' ? (amax / 8) * (1 + 8 * 2 ** -11) * 1.0001
              : Infinity;
            assert.ok(e <= bound, `${dtype} ${rows}x${cols} [${r},${i}]: error ${e} > ${bound}`);
          }
        }
      }
    }
  });
}

test('partial blocks: rows are zero-padded to whole blocks, the padding quantizes from zeros', () => {
  const x = gaussian(2 * 40, 3);
  for (const dtype of ['q8_0', 'q4_0'] as WeightDType[]) {
    const m = quantizeMatrix(dtype, x, 2, 40);
    const rb = rowBytes(dtype, 40);
    assert.is(rb, 2 * (dtype === 'q8_0' ? 34 : 18));
    // Row 1's first block is row 1's own values, not row 0's tail: compare to quantizing row 1 alone.
    const row1 = quantizeMatrix(dtype, x.slice(40), 1, 40).data as Uint8Array;
    assert.equal([...(m.data as Uint8Array).subarray(rb)], [...row1]);
    // The second block holds 8 values and 24 zeros: zeros encode to q = 0 (Q8_0) or nibble 8 (Q4_0).
    const tail = row1.subarray(rb / 2 + 2);
    if (dtype === 'q8_0') assert.equal([...tail.subarray(8)], new Array(24).fill(0));
    else { for (let j = 8; j < 16; j++) assert.is(tail[j] & 0xf, 8); for (let j = 0; j < 16; j++) assert.is(tail[j] >> 4, 8); }
  }
});

test('bad inputs name the shape', () => {
  assert.throws(() => quantizeMatrix('q8_0', new Float32Array(10), 2, 4), /10 values for shape \[2, 4\] \(needs 8\)/);
  assert.throws(() => quantizeMatrix('q8_0', new Float32Array(0), -1, 4), /invalid shape/);
  const bad: PackedMatrix = { dtype: 'q4_0', rows: 2, cols: 32, data: new Uint8Array(35) };
  assert.throws(() => dequantizeMatrix(bad), /q4_0 \[2, 32\] needs 36 bytes, got 35/);
  assert.throws(() => dequantizeMatrix({ dtype: 'f16', rows: 1, cols: 2, data: new Float32Array(2) }), /needs a Uint8Array/);
});

test('values a format cannot hold are errors naming the tensor and element, never a silent Inf', () => {
  // f16: 65504 is the largest finite half; 65520 rounds to Inf.
  const edge = new Float32Array(8).fill(0.5); edge[5] = -65504;
  assert.is(dequantizeMatrix(quantizeMatrix('f16', edge, 2, 4))[5], -65504);
  const over = edge.slice(); over[6] = 65520;
  assert.throws(() => quantizeMatrix('f16', over, 2, 4, 'tensor "w"'), /tensor "w": value 65520 at \[1, 2\] is beyond f16's range \(±65504\); keep this tensor in f32/);
  const nan = edge.slice(); nan[3] = NaN;
  assert.throws(() => quantizeMatrix('f16', nan, 2, 4, 'tensor "w"'), /tensor "w": value NaN at \[0, 3\] is not finite/);
  // Block formats: the f16 scale d = amax/127 (Q8_0), amax/8 (Q4_0) overflows past 65504·127, 65504·8.
  for (const [dtype, ok, bad] of [['q8_0', 8e6, 9e6], ['q4_0', 5e5, 6e5], ['q4_k', 1e5, 2 ** 40]] as const) {
    const cols = blockSize(dtype) + 3;
    const v = gaussian(2 * cols, 3);
    v[cols + 1] = ok;
    const round = dequantizeMatrix(quantizeMatrix(dtype, v, 2, cols));
    assert.ok(Math.abs(round[cols + 1] - ok) <= 0.02 * ok, `${dtype}: ${ok} came back as ${round[cols + 1]}`);
    v[cols + 1] = bad;
    assert.throws(() => quantizeMatrix(dtype, v, 2, cols, 'tensor "w"'), new RegExp(`tensor "w": value ${bad} at \\[1, 1\\] is too large for ${dtype}'s f16 block scale`), dtype);
    v[cols + 1] = -Infinity;
    assert.throws(() => quantizeMatrix(dtype, v, 2, cols, 'tensor "w"'), /value -Infinity at \[1, 1\] is not finite/, dtype);
  }
});

test.run();
