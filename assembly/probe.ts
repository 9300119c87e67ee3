// Roofline probes for the benchmark (duet bench --suite kernels): how fast this machine streams
// memory into WASM SIMD registers, and how many f32x4 multiply + add operations it retires, both
// measured with the same compiler and runtime as the kernels. Not used by inference.

/**
 * Reads `bytes` bytes at `ptr` (a multiple of 64, 16-byte aligned) `reps` times with v128 loads
 * and returns a sum (so the loads cannot be optimised away). Four independent accumulators keep
 * the adds off the critical path: the loop is bound by the loads.
 */
export function probeRead(ptr: usize, bytes: i32, reps: i32): f32 {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  const end: usize = ptr + (<usize>(bytes & ~63));
  for (let r = 0; r < reps; r++) {
    for (let p = ptr; p < end; p += 64) {
      a0 = f32x4.add(a0, v128.load(p));
      a1 = f32x4.add(a1, v128.load(p, 16));
      a2 = f32x4.add(a2, v128.load(p, 32));
      a3 = f32x4.add(a3, v128.load(p, 48));
    }
  }
  const s = f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1) + f32x4.extract_lane(s, 2) + f32x4.extract_lane(s, 3);
}

/** Bytes of L1-resident data probePeak works on (at its `ptr`). */
export const PEAK_PROBE_BYTES: i32 = 20480;

/**
 * Runs `iters` passes of a GEMM-style micro-kernel (one 512-float row times four 512-float rows,
 * two f32x4 lanes of the row per step, eight independent accumulators) over PEAK_PROBE_BYTES of
 * L1-resident data at `ptr`, and returns a sum. Per pass: 64 steps of 8 multiplies + 8 adds on
 * f32x4 = 4,096 flops. This is the kernels' own instruction mix (loads feeding multiplies feeding
 * adds; WASM SIMD has no fused multiply-add) with no cache misses: the attainable SIMD peak.
 */
export function probePeak(ptr: usize, iters: i32): f32 {
  let c0 = f32x4.splat(0), c1 = f32x4.splat(0), c2 = f32x4.splat(0), c3 = f32x4.splat(0);
  let d0 = f32x4.splat(0), d1 = f32x4.splat(0), d2 = f32x4.splat(0), d3 = f32x4.splat(0);
  const w0 = ptr + 4096, w1 = ptr + 8192, w2 = ptr + 12288, w3 = ptr + 16384;
  for (let it = 0; it < iters; it++) {
    for (let i: usize = 0; i < 2048; i += 32) {
      const a = v128.load(ptr + i), e = v128.load(ptr + i, 16);
      c0 = f32x4.add(c0, f32x4.mul(a, v128.load(w0 + i)));
      c1 = f32x4.add(c1, f32x4.mul(a, v128.load(w1 + i)));
      c2 = f32x4.add(c2, f32x4.mul(a, v128.load(w2 + i)));
      c3 = f32x4.add(c3, f32x4.mul(a, v128.load(w3 + i)));
      d0 = f32x4.add(d0, f32x4.mul(e, v128.load(w0 + i, 16)));
      d1 = f32x4.add(d1, f32x4.mul(e, v128.load(w1 + i, 16)));
      d2 = f32x4.add(d2, f32x4.mul(e, v128.load(w2 + i, 16)));
      d3 = f32x4.add(d3, f32x4.mul(e, v128.load(w3 + i, 16)));
    }
  }
  const s = f32x4.add(f32x4.add(f32x4.add(c0, c1), f32x4.add(c2, c3)), f32x4.add(f32x4.add(d0, d1), f32x4.add(d2, d3)));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1) + f32x4.extract_lane(s, 2) + f32x4.extract_lane(s, 3);
}
