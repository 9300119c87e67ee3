// Where the Node entry's loadModel takes a model and a pattern from: a folder, an http(s) base URL
// (here a local static server with range requests, as a page would be served), a URL object, a
// parsed pattern, picked Files (the browser entry's pickedModelFiles, on Node's File); every source
// gives the same model. And the progress of the long loading steps.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, normalize } from 'node:path';
import { readdirSync } from 'node:fs';
import { loadModel, loadPattern, nodeModelFiles, type ProgressEvent } from '../src/node.ts';
import { pickedModelFiles } from '../src/index.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const FIXTURES = join(ROOT, 'fixtures');
const requests: string[] = [];
const server = createServer((req, res) => {
  const path = normalize(join(FIXTURES, decodeURIComponent(new URL(req.url!, 'http://x').pathname)));
  requests.push(`${req.method} ${req.url}${req.headers.range ? ` ${req.headers.range}` : ''}`);
  if (!path.startsWith(FIXTURES) || !statSync(path, { throwIfNoEntry: false })?.isFile()) { res.writeHead(404).end(); return; }
  const data = readFileSync(path);
  const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
  const body = range ? data.subarray(Number(range[1]), Number(range[2]) + 1) : data;
  res.writeHead(range ? 206 : 200, { 'content-length': String(req.method === 'HEAD' ? data.length : body.length) });
  res.end(req.method === 'HEAD' ? undefined : body);
});
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
const BASE = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
const PROMPT = { messages: [{ role: 'user', content: 'the pass key is 73519. remember it. what is the pass key?' }] };
const common = { sparsity: 0.5, device: 'cpu', threads: 1 } as const;

async function answer(m: Awaited<ReturnType<typeof loadModel>>) {
  try {
    const r = await m.generate(PROMPT, { maxTokens: 24 }).result();
    return { text: r.text, tokens: r.tokens, streaming: m.info.streamingHeads };
  } finally { await m.dispose(); }
}

test('a model and pattern over HTTP (string and URL), a parsed pattern and folders give the same model and greedy tokens', async () => {
  const folder = await answer(await loadModel(join(FIXTURES, 'duet-passkey'), { ...common, pattern: join(FIXTURES, 'duet-passkey-pattern') }));
  assert.is(folder.streaming, 6);
  assert.match(folder.text, /73519/, 'the bundled model recalls the key');
  const events: ProgressEvent[] = [];
  requests.length = 0;
  const http = await answer(await loadModel(`${BASE}/duet-passkey/`, { ...common, pattern: new URL(`${BASE}/duet-passkey-pattern/`), onProgress: (e) => events.push(e) }));
  assert.equal(http, folder);
  // The weights came by range requests from the server, not from the disk.
  assert.ok(requests.some((r) => /^GET \/duet-passkey\/model\.safetensors bytes=\d+-\d+$/.test(r)), requests.join('\n'));
  assert.ok(requests.some((r) => r.startsWith('GET /duet-passkey-pattern/full_attention_heads.tsv')), requests.join('\n'));
  // Progress: the weights' bytes grow to their total; the engine step starts and ends.
  const weights = events.filter((e) => e.step === 'weights');
  assert.ok(weights.length >= 2, JSON.stringify(events));
  assert.ok(weights.every((e, i) => e.done <= e.total && (i === 0 || e.done >= weights[i - 1].done)));
  assert.is(weights[weights.length - 1].done, weights[weights.length - 1].total);
  assert.equal(events.filter((e) => e.step === 'engine').map((e) => [e.done, e.total]), [[0, 1], [1, 1]]);
  const pattern = await loadPattern(nodeModelFiles(join(FIXTURES, 'duet-passkey-pattern')), 3, 4);
  assert.equal(await answer(await loadModel(join(FIXTURES, 'duet-passkey'), { ...common, pattern })), folder);
});

/** A folder as a page's folder picker gives it: Files whose webkitRelativePath starts with the folder's name. */
function picked(dir: string): File[] {
  const name = dir.split('/').pop()!;
  return readdirSync(dir).filter((f) => statSync(join(dir, f)).isFile()).map((f) => {
    const file = new File([readFileSync(join(dir, f))], f);
    Object.defineProperty(file, 'webkitRelativePath', { value: `${name}/${f}` });
    return file;
  });
}

test('picked Files (the browser entry\'s pickedModelFiles) load the same model as the folders', async () => {
  const folder = await answer(await loadModel(join(FIXTURES, 'duet-passkey'), { ...common, pattern: join(FIXTURES, 'duet-passkey-pattern') }));
  const model = pickedModelFiles(picked(join(FIXTURES, 'duet-passkey')));
  assert.is(model.name, 'duet-passkey');
  assert.equal(await answer(await loadModel(model, { ...common, pattern: pickedModelFiles(picked(join(FIXTURES, 'duet-passkey-pattern'))) })), folder);
});

test('a model URL that serves nothing fails naming the file', async () => {
  const err = await loadModel(`${BASE}/nowhere/`, common).catch((e) => e);
  assert.instance(err, Error);
  assert.match(String(err.message), /config\.json/);
});

test.after(() => { server.close(); });

test.run();
