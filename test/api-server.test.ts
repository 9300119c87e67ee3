// The server as a library call (the Node entry's DuetServer over a model loaded in this process),
// driven by the official `openai` client: it binds 127.0.0.1 by default, serves the model under its
// id, answers as the model's own chat.completions does, and close() ends it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import OpenAI from 'openai';
import { DuetServer, loadModel } from '../src/node.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const model = await loadModel(`${ROOT}fixtures/duet-passkey`, { device: 'cpu', threads: 1, id: 'passkey' });
const server = new DuetServer(model, { port: 0 });
const address = await server.listen();
const client = new OpenAI({ baseURL: `http://127.0.0.1:${address.port}/v1`, apiKey: 'none', maxRetries: 0 });

test('binds the loopback address unless told otherwise; lists the model by its id', async () => {
  assert.is(address.address, '127.0.0.1');
  assert.equal((await client.models.list()).data.map((m) => m.id), ['passkey']);
});

test('a served chat completion equals the model\'s own chat.completions.create', async () => {
  const params = { model: 'passkey', messages: [{ role: 'user' as const, content: 'what is the pass key?' }], max_tokens: 12, temperature: 0 };
  const served = await client.chat.completions.create(params);
  const local = await model.chat.completions.create(params);
  assert.is(served.choices[0].message.content, local.choices[0].message.content);
  assert.equal(served.usage, local.usage);
  assert.is(served.choices[0].finish_reason, local.choices[0].finish_reason);
});

test('close() stops accepting: the next request fails to connect', async () => {
  await server.close();
  const err = await client.models.list().catch((e) => e);
  assert.instance(err, OpenAI.APIConnectionError);
});

test.after(async () => { await model.dispose(); });

test.run();
