// `duet serve` driven by the official `openai` client: a real server process (the built CLI) on
// 127.0.0.1 serving the bundled model with its pattern at sparsity 0.5, on the CPU.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { join } from 'node:path';
import OpenAI from 'openai';
import { fillerStyleFor, taskPrompt } from '../src/eval/evaluate.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { nodeModelFiles } from '../src/node/files.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const MODEL = join(ROOT, 'fixtures/duet-passkey');
const PATTERN = join(ROOT, 'fixtures/duet-passkey-pattern');
const KEY = 'test-key';
const CTX = 1024;

interface Served { child: ChildProcess; url: string; output: () => string; exited: Promise<number | null> }

async function serve(...extra: string[]): Promise<Served> {
  const child = spawn(process.execPath, [join(ROOT, 'bin/duet.mjs'), 'serve', '--model', MODEL, '--pattern', PATTERN, '--sparsity', '0.5',
    '--device', 'cpu', '--threads', '1', '--port', '0', '--api-key', KEY, '--model-name', 'duet-passkey', ...extra], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let output = '';
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`duet serve did not start:\n${output}`)), 30_000);
    child.stderr!.on('data', (d: Buffer) => {
      output += d.toString();
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+\/v1)/.exec(output);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    void exited.then((code) => { clearTimeout(timer); reject(new Error(`duet serve exited (${code}):\n${output}`)); });
  });
  return { child, url, output: () => output, exited };
}

const main = await serve('--ctx', String(CTX), '--max-body', '65536', '--max-queue', '32');
const client = new OpenAI({ baseURL: main.url, apiKey: KEY, maxRetries: 0 });
const greedy = { model: 'duet-passkey', temperature: 0 } as const;

async function raw(path: string, init: { method?: string; body?: string; key?: string | null; host?: string } = {}): Promise<{ status: number; body: any; text: string }> {
  const u = new URL(path, main.url);
  return new Promise((resolve, reject) => {
    const req = request({
      host: u.hostname, port: u.port, path: u.pathname, method: init.method ?? 'POST',
      headers: {
        'content-type': 'application/json', ...(init.key === null ? {} : { authorization: `Bearer ${init.key ?? KEY}` }),
        ...(init.host ? { host: init.host } : {}),
      },
    }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => { text += d.toString(); });
      res.on('end', () => {
        let body: unknown = null;
        try { body = JSON.parse(text); } catch { /* SSE or empty */ }
        resolve({ status: res.statusCode!, body, text });
      });
    });
    req.on('error', reject);
    req.end(init.body);
  });
}

function assertOpenAIError(r: { status: number; body: any }, status: number, param: string | null, message: RegExp): void {
  assert.is(r.status, status, JSON.stringify(r.body));
  assert.type(r.body?.error?.message, 'string');
  assert.type(r.body.error.type, 'string');
  assert.ok('code' in r.body.error && 'param' in r.body.error, JSON.stringify(r.body));
  assert.is(r.body.error.param, param);
  assert.match(r.body.error.message, message);
}

test('GET /v1/models lists the served model; /health answers without a key', async () => {
  const models = await client.models.list();
  assert.equal(models.data.map((m) => m.id), ['duet-passkey']);
  assert.is(models.data[0].object, 'model');
  const health = await raw('/health', { method: 'GET', key: null });
  assert.is(health.status, 200);
  assert.is(health.body.status, 'ok');
});

