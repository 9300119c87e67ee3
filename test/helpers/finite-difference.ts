// Central finite differences against an analytic gradient, the check every hand-written backward
// pass in the tests goes through.
import * as assert from 'uvu/assert';
import type { Random } from '../../src/tasks/random.ts';

/**
 * For each checked index i (all of `param` when it has ≤ 40 values, else 40 drawn from `rnd`, or
 * `indices`): (objective(p + eps) − objective(p − eps)) / 2eps must match grad[i] within
 * 2e-3 + 2e-2·|grad[i]|. `param` is restored after each probe.
 */
export function checkGradient(rnd: Random, what: string, param: Float32Array, grad: ArrayLike<number>, objective: () => number,
  eps = 1e-2, indices?: number[]): void {
  const idx = indices ?? (param.length <= 40 ? [...param.keys()] : Array.from({ length: 40 }, () => rnd.int(0, param.length)));
  for (const i of idx) {
    const keep = param[i];
    param[i] = keep + eps; const up = objective();
    param[i] = keep - eps; const down = objective();
    param[i] = keep;
    const fd = (up - down) / (2 * eps);
    assert.ok(Math.abs(fd - grad[i]) <= 2e-3 + 2e-2 * Math.abs(grad[i]), `${what}[${i}]: finite difference ${fd}, analytic ${grad[i]}`);
  }
}
