// `duet serve`'s HTTP server: OpenAI's routes over one DuetModel. Requests run one at a time in
// arrival order (the model's queue), so sessions never interleave and memory stays one session's
// worth; at most maxQueue wait, the next gets 429. Streams are server-sent events ending with
// `data: [DONE]`; a client that goes away aborts its generation. Errors use OpenAI's JSON shape.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { DuetModel } from '../api/model.js';
import type { ChatCompletionParams, CompletionParams } from '../api/openai.js';
import { DuetError } from '../errors.js';
import { hostAllowed } from '../node/http-guard.js';

export interface ServeOptions {
  /** Default 127.0.0.1 (loopback only); on a loopback address only loopback Host headers are answered. */
  host?: string;
  /** Default 8080; 0 picks a free port (listen() resolves with it). */
  port?: number;
  /** Requests must carry `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Requests allowed to wait behind the running one (default 16). */
  maxQueue?: number;
  /** Largest request body in bytes (default 1 MiB). */
  maxBodyBytes?: number;
  log?: (message: string) => void;
}

/** An error answered with OpenAI's shape: {"error": {message, type, param, code}}. */
class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly type: string, readonly param: string | null = null, readonly code: string | null = null) {
    super(message);
  }
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function errorBody(e: HttpError) {
  return { error: { message: e.message, type: e.type, param: e.param, code: e.code } };
}

/** A library error as the HTTP error OpenAI would send. */
function httpError(e: unknown, promptParam = 'messages'): HttpError {
  if (e instanceof HttpError) return e;
  if (e instanceof DuetError) {
    const param = e.field === 'maxTokens' ? 'max_tokens' : e.field === 'prompt' ? promptParam : e.field;
    if (e.code === 'model_not_found') return new HttpError(404, e.message, 'invalid_request_error', 'model', 'model_not_found');
    if (e.code === 'context_length_exceeded') return new HttpError(400, e.message, 'invalid_request_error', param, 'context_length_exceeded');
    return new HttpError(400, e.message, 'invalid_request_error', param, e.code);
  }
  return new HttpError(500, `internal error: ${(e as Error)?.message ?? String(e)}`, 'server_error');
}

async function readBody(req: IncomingMessage, limit: number): Promise<unknown> {
  const declared = Number(req.headers['content-length']);
  if (declared > limit) throw new HttpError(413, `the request body has ${declared} bytes, more than the limit of ${limit}`, 'invalid_request_error');
  const parts: Buffer[] = [];
  let size = 0;
  for await (const part of req) {
    size += (part as Buffer).length;
    if (size > limit) throw new HttpError(413, `the request body is over the limit of ${limit} bytes`, 'invalid_request_error');
    parts.push(part as Buffer);
  }
  const text = Buffer.concat(parts).toString('utf8');
  try {
    const body = JSON.parse(text);
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new Error('not a JSON object');
    return body;
  } catch (e) {
    throw new HttpError(400, `the request body is not a JSON object (${(e as Error).message})`, 'invalid_request_error', 'body');
  }
}

/** A percent-encoded path segment decoded, or as it came when it is malformed (a URIError is no server error). */
function decodedOr(segment: string): string {
  try { return decodeURIComponent(segment); } catch { return segment; }
}

/** Waits until the response's buffer drained (or the connection closed). */
function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => { res.off('drain', done); res.off('close', done); resolve(); };
    res.on('drain', done);
    res.on('close', done);
  });
}

export class DuetServer {
  private readonly server: Server;
  /** Requests accepted and not finished: one generating, the rest waiting their turn. */
  private active = 0;
  private closing = false;
  private readonly inFlight = new Set<AbortController>();
  private readonly maxQueue: number;
  private readonly maxBody: number;
  private readonly log: (m: string) => void;
  private boundHost = '127.0.0.1';

  constructor(private readonly model: DuetModel, private readonly options: ServeOptions = {}) {
    this.maxQueue = options.maxQueue ?? 16;
    this.maxBody = options.maxBodyBytes ?? 1 << 20;
    this.log = options.log ?? (() => {});
    this.server = createServer((req, res) => { void this.handle(req, res); });
  }

