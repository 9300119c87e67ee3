// Saves Locret retaining heads beside a model (the format: src/kv/locret/file.ts). The weights are
// written first and the json last, each atomically, and the json records the weights' SHA-256, so a
// save cut short between the two is caught on load instead of pairing old json with new weights.
import { existsSync, mkdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { encodeLocretFiles, LOCRET_JSON, LOCRET_WEIGHTS, type LocretFileMeta, type LocretModelShape } from '../kv/locret/file.js';
import type { RetainingHeads } from '../kv/locret/retaining-heads.js';
import { writeFileAtomic } from './atomic.js';

export interface SaveLocretOptions {
  /** Replace existing retaining-head files; without it an existing file is an error. */
  overwrite?: boolean;
}

/** Writes locret.safetensors and locret.json into `dir`; returns their paths. */
export async function saveLocretHeads(dir: string, heads: RetainingHeads, config: LocretModelShape,
  meta: LocretFileMeta, options: SaveLocretOptions = {}): Promise<string[]> {
  const paths = [join(dir, LOCRET_WEIGHTS), join(dir, LOCRET_JSON)];
  if (!options.overwrite) {
    for (const p of paths) if (existsSync(p)) throw new Error(`${p} already exists; pass overwrite: true to replace it`);
  }
  const { json, weights } = await encodeLocretFiles(heads, config, meta);
  mkdirSync(dir, { recursive: true });
  writeFileAtomic(paths[0], weights);
  writeFileAtomic(paths[1], json);
  return paths;
}

/**
 * The folder `--out` names: a folder, or a path to its locret.json / locret.safetensors (the two
 * names are fixed: the json names the weights, and a model's loader looks for locret.json).
 */
export function locretOutputFolder(out: string): string {
  const name = basename(out);
  if (name === LOCRET_JSON || name === LOCRET_WEIGHTS) return dirname(out) || '.';
  if (/\.(json|safetensors)$/i.test(name)) throw new Error(`${out}: retaining heads are saved as ${LOCRET_JSON} + ${LOCRET_WEIGHTS} in a folder; give the folder (or its ${LOCRET_JSON})`);
  return out;
}

/** The retaining-head files already in `dir`. */
export function existingLocretFiles(dir: string): string[] {
  return [LOCRET_WEIGHTS, LOCRET_JSON].map((n) => join(dir, n)).filter((p) => existsSync(p));
}
