// DuoAttention's published patterns live beside the repository (../shared/patterns), never in it.
// Tests that read them find them there or through DUET_PUBLISHED_PATTERNS; where neither exists
// (a checkout without the shared data) they say so and skip, rather than fail on a missing fixture.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const CANDIDATES = [
  process.env.DUET_PUBLISHED_PATTERNS,
  fileURLToPath(new URL('../../../shared/patterns/', import.meta.url)),
  '/work/shared/patterns/',
].filter((p): p is string => !!p);

/** The directory holding the six published patterns, or null (with a notice) when absent. */
export function publishedPatterns(): string | null {
  const dir = CANDIDATES.find((p) => existsSync(p));
  if (!dir) console.warn(`[skip] DuoAttention's published patterns not found (looked in ${CANDIDATES.join(', ')})`);
  return dir ?? null;
}
