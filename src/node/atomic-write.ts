// Writes a file atomically (a temporary file beside it, fsync, rename) and refuses to replace an
// existing file unless the caller says so.
import { constants } from 'node:fs';
import { access, open, rename, rm } from 'node:fs/promises';
import { DuetError } from '../errors.js';

export async function writeFileAtomic(path: string, chunks: Iterable<Uint8Array>, options: { force?: boolean } = {}): Promise<number> {
  if (!options.force && await access(path, constants.F_OK).then(() => true, () => false)) {
    throw new DuetError('out', `${path} exists; pass force: true to replace it`);
  }
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  const fh = await open(tmp, 'wx');
  let bytes = 0;
  try {
    for (const c of chunks) {
      let done = 0;
      while (done < c.length) done += (await fh.write(c, done, c.length - done)).bytesWritten;
      bytes += c.length;
    }
    await fh.sync();
    await fh.close();
    await rename(tmp, path);
  } catch (e) {
    await fh.close().catch(() => {});
    await rm(tmp, { force: true });
    throw e;
  }
  return bytes;
}
