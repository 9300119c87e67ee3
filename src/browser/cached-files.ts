// Model files from a base URL (Hugging Face layout), kept in the Cache API: the first load downloads
// each file once, whole, with progress; later loads read the cached copy and touch no network.
import type { ModelFiles } from '../model/files.js';
import { httpModelFiles } from './http-files.js';

export interface CachedFilesOptions {
  /** Cache API cache name (default 'duet-models'). */
  cacheName?: string;
  onProgress?: (done: number, total: number, file: string) => void;
}

/** What a cached source did: files fetched over the network and files served from the cache. */
export interface CacheCounters { downloaded: string[]; fromCache: string[] }

export function cachedModelFiles(baseUrl: string, options: CachedFilesOptions = {}): ModelFiles & { counters: CacheCounters } {
  const caches = (globalThis as { caches?: CacheStorage }).caches;
  const plain = httpModelFiles(baseUrl);
  const counters: CacheCounters = { downloaded: [], fromCache: [] };
  if (!caches) return Object.assign(plain, { counters });
  // A `.gguf` URL is one file: paths resolve next to it (plain.gguf is its name), not under it.
  const root = plain.gguf ? baseUrl.slice(0, baseUrl.lastIndexOf('/') + 1) : baseUrl;
  const url = (path: string) => new URL(path, root.endsWith('/') ? root : `${root}/`).toString();
  const blobs = new Map<string, Promise<Blob>>();
  const cache = caches.open(options.cacheName ?? 'duet-models');

  async function download(path: string): Promise<Blob> {
    const c = await cache;
    const hit = await c.match(url(path));
    if (hit) { counters.fromCache.push(path); return hit.blob(); }
    const r = await fetch(url(path));
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    const total = Number(r.headers.get('content-length')) || 0;
    const parts: Uint8Array[] = [];
    let done = 0;
    const reader = r.body!.getReader();
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) break;
      parts.push(value);
      done += value.length;
      options.onProgress?.(done, total || done, path);
    }
    if (total && done !== total) throw new Error(`${path}: expected ${total} bytes, got ${done} (download cut short?)`);
    const blob = new Blob(parts as BlobPart[]);
    await c.put(url(path), new Response(blob, { headers: { 'content-length': String(blob.size) } }));
    counters.downloaded.push(path);
    return blob;
  }
  const get = (path: string) => {
    let b = blobs.get(path);
    if (!b) { b = download(path); blobs.set(path, b); b.catch(() => blobs.delete(path)); }
    return b;
  };

  return {
    name: baseUrl,
    ...(plain.gguf ? { gguf: plain.gguf } : {}),
    counters,
    async exists(path) {
      if (blobs.has(path) || await (await cache).match(url(path))) return true;
      return plain.exists(path);
    },
    async size(path) { return (await get(path)).size; },
    async readText(path) { return (await get(path)).text(); },
    async readBytes(path, offset, length) {
      const blob = await get(path);
      if (offset + length > blob.size) throw new Error(`${path}: wants bytes ${offset}..${offset + length} of a ${blob.size}-byte file (truncated?)`);
      return new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer());
    },
  };
}
