// `duet web`: serves the demo page (dist/web), a model (a directory, or one .gguf file) under /model/
// and optionally a pattern directory under /pattern/ on 127.0.0.1, with HTTP Range support (the page reads tensors by
// byte range) and the COOP/COEP headers that make the page cross-origin isolated.
import { createReadStream, existsSync, realpathSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { basename, dirname, extname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { intOption } from './options.js';
import { hostAllowed, parseRange, resolveInside } from '../node/http-guard.js';

/** What `duet web` serves without --model (and then with this pattern). Change both here. */
export const WEB_DEFAULT_MODEL = 'fixtures/duet-passkey';
export const WEB_DEFAULT_PATTERN = 'fixtures/duet-passkey-pattern';
export const WEB_DEFAULT_PORT = 8080;

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.json': 'application/json; charset=utf-8', '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml', '.png': 'image/png', '.wasm': 'application/wasm', '.tsv': 'text/tab-separated-values; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
};

const COMMON_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Cache-Control': 'no-store',
  'X-Content-Type-Options': 'nosniff',
};

/** dist/web next to the bundle (dist/cli.js), or from the sources (src/cli/web.ts under tsx). */
function pageRoot(): string {
  for (const rel of ['./web/', '../../dist/web/']) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(join(dir, 'index.html'))) return dir;
  }
  throw new Error('the page is not built (no dist/web/index.html); run `npm run build` first');
}

export interface WebServerOptions {
  port: number;
  /** A Hugging Face model directory, or a .gguf file (then only that file is served). */
  model: string;
  pattern: string | null;
  /** Directory of the built page (default: dist/web). */
  root?: string;
}

function isGgufPath(path: string): boolean {
  return /\.gguf$/i.test(path);
}

export interface WebServer { url: string; close(): Promise<void> }

/** Starts the server; resolves once it listens. */
export async function startWebServer(o: WebServerOptions): Promise<WebServer> {
  const root = o.root ?? pageRoot();
  // A GGUF file is served from its folder (after following a symlink to it), but nothing else there is.
  const ggufFile = isGgufPath(o.model) ? realpathSync(o.model) : null;
  const gguf = ggufFile ? basename(ggufFile) : null;
  const mounts: Array<{ prefix: string; dir: string; only?: string }> = [
    ggufFile && gguf ? { prefix: '/model/', dir: dirname(ggufFile), only: gguf } : { prefix: '/model/', dir: resolve(o.model) },
  ];
  if (o.pattern) mounts.push({ prefix: '/pattern/', dir: resolve(o.pattern) });
  // Names for the page: relative to the working directory when inside it.
  const shown = (dir: string) => {
    const r = relative(process.cwd(), resolve(dir));
    return r && !r.startsWith('..') && !isAbsolute(r) ? r : dir;
  };
  const info = JSON.stringify({
    model: { name: shown(o.model), url: gguf ? `model/${encodeURIComponent(gguf)}` : 'model/' },
    pattern: o.pattern ? { name: shown(o.pattern), url: 'pattern/' } : null,
  });

  const send = (res: ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8') => {
    res.writeHead(status, { ...COMMON_HEADERS, 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  };

  const serveFile = async (req: IncomingMessage, res: ServerResponse, file: string) => {
    let size: number;
    try {
      const s = await stat(file);
      if (!s.isFile()) throw new Error('not a file');
      size = s.size;
    } catch {
      send(res, 404, 'not found\n');
      return;
    }
    const headers: Record<string, string | number> = {
      ...COMMON_HEADERS, 'Content-Type': TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream', 'Accept-Ranges': 'bytes',
    };
    const range = parseRange(req.headers.range, size);
    const { start, end } = range ?? { start: 0, end: size - 1 };
    const length = size === 0 ? 0 : end - start + 1;
    if (range) headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
    res.writeHead(range ? 206 : 200, { ...headers, 'Content-Length': length });
    if (req.method === 'HEAD' || length === 0) { res.end(); return; }
    createReadStream(file, { start, end }).on('error', () => res.destroy()).pipe(res);
  };

  let port = o.port;
  const server = createServer((req, res) => {
    if (!hostAllowed(req.headers.host, port)) { send(res, 421, 'this server answers only to 127.0.0.1 and localhost\n'); return; }
    if (req.method !== 'GET' && req.method !== 'HEAD') { send(res, 405, 'only GET and HEAD\n'); return; }
    let path: string;
    try {
      path = decodeURIComponent(new URL(req.url ?? '/', 'http://localhost').pathname);
    } catch {
      send(res, 400, 'bad path\n');
      return;
    }
    if (path === '/served.json') { send(res, 200, info, TYPES['.json']); return; }
    let dir = root, rel = path === '/' ? 'index.html' : path.slice(1);
    for (const m of mounts) {
      if (!path.startsWith(m.prefix)) continue;
      dir = m.dir; rel = path.slice(m.prefix.length);
      if (m.only !== undefined && rel !== m.only) { send(res, 404, 'not found\n'); return; }
      break;
    }
    // Inside the served folder after following symlinks, or refused.
    resolveInside(dir, rel).then((file) => {
      if (file === 'missing') { send(res, 404, 'not found\n'); return; }
      if (file === 'outside') { send(res, 403, 'outside the served directories\n'); return; }
      return serveFile(req, res, file);
    }).catch(() => res.destroy());
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(o.port, '127.0.0.1', () => { server.off('error', fail); ok(); });
  });
  const address = server.address();
  port = typeof address === 'object' && address ? address.port : o.port;
  return {
    url: `http://127.0.0.1:${port}/`,
    close: () => new Promise<void>((ok) => { server.close(() => ok()); server.closeAllConnections(); }),
  };
}

export async function webCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args: argv, strict: true,
    options: { port: { type: 'string' }, model: { type: 'string' }, pattern: { type: 'string' } },
  });
  const port = intOption(v.port, '--port') ?? WEB_DEFAULT_PORT;
  if (port > 65535) throw new Error(`--port must be at most 65535 (got ${port})`);
  const model = v.model ?? WEB_DEFAULT_MODEL;
  const pattern = v.pattern ?? (v.model === undefined ? WEB_DEFAULT_PATTERN : null);
  if (isGgufPath(model)) {
    if (!existsSync(model)) throw new Error(`${model}: no such file`);
  } else if (!existsSync(join(model, 'config.json'))) {
    throw new Error(`${model}: no config.json (not a Hugging Face model directory or a .gguf file)`);
  }
  if (pattern !== null && !existsSync(join(pattern, 'full_attention_heads.tsv'))) {
    throw new Error(`${pattern}/full_attention_heads.tsv: missing (not a DuoAttention pattern directory)`);
  }
  const server = await startWebServer({ port, model, pattern });
  process.stdout.write(`duet web: serving ${server.url} (model ${model}${pattern ? `, pattern ${pattern}` : ''}); Ctrl-C stops\n`);
  await new Promise<void>((done) => {
    const stop = () => { server.close().then(done); };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  return 0;
}
