// Model files served over HTTP (the demo serves a model directory), read with range requests.
import type { ModelFiles } from '../model/files.js';

/** A served model directory, or one served `.gguf` file (read by range requests). */
export function httpModelFiles(baseUrl: string): ModelFiles {
  const ggufName = /\.gguf$/i.test(new URL(baseUrl, 'http://x/').pathname) ? baseUrl.split(/[?#]/)[0].split('/').pop() : undefined;
  const root = ggufName ? baseUrl.slice(0, baseUrl.lastIndexOf('/') + 1) : baseUrl;
  const url = (path: string) => new URL(path, root.endsWith('/') ? root : `${root}/`).toString();
  const sizes = new Map<string, number>();
  const head = async (path: string) => fetch(url(path), { method: 'HEAD' });
  return {
    name: baseUrl,
    ...(ggufName ? { gguf: ggufName } : {}),
    async exists(path) { return (await head(path)).ok; },
    async size(path) {
      let n = sizes.get(path);
      if (n === undefined) {
        const r = await head(path);
        if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
        n = Number(r.headers.get('content-length'));
        sizes.set(path, n);
      }
      return n;
    },
    async readText(path) {
      const r = await fetch(url(path));
      if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
      return r.text();
    },
    async readBytes(path, offset, length) {
      if (length === 0) return new Uint8Array(0);
      const r = await fetch(url(path), { headers: { Range: `bytes=${offset}-${offset + length - 1}` } });
      if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
      const bytes = new Uint8Array(await r.arrayBuffer());
      if (bytes.length !== length) throw new Error(`${path}: expected ${length} bytes at offset ${offset}, got ${bytes.length} (file truncated?)`);
      return bytes;
    },
  };
}

/** Files the user picked with <input type=file webkitdirectory>, keyed by their path inside the folder. */
export function pickedModelFiles(files: FileList | File[]): ModelFiles {
  const byPath = new Map<string, File>();
  let root = 'model';
  for (const f of Array.from(files)) {
    const rel = (f as File & { webkitRelativePath?: string }).webkitRelativePath || f.name;
    const parts = rel.split('/');
    if (parts.length > 1) root = parts[0];
    byPath.set(parts.length > 1 ? parts.slice(1).join('/') : rel, f);
  }
  const get = (path: string) => {
    const f = byPath.get(path);
    if (!f) throw new Error(`${root}/${path}: missing from the picked folder`);
    return f;
  };
  const only = byPath.size === 1 ? [...byPath.keys()][0] : undefined;
  return {
    name: root,
    ...(only && /\.gguf$/i.test(only) ? { gguf: only } : {}),
    async exists(path) { return byPath.has(path); },
    async size(path) { return get(path).size; },
    async readText(path) { return get(path).text(); },
    async readBytes(path, offset, length) {
      const f = get(path);
      if (offset + length > f.size) throw new Error(`${root}/${path}: wants bytes ${offset}..${offset + length} of a ${f.size}-byte file (truncated?)`);
      return new Uint8Array(await f.slice(offset, offset + length).arrayBuffer());
    },
  };
}
