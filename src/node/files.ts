// ModelFiles over the local file system; tensors are read by byte range, never whole files.
import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { ModelFiles } from '../model/files.js';

export function nodeModelFiles(dir: string): ModelFiles {
  return {
    name: dir,
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
