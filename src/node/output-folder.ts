// Guards for the folders commands write into (--out): a command never writes into a folder that
// holds a model, never over files that are not its own, and says what of a previous run it replaces.
import { existsSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

const WEIGHT_FILE = /^(model.*\.safetensors|model\.safetensors\.index\.json|pytorch_model.*\.bin|.*\.gguf)$/;

/** True when `dir` holds a model: weight files, or a config.json that describes a network. */
export function holdsModel(dir: string): boolean {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) return false;
  const names = readdirSync(dir);
  if (names.some((n) => WEIGHT_FILE.test(n))) return true;
  if (!names.includes('config.json')) return false;
  try {
    const c = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    return typeof c === 'object' && c !== null && ('model_type' in c || 'architectures' in c || 'num_hidden_layers' in c);
  } catch { return false; }
}

function entries(dir: string): string[] | null {
  if (!existsSync(dir)) return null;
  if (!statSync(dir).isDirectory()) throw new Error(`${dir}: exists and is not a folder`);
  return readdirSync(dir);
}

/**
 * For writers that replace a whole folder (`duet train`): refuses a non-empty folder unless
 * `force`. `what` names what would be lost, `hint` how to go on.
 */
export function assertOutputFolder(dir: string, o: { force?: boolean; what: string; hint: string }): void {
  const names = entries(dir);
  if (!names || names.length === 0 || o.force) return;
  const shown = names.slice(0, 4).join(', ') + (names.length > 4 ? ', …' : '');
  throw new Error(`${dir}: not empty (${shown})${holdsModel(dir) ? ', it holds a model' : ''}; refusing to overwrite it with ${o.what}: ${o.hint}`);
}

export interface OutputRule {
  /** The flag, for messages (e.g. "duet identify --out"). */
  flag: string;
  /** What the command writes (e.g. "a head pattern"). */
  what: string;
  /** The command's own file names (those a previous run of it wrote). */
  owns: (name: string) => boolean;
}

/**
 * For writers of results (identify, eval, bench): `dir` may be new, empty, or hold only files the
 * command itself writes (a previous run, returned so the caller can say it replaces them). A folder
 * holding a model or any other file is refused.
 */
export function claimOutputFolder(dir: string, rule: OutputRule): string[] {
  const names = entries(dir);
  if (!names) return [];
  if (holdsModel(dir)) throw new Error(`${dir}: holds a model; ${rule.flag} never writes ${rule.what} into a model's folder (name a folder of its own)`);
  const foreign = names.filter((n) => !rule.owns(n));
  if (foreign.length) {
    throw new Error(`${dir}: holds files that are not ${rule.what} (${foreign.slice(0, 4).join(', ')}${foreign.length > 4 ? ', …' : ''}); ${rule.flag} writes only into a new, empty or its own folder`);
  }
  return names;
}

/** Removes the files of a previous run that this run did not write again (no stale mix of two runs). */
export function removeStale(dir: string, previous: string[], written: string[]): string[] {
  const now = new Set(written.map((f) => f.split(/[\\/]/).pop()!));
  const stale = previous.filter((n) => !now.has(n));
  for (const n of stale) rmSync(join(dir, n), { force: true, recursive: true });
  return stale;
}
