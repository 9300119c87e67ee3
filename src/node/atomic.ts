// Writes that cannot leave a half-written file or a half-replaced set of files behind.
//
// One file (writeFileAtomic; writeChunksAtomic streams one): written to a temporary file in the same folder, fsynced, renamed over the target (a
// rename within one file system is atomic), then the folder is fsynced so the rename survives a
// power cut. A set of files (one training checkpoint): every file is staged as `NAME.staged` and
// fsynced; then a manifest naming each file with its size and SHA-256 is written atomically — the
// commit point; then the staged files are renamed into place. A save that fails before the
// manifest leaves the previous set untouched (its stale staged files are removed on the next
// load); one that fails after it is finished on the next load (`recoverFileSet` renames the staged
// files whose hash the manifest names). Loading verifies every file against the manifest.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { DuetError } from '../errors.js';

/** The file-system operations the writers use; tests wrap it to fail at a chosen operation. */
export interface WriteFs {
  /** Writes the whole file and fsyncs it before returning. */
  writeDurable(path: string, data: Uint8Array | string): void;
  rename(from: string, to: string): void;
  /** fsyncs a folder (so renames in it are durable); a no-op where folders cannot be opened. */
  syncDir(dir: string): void;
  remove(path: string): void;
}

export const nodeWriteFs: WriteFs = {
  writeDurable(path, data) {
    const fd = fs.openSync(path, 'w');
    try {
      fs.writeFileSync(fd, data);
      fs.fsyncSync(fd);
    } finally { fs.closeSync(fd); }
  },
  rename: (from, to) => fs.renameSync(from, to),
  syncDir(dir) {
    let fd: number;
    try { fd = fs.openSync(dir, 'r'); } catch { return; }
    try { fs.fsyncSync(fd); } catch { /* some file systems refuse fsync on folders */ } finally { fs.closeSync(fd); }
  },
  remove: (path) => fs.rmSync(path, { force: true }),
};

let tempCounter = 0;
/** A temporary name beside `path` (same folder, so the final rename stays on one file system). */
const tempPath = (path: string): string => `${path}.tmp-${process.pid}-${tempCounter++}`;

/** Replaces `path` with `data` atomically (temp file in the same folder, fsync, rename, folder fsync). */
export function writeFileAtomic(path: string, data: Uint8Array | string, wfs: WriteFs = nodeWriteFs): void {
  const tmp = tempPath(path);
  try {
    wfs.writeDurable(tmp, data);
    wfs.rename(tmp, path);
  } catch (e) {
    try { wfs.remove(tmp); } catch { /* the original error matters */ }
    throw e;
  }
  wfs.syncDir(dirname(path));
}

/**
 * Streams `chunks` into `path` the same way (for files too big to build in memory: GGUF files), and
 * refuses to replace an existing file unless `force`. Returns the bytes written.
 */
export async function writeChunksAtomic(path: string, chunks: Iterable<Uint8Array>, options: { force?: boolean } = {}): Promise<number> {
  if (!options.force && fs.existsSync(path)) throw new DuetError('out', `${path} exists; pass force: true to replace it`);
  const tmp = tempPath(path);
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
  nodeWriteFs.syncDir(dirname(path));
  return bytes;
}

export interface ManifestEntry { size: number; sha256: string }
export interface Manifest { format: 'duet-file-set'; version: 1; files: Record<string, ManifestEntry>; [extra: string]: unknown }

const STAGED = '.staged';
const sha256 = (data: Uint8Array | string): string => createHash('sha256').update(data).digest('hex');
const bytesOf = (data: Uint8Array | string): number => (typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength);

/**
 * Writes a set of files under `dir` (names relative to it, folders created) so that the set is
 * replaced all at once: see the header. `manifestName` is relative to `dir`; `extra` fields are
 * stored in the manifest beside the file list.
 */
export function writeFileSet(dir: string, files: Record<string, Uint8Array | string>, manifestName: string,
  extra: Record<string, unknown> = {}, wfs: WriteFs = nodeWriteFs): void {
  const manifest: Manifest = { format: 'duet-file-set', version: 1, ...extra, files: {} };
  const folders = new Set<string>();
  for (const [name, data] of Object.entries(files)) {
    const path = join(dir, name);
    fs.mkdirSync(dirname(path), { recursive: true });
    folders.add(dirname(path));
    wfs.writeDurable(path + STAGED, data);
    manifest.files[name] = { size: bytesOf(data), sha256: sha256(data) };
  }
  for (const f of folders) wfs.syncDir(f);
  writeFileAtomic(join(dir, manifestName), `${JSON.stringify(manifest, null, 1)}\n`, wfs); // the commit point
  for (const name of Object.keys(files)) wfs.rename(join(dir, name) + STAGED, join(dir, name));
  for (const f of folders) wfs.syncDir(f);
}

function fileHash(path: string): ManifestEntry | null {
  try {
    const data = fs.readFileSync(path);
    return { size: data.byteLength, sha256: sha256(data) };
  } catch { return null; }
}

/**
 * Brings a set written by writeFileSet to a consistent state and checks it: finishes an
 * interrupted save (renames staged files the manifest names), removes stale staged files of a save
 * that never committed, then verifies every file's size and hash. Returns the manifest, or null when
 * there is none. Throws an Error naming the file that does not match.
 */
export function recoverFileSet(dir: string, manifestName: string, wfs: WriteFs = nodeWriteFs): Manifest | null {
  const manifestPath = join(dir, manifestName);
  if (!fs.existsSync(manifestPath)) return null;
  let manifest: Manifest;
  try {
    manifest = JSON.parse(fs.readFileSync(manifestPath, 'utf8')) as Manifest;
  } catch (e) {
    throw new Error(`${manifestPath}: invalid JSON (${(e as Error).message})`);
  }
  if (manifest?.format !== 'duet-file-set' || typeof manifest.files !== 'object' || manifest.files === null) {
    throw new Error(`${manifestPath}: not a Duet checkpoint manifest (field "format" or "files")`);
  }
  for (const [name, want] of Object.entries(manifest.files)) {
    const path = join(dir, name);
    const staged = fileHash(path + STAGED);
    if (staged) {
      if (staged.size === want.size && staged.sha256 === want.sha256) wfs.rename(path + STAGED, path);
      else wfs.remove(path + STAGED);
    }
    const got = fileHash(path);
    if (!got) throw new Error(`${path}: missing (${manifestPath} names it)`);
    if (got.size !== want.size || got.sha256 !== want.sha256) {
      throw new Error(`${path}: ${got.size} bytes with SHA-256 ${got.sha256.slice(0, 12)}…, but ${manifestPath} records ${want.size} bytes with ${String(want.sha256).slice(0, 12)}… (changed or corrupted since it was saved)`);
    }
  }
  return manifest;
}
