/** `name`'s WGSL source with `#include "lib/NAME.wgsl"` lines expanded (see wgsl-include.mjs). */
export function expandIncludes(name: string, read: (path: string) => string | null): string;