test('chat, non-streaming and streaming: the same greedy text, finish reason and usage', async () => {
  const messages = [{ role: 'user' as const, content: 'hello there' }];
  const full = await client.chat.completions.create({ ...greedy, messages, max_tokens: 12 });
  assert.is(full.object, 'chat.completion');
  assert.match(full.id, /^chatcmpl-/);
  assert.is(full.model, 'duet-passkey');
  assert.is(full.choices.length, 1);
  assert.is(full.choices[0].message.role, 'assistant');
  const text = full.choices[0].message.content!;
  assert.ok(text.length > 0);
  assert.ok(['stop', 'length'].includes(full.choices[0].finish_reason));
  // "hello there" is 11 characters of a character-level vocabulary, plus BOS.
  assert.is(full.usage!.prompt_tokens, 12);
  assert.is(full.usage!.total_tokens, full.usage!.prompt_tokens + full.usage!.completion_tokens);
  assert.ok(full.usage!.completion_tokens >= 1 && full.usage!.completion_tokens <= 12);

  const stream = await client.chat.completions.create({ ...greedy, messages, max_tokens: 12, stream: true, stream_options: { include_usage: true } });
  let streamed = '', finish: string | null = null, usage: OpenAI.CompletionUsage | null | undefined = null, chunks = 0, role = '';
  for await (const chunk of stream) {
    chunks++;
    assert.is(chunk.object, 'chat.completion.chunk');
    assert.is(chunk.model, 'duet-passkey');
    assert.type(chunk.created, 'number');
    if (chunk.choices.length === 0) { usage = chunk.usage; continue; }
    role ||= chunk.choices[0].delta.role ?? '';
    streamed += chunk.choices[0].delta.content ?? '';
    finish = chunk.choices[0].finish_reason ?? finish;
  }
  assert.is(role, 'assistant');
  assert.is(streamed, text);
  assert.is(finish, full.choices[0].finish_reason);
  assert.equal(usage, full.usage);
  assert.ok(chunks >= 3);
});

test('the SSE stream ends with data: [DONE]', async () => {
  const r = await raw('/v1/chat/completions', { body: JSON.stringify({ ...greedy, messages: [{ role: 'user', content: 'abc' }], max_tokens: 3, stream: true }) });
  assert.is(r.status, 200);
  const events = r.text.split('\n\n').filter(Boolean);
  assert.is(events[events.length - 1], 'data: [DONE]');
  for (const e of events.slice(0, -1)) assert.is(JSON.parse(e.slice(6)).object, 'chat.completion.chunk');
});

test('completions, non-streaming and streaming', async () => {
  const full = await client.completions.create({ ...greedy, prompt: 'the pass key is 4', max_tokens: 6 });
  assert.is(full.object, 'text_completion');
  assert.match(full.id, /^cmpl-/);
  assert.is(full.usage!.prompt_tokens, 18);
  assert.is(full.usage!.total_tokens, 18 + full.usage!.completion_tokens);
  const stream = await client.completions.create({ ...greedy, prompt: 'the pass key is 4', max_tokens: 6, stream: true });
  let text = '';
  for await (const c of stream) text += c.choices[0]?.text ?? '';
  assert.is(text, full.choices[0].text);
  // The default is OpenAI's 16 tokens.
  const dflt = await client.completions.create({ ...greedy, prompt: 'a', stop: null, seed: 1 });
  assert.ok(dflt.usage!.completion_tokens <= 16);
});

test('a streamed passkey prompt recalls its key', async () => {
  const ckpt = await loadCheckpoint(nodeModelFiles(MODEL));
  const tok = ckpt.tokenizer!;
  const { sample, ids } = taskPrompt(tok, { kind: 'passkey', length: 512, depth: 0.5, seed: 5, style: fillerStyleFor(tok) });
  const stream = await client.chat.completions.create({ ...greedy, messages: [{ role: 'user', content: sample.prompt }], max_tokens: 16, stream: true, stream_options: { include_usage: true } });
  let text = '', promptTokens = 0;
  for await (const c of stream) { text += c.choices[0]?.delta.content ?? ''; if (c.usage) promptTokens = c.usage.prompt_tokens; }
  assert.is(promptTokens, ids.length);
  assert.ok(text.includes(sample.answers[0]), `pass key ${sample.answers[0]} not in ${JSON.stringify(text)}`);
});

