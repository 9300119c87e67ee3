// WGSL has no include directive: a shader line `#include "lib/NAME.wgsl"` is replaced by that file
// (wgsl/lib/NAME.wgsl) when the build embeds the shaders. Each file is included at most once per
// shader (a second include of it, e.g. through two helpers that both need it, is dropped), so helpers
// may include what they use. A missing file or an include cycle is an error naming the chain.

const INCLUDE = /^[ \t]*#include[ \t]+"([^"]+)"[ \t]*$/;

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The shaders and where they live, relative to the repository root: the model's and the shared KV
 * storage kernels directly in wgsl/, each KV method's own in its folder (src/kv/METHOD/*.wgsl). A
 * shader is named by its file name without .wgsl; two files of one name are an error.
 * @param {string} root
 * @returns {Array<{ name: string, path: string }>}
 */
export function shaderFiles(root) {
  const dirs = ['wgsl', ...readdirSync(join(root, 'src/kv'), { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => `src/kv/${e.name}`)];
  const found = new Map();
  for (const dir of dirs) {
    for (const file of readdirSync(join(root, dir)).filter((f) => f.endsWith('.wgsl')).sort()) {
      const name = file.replace(/\.wgsl$/, ''), path = `${dir}/${file}`;
      if (found.has(name)) throw new Error(`two WGSL shaders named ${name}: ${found.get(name)} and ${path}`);
      found.set(name, path);
    }
  }
  return [...found].map(([name, path]) => ({ name, path })).sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * Every shader's source with its includes expanded, by name: a shader's path is relative to root,
 * its includes (lib/…) to wgsl/.
 * @param {string} root
 * @returns {Record<string, string>}
 */
export function buildShaders(root) {
  const read = (path) => { try { return readFileSync(join(root, path.startsWith('lib/') ? 'wgsl' : '', path), 'utf8'); } catch { return null; } };
  return Object.fromEntries(shaderFiles(root).map(({ name, path }) => [name, expandIncludes(path, read)]));
}

/**
 * `name`'s source with its includes expanded. `read(path)` returns a file's text, or null when there
 * is none (for `name` itself and for the include paths, lib/…).
 * @param {string} name
 * @param {(path: string) => string | null} read
 * @returns {string}
 */
export function expandIncludes(name, read) {
  const done = new Set();
  const expand = (path, chain) => {
    if (chain.includes(path)) throw new Error(`WGSL include cycle: ${[...chain, path].join(' -> ')}`);
    const text = read(path);
    if (text === null) {
      throw new Error(chain.length ? `WGSL include "${path}" not found (included from ${chain.join(' -> ')})` : `WGSL shader "${path}" not found`);
    }
    done.add(path);
    return text.split('\n').map((line, i) => {
      if (/^[ \t]*#/.test(line) && !INCLUDE.test(line)) throw new Error(`${path}:${i + 1}: malformed directive (expected #include "lib/NAME.wgsl"): ${line.trim()}`);
      const m = INCLUDE.exec(line);
      if (!m) return line;
      if ([...chain, path].includes(m[1])) return expand(m[1], [...chain, path]); // throws: a cycle
      if (done.has(m[1])) return `// (${m[1]} already included)`;
      return expand(m[1], [...chain, path]).replace(/\n$/, '');
    }).join('\n');
  };
  return expand(name, []);
}
