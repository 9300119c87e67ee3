/** `name`'s WGSL source with `#include "lib/NAME.wgsl"` lines expanded (see wgsl-include.mjs). */
export function expandIncludes(name: string, read: (path: string) => string | null): string;
/** The shaders (wgsl/*.wgsl and src/kv/METHOD/*.wgsl) by name, with paths relative to the repository root. */
export function shaderFiles(root: string): Array<{ name: string; path: string }>;
/** Every shader's source with its includes expanded, by name. */
export function buildShaders(root: string): Record<string, string>;
