// WGSL has no include directive: a shader line `#include "lib/NAME.wgsl"` is replaced by that file
// (relative to wgsl/) when the build embeds the shaders. Each file is included at most once per
// shader (a second include of it, e.g. through two helpers that both need it, is dropped), so helpers
// may include what they use. A missing file or an include cycle is an error naming the chain.

const INCLUDE = /^[ \t]*#include[ \t]+"([^"]+)"[ \t]*$/;

/**
 * `name`'s source with its includes expanded. `read(path)` returns a file's text, or null when there
 * is none; paths are relative to the shader directory.
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
