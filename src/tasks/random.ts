// A small seeded PRNG (mulberry32): task data, random patterns and training batches must be
// reproducible from a seed on every platform.
export class Random {
  private state: number;
  constructor(seed: number) { this.state = (seed >>> 0) ^ 0x9e3779b9; }

  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Integer in [lo, hi). */
  int(lo: number, hi: number): number { return lo + Math.floor(this.next() * (hi - lo)); }

  pick<T>(items: readonly T[]): T { return items[Math.floor(this.next() * items.length)]; }

  /** A string of `n` decimal digits, first digit non-zero. */
  digits(n: number): string {
    let s = String(this.int(1, 10));
    while (s.length < n) s += String(this.int(0, 10));
    return s;
  }
}
