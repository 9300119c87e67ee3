// Rotary position embedding, Hugging Face "rotate half": for each row r, head h, i < headDim/2,
// with a = x[i], b = x[i + half], θ = positions[r] · invFreq[i]:
//   x[i] = a cos θ − b sin θ;  x[i + half] = b cos θ + a sin θ.
// θ, cos and sin are computed in f64 once per (row, i) and applied to every head with f32x4.

/** x: [rows][numHeads][headDim] f32 (in place); positions: rows i32; invFreq: headDim/2 f32. */
export function rope(x: usize, rows: i32, numHeads: i32, headDim: i32, positions: usize, invFreq: usize): void {
  const half = headDim >> 1;
  const headBytes: usize = (<usize>headDim) << 2;
  const halfBytes: usize = (<usize>half) << 2;
  const rowBytes: usize = <usize>numHeads * headBytes;
  const half4 = half & ~3;
  for (let r = 0; r < rows; r++) {
    const pos = <f64>load<i32>(positions + ((<usize>r) << 2));
    const xr = x + <usize>r * rowBytes;
    let i = 0;
    for (; i < half4; i += 4) {
      const fi = invFreq + ((<usize>i) << 2);
      const t0 = pos * <f64>load<f32>(fi), t1 = pos * <f64>load<f32>(fi, 4);
      const t2 = pos * <f64>load<f32>(fi, 8), t3 = pos * <f64>load<f32>(fi, 12);
      const c = f32x4(<f32>Math.cos(t0), <f32>Math.cos(t1), <f32>Math.cos(t2), <f32>Math.cos(t3));
      const s = f32x4(<f32>Math.sin(t0), <f32>Math.sin(t1), <f32>Math.sin(t2), <f32>Math.sin(t3));
      const off: usize = (<usize>i) << 2;
      for (let h = 0; h < numHeads; h++) {
        const pa = xr + <usize>h * headBytes + off, pb = pa + halfBytes;
        const a = v128.load(pa), b = v128.load(pb);
        v128.store(pa, f32x4.sub(f32x4.mul(a, c), f32x4.mul(b, s)));
        v128.store(pb, f32x4.add(f32x4.mul(b, c), f32x4.mul(a, s)));
      }
    }
    for (; i < half; i++) {
      const t = pos * <f64>load<f32>(invFreq + ((<usize>i) << 2));
      const c = <f32>Math.cos(t), s = <f32>Math.sin(t);
      const off: usize = (<usize>i) << 2;
      for (let h = 0; h < numHeads; h++) {
        const pa = xr + <usize>h * headBytes + off, pb = pa + halfBytes;
        const a = load<f32>(pa), b = load<f32>(pb);
        store<f32>(pa, a * c - b * s);
        store<f32>(pb, b * c + a * s);
      }
    }
  }
}
