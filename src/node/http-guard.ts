// Checks every local HTTP server of Duet makes before it answers (duet web; reusable by others).
import { realpath } from 'node:fs/promises';
import { resolve, sep } from 'node:path';

/**
 * A server bound to a loopback address answers only requests addressed to it by a loopback name
 * (127.0.0.1, `localhost`, [::1]) with its port: a page on another site that rebinds its own host
 * name to 127.0.0.1 (DNS rebinding) sends its own name in Host and is refused.
 */
export function hostAllowed(host: string | undefined, port: number): boolean {
  if (!host) return false;
  const m = /^(127\.0\.0\.1|localhost|\[::1\])(?::(\d{1,5}))?$/i.exec(host.trim());
  if (!m) return false;
  return m[2] === undefined ? port === 80 : Number(m[2]) === port;
}

/**
 * The real path of `rel` inside `dir`; 'outside' when it lies outside `dir` by name or after
 * following symlinks, 'missing' when it does not exist. `dir` itself may be a symlink.
 */
export async function resolveInside(dir: string, rel: string): Promise<string | 'outside' | 'missing'> {
  const lexical = resolve(dir, rel);
  const inside = (root: string, p: string) => p === root || p.startsWith(root.endsWith(sep) ? root : root + sep);
  if (!inside(resolve(dir), lexical)) return 'outside';
  let realDir: string, real: string;
  try { [realDir, real] = await Promise.all([realpath(dir), realpath(lexical)]); } catch { return 'missing'; }
  return inside(realDir, real) ? real : 'outside';
}

/**
 * One `bytes=` range against a file size. undefined: serve the whole file (no Range, a range this
 * server does not take — another unit, several ranges, bad syntax — or one the file cannot satisfy;
 * RFC 9110 §14.2 lets a server ignore Range, and the whole file is always a correct answer).
 */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d{0,15})-(\d{0,15})$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  let start: number, end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return undefined;
    start = Math.max(0, size - suffix); end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start >= size || end < start) return undefined;
  return { start, end };
}
