// Timing helpers. WebAssembly starts in V8's baseline tier and is recompiled optimised in the
// background once hot, so every measurement is preceded by warm-up calls and reports a median.

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Lets background work (optimising compiles, GC) progress between calls. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

export interface MeasureOptions {
  /** Untimed calls first (default 1). */
  warmup?: number;
  /** Timed calls at least (default 3) … */
  minReps?: number;
  /** … and more while the timed total stays under budgetMs (default 400), up to maxReps (default 50). */
  budgetMs?: number;
  maxReps?: number;
}

/** Median ms of `fn` (awaited) over repeated calls. */
export async function measure(fn: () => void | Promise<void>, o: MeasureOptions = {}): Promise<number> {
  return median(await samples(fn, o));
}

/**
 * Fastest ms of `fn` over repeated calls: for roofline probes, which measure what the machine can
 * do (a slow spell on a shared VM only ever makes a sample slower, and a probe slowed by one would
 * let kernels appear above 100% of it).
 */
export async function measureBest(fn: () => void | Promise<void>, o: MeasureOptions = {}): Promise<number> {
  return Math.min(...await samples(fn, o));
}

async function samples(fn: () => void | Promise<void>, o: MeasureOptions): Promise<number[]> {
  const warmup = o.warmup ?? 1, minReps = o.minReps ?? 3, budget = o.budgetMs ?? 400, maxReps = o.maxReps ?? 50;
  for (let i = 0; i < warmup; i++) { await fn(); await yieldToEventLoop(); }
  const times: number[] = [];
  let total = 0;
  while (times.length < maxReps && (times.length < minReps || total < budget)) {
    const t0 = performance.now();
    await fn();
    const dt = performance.now() - t0;
    times.push(dt);
    total += dt;
  }
  return times;
}

/** Calls `fn` repeatedly for about `ms` (at least twice), so V8 optimises the code it runs. */
export async function warmFor(ms: number, fn: () => void | Promise<void>): Promise<void> {
  const t0 = performance.now();
  let n = 0;
  while (n < 2 || performance.now() - t0 < ms) { await fn(); n++; if (n % 8 === 0) await yieldToEventLoop(); }
}

export interface BatchedOptions {
  /** Queue ops until one sample lasts at least this long (default 20 ms)… */
  sampleMs?: number;
  /** …or this many ops are queued per sample (default 4096). */
  maxReps?: number;
  /** Timed samples at least (default 3), more while their total stays under budgetMs (default 500), up to 9. */
  minSamples?: number;
  budgetMs?: number;
}

/**
 * Median ms per op of work that is queued (`record`) and waited for (`sync`), as on a GPU: a sample
 * queues the op `reps` times and waits once, and `reps` grows until a sample lasts `sampleMs`, so
 * that the fixed cost of a submit and a read-back is spread over many ops. Host recording time is
 * included: what is reported is the rate at which the op can be issued and run back to back.
 */
export async function measureBatched(record: () => void, sync: () => Promise<void>, o: BatchedOptions = {}): Promise<{ ms: number; reps: number }> {
  const sampleMs = o.sampleMs ?? 20, maxReps = o.maxReps ?? 4096, minSamples = o.minSamples ?? 3, budget = o.budgetMs ?? 500;
  const sample = async (reps: number) => {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) record();
    await sync();
    return performance.now() - t0;
  };
  await sample(1); // pipelines compile, buffers reach the device
  let reps = 1, t = await sample(1);
  while (t < sampleMs && reps < maxReps) {
    reps = Math.min(maxReps, reps * Math.min(16, Math.max(2, Math.ceil(sampleMs / Math.max(t, 0.01)))));
    t = await sample(reps);
  }
  const times = [t];
  let total = t;
  while (times.length < 9 && (times.length < minSamples || total < budget)) {
    const dt = await sample(reps);
    times.push(dt);
    total += dt;
  }
  return { ms: median(times) / reps, reps };
}
