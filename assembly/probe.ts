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

/** Flops per iteration of probePeak (9 f32x4 multiplies + 9 f32x4 adds). */
export const PEAK_PROBE_FLOPS: i32 = 72;

/**
 * The arithmetic peak of WASM SIMD without fused multiply-add: `iters` iterations of eight
 * independent multiply + add chains on registers (no loads, no stores). Each iteration also moves
 * the two multiplicands (one add, one multiply), so nothing is loop-invariant and multiplies and
 * adds stay 1:1, the mix of the kernels' inner loops. 14 live vectors: no spills on x64.
 * Kernels that must load their operands reach less; the register-blocked GEMM measured 82–100%.
 */
export function probePeak(iters: i32): f32 {
  let c0 = f32x4.splat(0), c1 = f32x4.splat(0), c2 = f32x4.splat(0), c3 = f32x4.splat(0);
  let c4 = f32x4.splat(0), c5 = f32x4.splat(0), c6 = f32x4.splat(0), c7 = f32x4.splat(0);
  const k0 = f32x4.splat(0.5), k1 = f32x4.splat(1.5);
  const step = f32x4.splat(1e-7), decay = f32x4.splat(0.9999999);
  let a = f32x4.splat(1), b = f32x4.splat(1);
  for (let it = 0; it < iters; it++) {
    c0 = f32x4.add(c0, f32x4.mul(a, k0)); c1 = f32x4.add(c1, f32x4.mul(a, k1));
    c2 = f32x4.add(c2, f32x4.mul(b, k0)); c3 = f32x4.add(c3, f32x4.mul(b, k1));
    c4 = f32x4.add(c4, f32x4.mul(a, b)); c5 = f32x4.add(c5, f32x4.mul(a, a));
    c6 = f32x4.add(c6, f32x4.mul(b, b)); c7 = f32x4.add(c7, f32x4.mul(a, decay));
    a = f32x4.add(a, step);
    b = f32x4.mul(b, decay);
  }
  const s = f32x4.add(f32x4.add(f32x4.add(c0, c1), f32x4.add(c2, c3)), f32x4.add(f32x4.add(c4, c5), f32x4.add(c6, c7)));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1) + f32x4.extract_lane(s, 2) + f32x4.extract_lane(s, 3);
}
