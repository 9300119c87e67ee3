// Writes an identification result as a DuoAttention pattern directory: full_attention_heads.tsv,
// config.json (sink/recent sizes and the method's options), identify.json (method, options, seed,
// data, loss curve or scores, time) and an SVG heatmap of the values.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { formatAlphas } from '../attention/pattern.js';
import { heatmap } from '../plot/svg.js';

export interface IdentifyReport {
  method: string;
  options: Record<string, unknown>;
  seed: number;
  data: string;
  alphas: number[][];
  sink: number;
  recent: number;
  seconds: number;
  extra: Record<string, unknown>;
}

export function writePattern(dir: string, r: IdentifyReport): string[] {
  mkdirSync(dir, { recursive: true });
  const clipped = r.alphas.map((row) => row.map((a) => Math.min(1, Math.max(0, a))));
  writeFileSync(join(dir, 'full_attention_heads.tsv'), formatAlphas(clipped));
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify({
    sink_size: r.sink, recent_size: r.recent, deploy_sink_size: null, deploy_recent_size: null, threshold: 0.5,
    method: r.method, seed: r.seed, ...r.options,
  }, null, 2)}\n`);
  writeFileSync(join(dir, 'identify.json'), `${JSON.stringify({
    method: r.method, options: r.options, seed: r.seed, data: r.data, seconds: r.seconds, alphas: clipped, ...r.extra,
  }, null, 1)}\n`);
  const svg = join(dir, 'heads.svg');
  writeFileSync(svg, heatmap(clipped, {
    title: `${r.method}: head scores (1 = retrieval)`, rowLabel: 'layer', colLabel: 'KV head', annotate: true,
    rowNames: clipped.map((_, l) => `layer ${l}`),
  }));
  return ['full_attention_heads.tsv', 'config.json', 'identify.json', 'heads.svg'].map((f) => join(dir, f));
}
