// Progress lines on stderr: redrawn in place on a terminal, printed every ~10% otherwise.
export class Progress {
  private lastBucket = -1;
  private readonly start = performance.now();
  constructor(private readonly label: string, private readonly stream: NodeJS.WriteStream = process.stderr) {}

  update(done: number, total: number, detail = ''): void {
    const fraction = total > 0 ? Math.min(1, done / total) : 1;
    const elapsed = (performance.now() - this.start) / 1000;
    const eta = fraction > 0 && fraction < 1 ? elapsed * (1 - fraction) / fraction : 0;
    const bar = '#'.repeat(Math.round(fraction * 20)).padEnd(20, '.');
    const line = `${this.label} [${bar}] ${(fraction * 100).toFixed(0).padStart(3)}% ${elapsed.toFixed(1)}s${eta ? ` eta ${eta.toFixed(1)}s` : ''} ${detail}`;
    if (this.stream.isTTY) {
      this.stream.write(`\r${line.slice(0, (this.stream.columns || 120) - 1).padEnd((this.stream.columns || 120) - 1)}`);
      if (fraction >= 1) this.stream.write('\n');
    } else {
      const bucket = Math.floor(fraction * 10);
      if (bucket !== this.lastBucket) { this.lastBucket = bucket; this.stream.write(`${line}\n`); }
    }
  }
}
