// ModelFiles over the local file system; tensors are read by byte range, never whole files.
import { statSync } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { ModelFiles } from '../model/files.js';

/** A model directory, or one `.gguf` file (then `gguf` names it inside its folder). */
export function nodeModelFiles(path: string): ModelFiles {
  const single = path.toLowerCase().endsWith('.gguf') && isFile(path);
  const dir = single ? dirname(path) : path;
  return {
    name: path,
    ...(single ? { gguf: basename(path) } : {}),
    async exists(path) { try { return (await stat(join(dir, path))).isFile(); } catch { return false; } },
    async size(path) { return (await stat(join(dir, path))).size; },
    async readText(path) {
      try { return await readFile(join(dir, path), 'utf8'); } catch (e) { throw new Error(`${join(dir, path)}: ${(e as Error).message}`); }
    },
    async readBytes(path, offset, length) {
      const fh = await open(join(dir, path), 'r');
      try {
        const out = new Uint8Array(length);
        let done = 0;
        while (done < length) {
          const { bytesRead } = await fh.read(out, done, length - done, offset + done);
          if (bytesRead === 0) throw new Error(`${path}: truncated (wanted ${length} bytes at offset ${offset}, file ended after ${done})`);
          done += bytesRead;
        }
        return out;
      } finally { await fh.close(); }
    },
  };
}

function isFile(path: string): boolean {
  try { return statSync(path).isFile(); } catch { return false; }
}
