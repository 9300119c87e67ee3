// Kernels reached by name (Backend.run). A kernel is declared once, as plain data, next to the code
// that uses it (a KV method's folder, or here for the backends' own ops); each backend's kernel table
// is what it already compiles: the WASM module's exports on the CPU, the wgsl/ files on the GPU. So a
// new kernel needs no new Backend op, no backend code and no worker message: the declaration says
// which export / shader it is, how its tensors and scalars map onto the export's arguments and the
// shader's bindings and uniform block, and how many elements each tensor must hold. Being data, a
// declaration crosses the browser's worker boundary as it is (structured clone).

/** A kernel's scalar arguments by name. Integers unless the kernel lists the name in `floats`. */
export type KernelScalars = Readonly<Record<string, number>>;

/** A CPU argument: a tensor's byte address (optionally plus a scalar's count of f32), a scalar, or the scratch block. */
export type CpuKernelArg = string | { readonly tensor: string; readonly offset: string };

export interface KernelDef {
  /** For errors and counters, e.g. `locret_score`. */
  readonly name: string;
  /** The tensors it takes, in order (`run`'s tensors array). */
  readonly tensors: readonly string[];
  /** Every scalar it takes; a call gives exactly these. */
  readonly scalars: readonly string[];
  /** Scalars that are real numbers (f32 on the GPU); the others must be non-negative integers (u32). */
  readonly floats?: readonly string[];
  /** The tensors it writes: the GPU binds them read_write and reads an input that shares a buffer with one from a copy. */
  readonly writes: readonly string[];
  /**
   * Elements each tensor must hold, as an expression over the scalars (+, −, ·, parentheses,
   * integers), e.g. `qOffset + (n - 1) * qStride + qd`. Checked by every backend before it runs.
   */
  readonly sizes: Readonly<Record<string, string>>;
  /**
   * The CPU side: the WASM export to call and its arguments in order (tensor names → byte address,
   * scalar names → value, `scratch` → a block of `scratch.floats` f32 from the export named there).
   */
  readonly cpu?: { readonly export: string; readonly args: readonly CpuKernelArg[]; readonly scratch?: { readonly export: string; readonly args: readonly string[] } };
  /**
   * The GPU side: entry `entry` (default `main`) of wgsl/<shader>.wgsl; the tensors bind to
   * @binding(0 … n−1) in `tensors` order, then the uniform block at @binding(n) holds `uniforms`, one
   * 32-bit word each (f32 for `floats`, else u32). Workgroups: ⌈count / per⌉, folded into y past the
   * device's per-dimension limit (the shader recovers the index as wid.y · num_workgroups.x + wid.x).
   */
  readonly gpu?: { readonly shader: string; readonly entry?: string; readonly uniforms: readonly string[]; readonly workgroups: { readonly count: string; readonly per?: number } };
}

/** Evaluates a size expression over the scalars (+, −, *, parentheses, integers, names). */
export function evalSize(expr: string, scalars: KernelScalars, what: string): number {
  const tokens = expr.match(/\d+|[A-Za-z_]\w*|[-+*()]|\S/g) ?? [];
  let at = 0;
  const fail = (why: string): never => { throw new Error(`${what}: size expression '${expr}' ${why}`); };
  const atom = (): number => {
    const t = tokens[at++];
    if (t === undefined) return fail('ends early');
    if (t === '(') { const v = sum(); if (tokens[at++] !== ')') fail('misses a )'); return v; }
    if (t === '-') return -atom();
    if (/^\d+$/.test(t)) return Number(t);
    if (/^[A-Za-z_]/.test(t)) return t in scalars ? scalars[t] : fail(`names '${t}', which is not a scalar of the call`);
    return fail(`has an unexpected '${t}'`);
  };
  const product = (): number => { let v = atom(); while (tokens[at] === '*') { at++; v *= atom(); } return v; };
  const sum = (): number => {
    let v = product();
    while (tokens[at] === '+' || tokens[at] === '-') { const op = tokens[at++]; const r = product(); v = op === '+' ? v + r : v - r; }
    return v;
  };
  const v = sum();
  if (at !== tokens.length) fail(`has an unexpected '${tokens[at]}'`);
  return v;
}

/**
 * Checks a call against its declaration: the tensor count, exactly the declared scalars (integers
 * ≥ 0 unless floats, all finite) and every tensor's size. Errors name the kernel and the argument.
 */
export function checkKernelCall(def: KernelDef, tensors: ReadonlyArray<{ readonly length: number }>, scalars: KernelScalars): void {
  const name = `run ${def.name}`;
  if (tensors.length !== def.tensors.length) {
    throw new RangeError(`${name}: takes ${def.tensors.length} tensors (${def.tensors.join(', ')}), got ${tensors.length}`);
  }
  for (const key of Object.keys(scalars)) if (!def.scalars.includes(key)) throw new RangeError(`${name}: unknown scalar '${key}' (takes ${def.scalars.join(', ')})`);
  for (const key of def.scalars) {
    const x = scalars[key];
    if (x === undefined) throw new RangeError(`${name}: scalar '${key}' is missing`);
    const real = def.floats?.includes(key) ?? false;
    if (real ? !Number.isFinite(x) : !(Number.isInteger(x) && x >= 0 && x < 2 ** 32)) {
      throw new RangeError(`${name}: scalar '${key}' must be ${real ? 'a finite number' : 'a non-negative 32-bit integer'} (got ${x})`);
    }
  }
  def.tensors.forEach((t, i) => {
    const expr = def.sizes[t];
    if (expr === undefined) return;
    const need = evalSize(expr, scalars, name);
    if (tensors[i].length < need) throw new RangeError(`${name}: tensor '${t}' needs ${expr} = ${need} elements, it has ${tensors[i].length}`);
  });
}

/** The backends' own `add` op as a named kernel (x[i] += y[i], i < n): the pattern at its smallest. */
export const ADD_KERNEL: KernelDef = {
  name: 'add',
  tensors: ['x', 'y'],
  scalars: ['n'],
  writes: ['x'],
  sizes: { x: 'n', y: 'n' },
  cpu: { export: 'add', args: ['x', 'y', 'n'] },
  gpu: { shader: 'elementwise', entry: 'add', uniforms: ['n'], workgroups: { count: 'n', per: 256 } },
};
