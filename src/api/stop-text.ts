// Stop strings over streamed text: text is released only once no stop string can still begin in
// it, so a stop string split across tokens never reaches the caller.

export class StopText {
  private text = '';
  private released = 0;
  /** Index of the first stop string in the text, once found. */
  stoppedAt: number | null = null;

  constructor(private readonly stops: readonly string[]) {}

  /** Adds decoded text; returns the part that is now safe to emit (up to a stop string, if one appeared). */
  push(piece: string): string {
    if (this.stoppedAt !== null) return '';
    this.text += piece;
    // A stop string may start up to (its length − 1) characters before the new piece.
    const from = Math.max(0, this.text.length - piece.length - Math.max(0, ...this.stops.map((s) => s.length)));
    let hit = -1;
    for (const s of this.stops) {
      const i = this.text.indexOf(s, from);
      if (i >= 0 && (hit < 0 || i < hit)) hit = i;
    }
    if (hit >= 0) {
      this.stoppedAt = hit;
      return this.release(hit);
    }
    return this.release(this.text.length - this.heldBack());
  }

  /** Everything not yet emitted (at the end of the generation), minus a stop string. */
  flush(): string {
    return this.release(this.stoppedAt ?? this.text.length);
  }

  /** The whole emitted text. */
  get output(): string { return this.text.slice(0, this.released); }

  /** Length of the longest suffix of the text that is a proper prefix of a stop string. */
  private heldBack(): number {
    let keep = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, this.text.length); n > keep; n--) {
        if (this.text.endsWith(s.slice(0, n))) { keep = n; break; }
      }
    }
    return keep;
  }

  private release(upTo: number): string {
    if (upTo <= this.released) return '';
    const out = this.text.slice(this.released, upTo);
    this.released = upTo;
    return out;
  }
}
