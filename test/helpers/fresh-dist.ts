// Tests that spawn the CLI run dist/cli.js: after a source change it would run stale code and pass
// or fail for the wrong reason. Before the first spawn, dist/ is checked against every input of
// the build and rebuilt (scripts/build.mjs) when any input is newer.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = new URL('../..', import.meta.url).pathname;
/** What scripts/build.mjs reads to make dist/ (src/generated is its own output). */
const INPUTS = ['src', 'assembly', 'wgsl', 'web', 'scripts/build.mjs', 'asconfig.json', 'package.json'];
const OUTPUT = 'dist/cli.js';

function newestFiles(path: string, skip: (p: string) => boolean, out: Array<{ path: string; mtime: number }>): void {
  if (skip(path) || !existsSync(path)) return;
  const s = statSync(path);
  if (s.isDirectory()) for (const name of readdirSync(path)) newestFiles(join(path, name), skip, out);
  else out.push({ path, mtime: s.mtimeMs });
}

/** Inputs (under `root`) modified after `output` was built; every input when it does not exist. */
export function staleInputs(root: string, inputs: string[], output: string): string[] {
  const files: Array<{ path: string; mtime: number }> = [];
  for (const i of inputs) newestFiles(join(root, i), (p) => p.includes(`${join('src', 'generated')}`), files);
  const out = join(root, output);
  if (!existsSync(out)) return files.map((f) => f.path);
  const built = statSync(out).mtimeMs;
  return files.filter((f) => f.mtime > built).map((f) => f.path);
}

let checked = false;

/** Rebuilds dist/ once per test process when a build input is newer than dist/cli.js. */
export function ensureFreshDist(): void {
  if (checked) return;
  checked = true;
  const stale = staleInputs(ROOT, INPUTS, OUTPUT);
  if (stale.length === 0) return;
  console.warn(`[build] dist/ is older than ${stale.length} source file(s) (${stale.slice(0, 3).map((p) => p.slice(ROOT.length)).join(', ')}…): rebuilding before spawning the CLI`);
  execFileSync(process.execPath, [join(ROOT, 'scripts/build.mjs')], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
}
