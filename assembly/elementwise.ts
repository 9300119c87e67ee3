// Element-wise kernels: SwiGLU gate (siluMul) and residual add.
import { expv, exps } from './simd';

/** out[i] = silu(gate[i]) · up[i], silu(z) = z / (1 + e^−z). out may alias gate or up. */
export function siluMul(out: usize, gate: usize, up: usize, n: i32): void {
  const end4: usize = (<usize>(n & ~3)) << 2, end: usize = (<usize>n) << 2;
  const one = f32x4.splat(1);
  let i: usize = 0;
  for (; i < end4; i += 16) {
    const g = v128.load(gate + i);
    const e = expv(f32x4.neg(g));
    v128.store(out + i, f32x4.mul(f32x4.div(g, f32x4.add(one, e)), v128.load(up + i)));
  }
  for (; i < end; i += 4) {
    const g = load<f32>(gate + i);
    store<f32>(out + i, g / (1 + exps(-g)) * load<f32>(up + i));
  }
}

/** x[i] += y[i]. */
export function add(x: usize, y: usize, n: i32): void {
  const end4: usize = (<usize>(n & ~3)) << 2, end: usize = (<usize>n) << 2;
  let i: usize = 0;
  for (; i < end4; i += 16) v128.store(x + i, f32x4.add(v128.load(x + i), v128.load(y + i)));
  for (; i < end; i += 4) store<f32>(x + i, load<f32>(x + i) + load<f32>(y + i));
}