test('--offload: the retrieval heads\' caches offloaded (MagicPIG, and exact TopK), said at start, and a passkey prompt still answered', async () => {
  const ckpt = await loadCheckpoint(nodeModelFiles(MODEL));
  const tok = ckpt.tokenizer!;
  const { sample } = taskPrompt(tok, { kind: 'passkey', length: 512, depth: 0.5, seed: 5, style: fillerStyleFor(tok) });
  for (const [flags, said] of [[['--offload'], /retrieval heads offloaded \(MagicPIG K \d+ × L \d+/], [['--topk', '5%'], /retrieval heads offloaded \(exact top-5 % keys/]] as const) {
    const off = await serve(...flags);
    try {
      assert.match(off.output(), said);
      const c = new OpenAI({ baseURL: off.url, apiKey: KEY, maxRetries: 0 });
      const r = await c.chat.completions.create({ ...greedy, messages: [{ role: 'user', content: sample.prompt }], max_tokens: 16 });
      const text = r.choices[0].message.content ?? '';
      assert.ok(text.includes(sample.answers[0]), `${flags.join(' ')}: pass key ${sample.answers[0]} not in ${JSON.stringify(text)}`);
    } finally {
      off.child.kill('SIGINT');
      assert.is(await off.exited, 0, off.output());
    }
  }
});

test('stop strings end the text before them', async () => {
  const free = await client.completions.create({ ...greedy, prompt: 'the pass key is 4', max_tokens: 8 });
  const t = free.choices[0].text;
  assert.ok(t.length >= 3, t);
  const cut = t.slice(2, 3);
  const stopped = await client.completions.create({ ...greedy, prompt: 'the pass key is 4', max_tokens: 8, stop: [cut] });
  assert.is(stopped.choices[0].text, t.slice(0, t.indexOf(cut)));
  assert.is(stopped.choices[0].finish_reason, 'stop');
});

test('a client that aborts mid-stream frees its generation; the next request is normal', async () => {
  const controller = new AbortController();
  // This prompt runs to max_tokens (3000 tokens, about a second here) unless stopped.
  const stream = await client.chat.completions.create({ ...greedy, messages: [{ role: 'user', content: 'a a a a' }], max_tokens: 3000, stream: true }, { signal: controller.signal });
  let pieces = 0;
  try {
    for await (const c of stream) {
      if (c.choices[0]?.delta.content) pieces++;
      if (pieces === 3) controller.abort();
    }
    assert.unreachable('the aborted stream ended normally');
  } catch (e) {
    assert.ok(controller.signal.aborted, String(e));
  }
  assert.is(pieces, 3);
  // The server notices the closed connection and ends the generation, long before its 3000 tokens.
  let stopped: RegExpExecArray | null = null;
  for (let i = 0; i < 200 && !stopped; i++) {
    stopped = /a client went away: its generation stopped after (\d+) chunks/.exec(main.output());
    if (!stopped) await new Promise((r) => setTimeout(r, 25));
  }
  assert.ok(stopped, main.output());
  assert.ok(Number(stopped![1]) < 1000, stopped![0]);
  assert.is((await raw('/health', { method: 'GET' })).body.active, 0);
  const after = await client.chat.completions.create({ ...greedy, messages: [{ role: 'user', content: 'hello' }], max_tokens: 4 });
  assert.is(after.usage!.completion_tokens, 4);
});

test('16 concurrent greedy requests each get what they get alone', async () => {
  const prompts = Array.from({ length: 16 }, (_, i) => `the pass key is ${10000 + i * 4321}. the pass key is`);
  const ask = (content: string) => client.chat.completions.create({ ...greedy, messages: [{ role: 'user', content }], max_tokens: 8 });
  const alone: string[] = [];
  for (const p of prompts) alone.push((await ask(p)).choices[0].message.content!);
  const together = await Promise.all(prompts.map(async (p, i) => {
    if (i % 2) {
      let s = '';
      for await (const c of await client.chat.completions.create({ ...greedy, messages: [{ role: 'user', content: p }], max_tokens: 8, stream: true })) s += c.choices[0]?.delta.content ?? '';
      return s;
    }
    return (await ask(p)).choices[0].message.content!;
  }));
  assert.equal(together, alone);
  assert.ok(new Set(alone).size > 1, 'every prompt gave the same text: the comparison proves little');
});

test('16 concurrent streamed requests: each stream is one completion (one id, role first, one finish, usage) with the text it gets alone', async () => {
  const prompts = Array.from({ length: 16 }, (_, i) => `the pass key is ${20000 + i * 3137}. the pass key is`);
  const alone: string[] = [];
  for (const p of prompts) alone.push((await client.chat.completions.create({ ...greedy, messages: [{ role: 'user', content: p }], max_tokens: 8 })).choices[0].message.content!);
  const streams = await Promise.all(prompts.map(async (p) => {
    const ids = new Set<string>(), finishes: string[] = [];
    let text = '', first = '', usage: OpenAI.CompletionUsage | null | undefined;
    for await (const c of await client.chat.completions.create({ ...greedy, messages: [{ role: 'user', content: p }], max_tokens: 8, stream: true, stream_options: { include_usage: true } })) {
      ids.add(c.id);
      if (c.usage) usage = c.usage;
      const choice = c.choices[0];
      if (!choice) continue;
      first ||= choice.delta.role ?? '?';
      text += choice.delta.content ?? '';
      if (choice.finish_reason) finishes.push(choice.finish_reason);
    }
    return { ids: [...ids], text, first, finishes, usage };
  }));
  assert.equal(streams.map((s) => s.text), alone);
  for (const s of streams) {
    assert.is(s.ids.length, 1);
    assert.is(s.first, 'assistant');
    assert.is(s.finishes.length, 1);
    assert.ok(s.usage && s.usage.completion_tokens >= 1 && s.usage.completion_tokens <= 8, JSON.stringify(s.usage));
  }
  assert.is(new Set(streams.map((s) => s.ids[0])).size, 16, 'each completion has its own id');
  // Every session was freed: nothing is generating or waiting.
  assert.is((await raw('/health', { method: 'GET' })).body.active, 0);
});

test('bad requests get OpenAI-shaped errors with the right status', async () => {
  const chat = (body: unknown) => raw('/v1/chat/completions', { body: JSON.stringify(body) });
  assertOpenAIError(await raw('/v1/chat/completions', { body: '{"messages": [' }), 400, 'body', /not a JSON object/);
  assertOpenAIError(await chat({ model: 'duet-passkey' }), 400, 'messages', /messages must be a non-empty array/);
  assertOpenAIError(await chat({ messages: [{ role: 'user', content: 'x' }], temperature: 'hot' }), 400, 'temperature', /temperature must be a number from 0 to 2 \(got "hot"\)/);
  assertOpenAIError(await chat({ messages: [{ role: 'robot', content: 'x' }] }), 400, 'messages[0].role', /must be system, developer, user or assistant/);
  assertOpenAIError(await chat({ messages: [{ role: 'user', content: 'x' }], max_tokens: 0 }), 400, 'max_tokens', /positive integer/);
  assertOpenAIError(await raw('/v1/completions', { body: JSON.stringify({ prompt: 7 }) }), 400, 'prompt', /prompt must be a non-empty string/);
  assertOpenAIError(await chat({ messages: [{ role: 'user', content: 'x' }], top_p: 1.5 }), 400, 'top_p', /top_p/);
  assertOpenAIError(await chat({ messages: [{ role: 'user', content: 'x' }], stop: [1] }), 400, 'stop', /stop/);
  assertOpenAIError(await chat({ messages: [{ role: 'user', content: 'x' }], n: 2 }), 400, 'n', /\bn\b/);
  assertOpenAIError(await chat({ messages: [{ role: 'user', content: 'x' }], seed: 'a' }), 400, 'seed', /seed/);
  assertOpenAIError(await raw('/v1/chat/completions', { body: '[1, 2]' }), 400, 'body', /not a JSON object/);
  // A prompt over --ctx: the error names both numbers.
  const long = 'a'.repeat(CTX + 10);
  const tooLong = await raw('/v1/completions', { body: JSON.stringify({ prompt: long }) });
  assertOpenAIError(tooLong, 400, 'prompt', new RegExp(`has ${CTX + 11} tokens; the context length is ${CTX}`));
  assert.is(tooLong.body.error.code, 'context_length_exceeded');
  // Unknown model: 404 (through the client, which raises its NotFoundError).
  try {
    await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] });
    assert.unreachable('an unknown model was accepted');
  } catch (e) {
    assert.instance(e, OpenAI.NotFoundError);
    assert.is((e as InstanceType<typeof OpenAI.NotFoundError>).status, 404);
    assert.match(String((e as Error).message), /"gpt-4o" does not exist/);
  }
  // Through the client: a BadRequestError carrying OpenAI's param and message.
  try {
    await client.chat.completions.create({ ...greedy, messages: [{ role: 'user', content: 'x' }], max_tokens: -3 });
    assert.unreachable('max_tokens -3 was accepted');
  } catch (e) {
    assert.instance(e, OpenAI.BadRequestError, String(e));
    const err = e as InstanceType<typeof OpenAI.BadRequestError>;
    assert.is(err.status, 400);
    assert.is(err.param, 'max_tokens');
    assert.match(err.message, /max_tokens must be a positive integer/);
  }
  // A body over --max-body (64 KiB): 413.
  assertOpenAIError(await chat({ messages: [{ role: 'user', content: 'a'.repeat(70_000) }] }), 413, null, /over the limit of 65536 bytes|more than the limit of 65536/);
  assertOpenAIError(await raw('/v1/nowhere', { method: 'GET' }), 404, null, /no route GET \/v1\/nowhere/);
  // Another Host than the loopback address (DNS rebinding): refused.
  assertOpenAIError(await raw('/v1/models', { method: 'GET', host: 'attacker.example:80' }), 403, null, /Host header/);
});

