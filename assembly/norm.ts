// RMS normalisation: out[r] = x[r] / sqrt(mean(x[r]²) + eps) * weight. out may equal x.
import { hsum } from './simd';

export function rmsnorm(out: usize, x: usize, weight: usize, rows: i32, dim: i32, eps: f32): void {
  const rowBytes: usize = (<usize>dim) << 2;
  for (let r = 0; r < rows; r++) normRow(out + <usize>r * rowBytes, x + <usize>r * rowBytes, weight, dim, eps);
}

// @ts-ignore: decorator
@inline
function normRow(outr: usize, xr: usize, weight: usize, dim: i32, eps: f32): void {
  const rowBytes: usize = (<usize>dim) << 2;
  const end4: usize = (<usize>(dim & ~3)) << 2;
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0);
  let i: usize = 0;
  for (; i + 32 <= end4; i += 32) {
    const v0 = v128.load(xr + i), v1 = v128.load(xr + i, 16);
    a0 = f32x4.add(a0, f32x4.mul(v0, v0));
    a1 = f32x4.add(a1, f32x4.mul(v1, v1));
  }
  if (i < end4) {
    const v0 = v128.load(xr + i);
    a0 = f32x4.add(a0, f32x4.mul(v0, v0));
    i += 16;
  }
  let ss = hsum(f32x4.add(a0, a1));
  for (; i < rowBytes; i += 4) { const v = load<f32>(xr + i); ss += v * v; }
  const inv: f32 = <f32>(1.0 / Math.sqrt(<f64>ss / <f64>dim + <f64>eps));
  const s = f32x4.splat(inv);
  i = 0;
  for (; i < end4; i += 16) v128.store(outr + i, f32x4.mul(f32x4.mul(v128.load(xr + i), s), v128.load(weight + i)));
  for (; i < rowBytes; i += 4) store<f32>(outr + i, load<f32>(xr + i) * inv * load<f32>(weight + i));
}
