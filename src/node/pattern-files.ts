// Writes an identification result as a DuoAttention pattern directory: full_attention_heads.tsv,
// config.json (sink/recent sizes and the method's options), identify.json (method, options, seed,
// data, loss curve or scores, time) and an SVG heatmap of the values.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { formatAlphas } from '../attention/pattern.js';
import type { HeadIdentification } from '../api/identify.js';
import { heatmap } from '../plot/svg.js';
import { writeFileAtomic } from './atomic.js';

/** The files of a pattern folder written here. */
export const PATTERN_FILES = ['full_attention_heads.tsv', 'config.json', 'identify.json', 'heads.svg'];

/** What a pattern folder records (a HeadIdentification has it all). */
export type IdentifyReport = Omit<HeadIdentification, 'device'>;

/** Writes the pattern folder (each file atomically); returns the files' paths. */
export function savePattern(dir: string, r: IdentifyReport): string[] {
  mkdirSync(dir, { recursive: true });
  const clipped = r.alphas.map((row) => row.map((a) => Math.min(1, Math.max(0, a))));
  writeFileAtomic(join(dir, 'full_attention_heads.tsv'), formatAlphas(clipped));
  writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify({
    sink_size: r.sink, recent_size: r.recent, deploy_sink_size: null, deploy_recent_size: null, threshold: 0.5,
    method: r.method, seed: r.seed, ...r.options,
  }, null, 2)}\n`);
  writeFileAtomic(join(dir, 'identify.json'), `${JSON.stringify({
    method: r.method, options: r.options, seed: r.seed, data: r.data, seconds: r.seconds, alphas: clipped, ...r.extra,
  }, null, 1)}\n`);
  const svg = join(dir, 'heads.svg');
  writeFileAtomic(svg, heatmap(clipped, {
    title: `${r.method}: head scores (1 = retrieval)`, rowLabel: 'layer', colLabel: 'KV head', annotate: true,
    rowNames: clipped.map((_, l) => `layer ${l}`),
  }));
  return PATTERN_FILES.map((f) => join(dir, f));
}