  /** Starts listening; resolves with the bound address. */
  listen(): Promise<AddressInfo> {
    const host = this.options.host ?? '127.0.0.1';
    this.boundHost = host;
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port ?? 8080, host, () => resolve(this.server.address() as AddressInfo));
    });
  }

  /** Stops accepting, aborts generations in flight (queued ones are refused), then closes. */
  async close(): Promise<void> {
    this.closing = true;
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    for (const c of this.inFlight) c.abort();
    this.server.closeIdleConnections();
    await closed;
  }

  /** Requests generating or waiting now (for /health). */
  get load(): { active: number; max_queue: number } { return { active: this.active, max_queue: this.maxQueue }; }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      this.checkHost(req);
      const url = new URL(req.url ?? '/', 'http://localhost');
      const route = `${req.method} ${url.pathname.replace(/\/+$/, '')}`;
      if (route === 'GET /health') {
        sendJson(res, 200, { status: this.closing ? 'closing' : 'ok', model: this.model.info.id, ...this.load });
        return;
      }
      this.checkKey(req);
      switch (route) {
        case 'GET /v1/models':
          sendJson(res, 200, { object: 'list', data: [this.modelObject()] });
          return;
        case `GET /v1/models/${encodeURIComponent(this.model.info.id)}`:
        case `GET /v1/models/${this.model.info.id}`:
          sendJson(res, 200, this.modelObject());
          return;
        case 'POST /v1/chat/completions':
        case 'POST /v1/completions':
          try {
            await this.complete(req, res, route.endsWith('chat/completions'));
          } catch (e) {
            throw httpError(e, route.endsWith('chat/completions') ? 'messages' : 'prompt');
          }
          return;
        default:
          if (url.pathname.startsWith('/v1/models/')) throw new HttpError(404, `the model "${decodedOr(url.pathname.slice(11))}" does not exist`, 'invalid_request_error', 'model', 'model_not_found');
          throw new HttpError(404, `no route ${req.method} ${url.pathname} (try GET /v1/models, POST /v1/chat/completions or /v1/completions)`, 'invalid_request_error');
      }
    } catch (e) {
      const err = httpError(e);
      if (err.status >= 500) this.log(`error: ${err.message}`);
      if (!res.headersSent) sendJson(res, err.status, errorBody(err));
      else if (!res.writableEnded) { res.write(`data: ${JSON.stringify(errorBody(err))}\n\n`); res.end(); }
    }
  }

  private modelObject() {
    return { id: this.model.info.id, object: 'model', created: 0, owned_by: 'duet' };
  }

  /**
   * DNS rebinding: a server on a loopback address answers only requests addressed to it by a
   * loopback name with its port (http-guard.ts, shared with `duet web`).
   */
  private checkHost(req: IncomingMessage): void {
    if (!LOOPBACK.has(this.boundHost)) return;
    const port = (this.server.address() as AddressInfo | null)?.port ?? 0;
    if (!hostAllowed(req.headers.host, port)) {
      throw new HttpError(403, `the Host header "${req.headers.host ?? ''}" is not this server's loopback address (127.0.0.1, localhost or [::1] with port ${port})`, 'invalid_request_error');
    }
  }

  private checkKey(req: IncomingMessage): void {
    const key = this.options.apiKey;
    if (!key) return;
    const given = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (given !== key) {
      throw new HttpError(401, given ? 'Incorrect API key provided.' : 'Missing API key: send Authorization: Bearer <key>.', 'invalid_request_error', null, 'invalid_api_key');
    }
  }

  private async complete(req: IncomingMessage, res: ServerResponse, chat: boolean): Promise<void> {
    if (this.closing) throw new HttpError(503, 'the server is shutting down', 'server_error');
    const body = await readBody(req, this.maxBody);
    if (this.active > this.maxQueue) {
      throw new HttpError(429, `the queue is full (${this.maxQueue} requests waiting); retry later`, 'rate_limit_error', null, 'queue_full');
    }
    const control = new AbortController();
    // The response closing before we end it means the client left: stop its generation.
    res.on('close', () => { if (!res.writableFinished) control.abort(); });
    this.inFlight.add(control);
    this.active++;
    try {
      const request = { signal: control.signal };
      const result = chat
        ? await this.model.chat.completions.create(body as ChatCompletionParams, request)
        : await this.model.completions.create(body as CompletionParams, request);
      if (!(Symbol.asyncIterator in result)) {
        if (control.signal.aborted && this.closing) throw new HttpError(503, 'the server shut down during the request', 'server_error');
        sendJson(res, 200, result);
        return;
      }
      const it = (result as AsyncIterable<unknown>)[Symbol.asyncIterator]();
      try {
        let next = await it.next();
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
        let chunks = 0;
        while (!next.done) {
          if (control.signal.aborted) break;
          // Backpressure: a client that reads slowly slows its generation instead of filling memory.
          if (!res.write(`data: ${JSON.stringify(next.value)}\n\n`)) await drained(res);
          chunks++;
          next = await it.next();
        }
        if (control.signal.aborted && !this.closing) this.log(`a client went away: its generation stopped after ${chunks} chunks`);
        if (control.signal.aborted && this.closing) {
          res.end(`data: ${JSON.stringify(errorBody(new HttpError(503, 'the server shut down during the request', 'server_error')))}\n\n`);
        } else if (!control.signal.aborted) res.end('data: [DONE]\n\n');
      } finally {
        await it.return?.();
      }
    } finally {
      this.active--;
      this.inFlight.delete(control);
    }
  }
}