test('a wrong or missing API key gets 401', async () => {
  const wrong = new OpenAI({ baseURL: main.url, apiKey: 'not-the-key', maxRetries: 0 });
  try {
    await wrong.models.list();
    assert.unreachable('a wrong key was accepted');
  } catch (e) {
    assert.instance(e, OpenAI.AuthenticationError);
    assert.is((e as InstanceType<typeof OpenAI.AuthenticationError>).status, 401);
  }
  assertOpenAIError(await raw('/v1/models', { method: 'GET', key: null }), 401, null, /Missing API key/);
});

test('a full queue answers 429; SIGTERM ends in-flight work and exits 0', async () => {
  const small = await serve('--max-queue', '0');
  try {
    const c = new OpenAI({ baseURL: small.url, apiKey: KEY, maxRetries: 0 });
    // Runs to its 3000 tokens (about a second) unless stopped.
    const running = await c.chat.completions.create({ ...greedy, messages: [{ role: 'user', content: 'a a a a' }], max_tokens: 3000, stream: true });
    const it = running[Symbol.asyncIterator]();
    await it.next();
    await it.next();
    try {
      await c.chat.completions.create({ ...greedy, messages: [{ role: 'user', content: 'x' }], max_tokens: 2 });
      assert.unreachable('a request beyond the queue was accepted');
    } catch (e) {
      assert.instance(e, OpenAI.RateLimitError, String(e));
      assert.is((e as InstanceType<typeof OpenAI.RateLimitError>).status, 429);
    }
    small.child.kill('SIGTERM');
    // The stream in flight ends (the client sees the end or an error), and the process exits 0.
    const drained = (async () => { try { for (;;) { if ((await it.next()).done) return; } } catch { /* ended by the server */ } })();
    assert.is(await small.exited, 0, small.output());
    await drained;
    assert.match(small.output(), /SIGTERM: stopping/);
  } finally {
    small.child.kill('SIGKILL');
  }
});

test.after(async () => {
  main.child.kill('SIGINT');
  const code = await main.exited;
  if (code !== 0) throw new Error(`duet serve exited ${code} on SIGINT:\n${main.output()}`);
});

test.run();
