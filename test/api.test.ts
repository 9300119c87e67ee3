// The public library API (src/node.ts) on the bundled model, on the CPU: generate() as an async
// iterable and how it stops (eos, maxTokens, stop strings, stop ids, abort, break), the queue,
// the context limit, stats, the chat template and the OpenAI shapes' validation.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DuetError, loadModel, type DuetModel, type TokenDelta } from '../src/node.ts';
import { StopText } from '../src/api/stop-text.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const notices: string[] = [];
const model: DuetModel = await loadModel(`${ROOT}fixtures/duet-passkey`, {
  pattern: `${ROOT}fixtures/duet-passkey-pattern`, sparsity: 0.5, device: 'cpu', threads: 1, notice: (m) => notices.push(m),
});
/** A prompt the bundled model answers and then ends with eos (24 tokens). */
const ANSWERED = { messages: [{ role: 'user', content: 'what is the pass key?' }] };
/** A prompt it continues past thousands of tokens. */
const RAMBLING = 'the grass is green. the sky is blue.';

async function collect(it: AsyncIterable<TokenDelta>, each?: (d: TokenDelta, i: number) => void): Promise<TokenDelta[]> {
  const out: TokenDelta[] = [];
  for await (const d of it) { each?.(d, out.length); out.push(d); }
  return out;
}

test('stops on eos: finish stop, the last token is the eos id, text without it', async () => {
  const g = model.generate(ANSWERED, { maxTokens: 100 });
  const deltas = await collect(g);
  const r = await g.result();
  assert.is(r.stoppedBy, 'eos');
  assert.is(r.finishReason, 'stop');
  assert.ok(r.tokens.length > 1 && r.tokens.length < 100);
  assert.is(r.tokens[r.tokens.length - 1], model.eosTokenIds[0]);
  assert.equal(deltas.map((d) => d.id), r.tokens);
  assert.is(deltas.map((d) => d.text).join(''), r.text);
  assert.match(r.text, /pass key is \d+/);
  assert.ok(notices.some((n) => /no chat template/.test(n)), JSON.stringify(notices));
});

test('stops at maxTokens: finish length', async () => {
  const r = await model.generate(RAMBLING, { maxTokens: 7 }).result();
  assert.is(r.tokens.length, 7);
  assert.is(r.usage.completionTokens, 7);
  assert.is(r.finishReason, 'length');
  assert.is(r.stoppedBy, 'max_tokens');
});

test('stop strings: the text ends before the first one, also when it spans tokens; the deltas never show it', async () => {
  const free = await model.generate(RAMBLING, { maxTokens: 40 }).result();
  const stop = free.text.slice(10, 13);
  const at = free.text.indexOf(stop);
  const g = model.generate(RAMBLING, { maxTokens: 40, stop: ['zzzz', stop] });
  const deltas = await collect(g);
  const r = await g.result();
  assert.is(r.text, free.text.slice(0, at));
  assert.is(deltas.map((d) => d.text).join(''), r.text);
  assert.is(r.finishReason, 'stop');
  assert.is(r.stoppedBy, 'stop_string');
  // Generation stopped with the token that completed the stop string.
  assert.is(r.tokens.length, at + stop.length);
  // The matcher alone: a stop string split over pieces, and a held-back prefix that was not one.
  const m = new StopText(['<end>']);
  assert.equal([m.push('ab<'), m.push('en'), m.push('x'), m.push('<e'), m.push('nd>tail')], ['ab', '', '<enx', '', '']);
  assert.is(m.output, 'ab<enx');
});

test('stop ids end the generation at that token', async () => {
  const free = await model.generate(RAMBLING, { maxTokens: 20 }).result();
  const id = free.tokens[5];
  const first = free.tokens.indexOf(id);
  const r = await model.generate(RAMBLING, { maxTokens: 20, stopIds: [id] }).result();
  assert.equal(r.tokens, free.tokens.slice(0, first + 1));
  assert.is(r.stoppedBy, 'stop_id');
  assert.is(r.finishReason, 'stop');
});

test('abort: the iteration ends after the token in hand; an aborted waiting generation never prefills', async () => {
  const controller = new AbortController();
  const g = model.generate(RAMBLING, { maxTokens: 500, signal: controller.signal });
  const deltas = await collect(g, (_, i) => { if (i === 2) controller.abort(); });
  const r = await g.result();
  assert.is(deltas.length, 3);
  assert.is(r.tokens.length, 3);
  assert.is(r.finishReason, 'abort');
  assert.is(r.stoppedBy, 'signal');
  const early = model.generate(RAMBLING, { signal: AbortSignal.abort() });
  const e = await early.result();
  assert.is(e.tokens.length, 0);
  assert.is(e.work.cpuKernelCalls, 0);
});

test('break out of the loop: the generation ends (session freed) and the model goes on', async () => {
  const g = model.generate(RAMBLING, { maxTokens: 500 });
  let n = 0;
  for await (const _ of g) if (++n === 4) break;
  const r = await g.result();
  assert.is(r.finishReason, 'abort');
  assert.is(r.tokens.length, 4);
  const next = await model.generate(RAMBLING, { maxTokens: 3 }).result();
  assert.is(next.tokens.length, 3);
});

test('generations started together run one after another with the results they get alone', async () => {
  const prompts = ['the pass key is 1', 'x', RAMBLING, 'what is'];
  const alone = [];
  for (const p of prompts) alone.push((await model.generate(p, { maxTokens: 12 }).result()).text);
  const together = await Promise.all(prompts.map((p) => model.generate(p, { maxTokens: 12 }).result().then((r) => r.text)));
  assert.equal(together, alone);
  // Sampling with a seed is reproducible; another seed differs.
  const s = (seed: number) => model.generate(RAMBLING, { maxTokens: 30, temperature: 1, seed }).result().then((r) => r.text);
  assert.is(await s(3), await s(3));
  assert.is.not(await s(3), await s(4));
});

test('sampling options: topK 1 or a tiny topP at any temperature is greedy; seeded sampling is reproducible', async () => {
  const greedy = (await model.generate(RAMBLING, { maxTokens: 20 }).result()).tokens;
  assert.equal((await model.generate(RAMBLING, { maxTokens: 20, temperature: 1.5, topK: 1, seed: 9 }).result()).tokens, greedy);
  assert.equal((await model.generate(RAMBLING, { maxTokens: 20, temperature: 1, topP: 1e-9, seed: 9 }).result()).tokens, greedy);
  const hot = (seed: number) => model.generate(RAMBLING, { maxTokens: 20, temperature: 2, topK: 10, seed }).result().then((r) => r.tokens);
  assert.equal(await hot(1), await hot(1));
  assert.not.equal(await hot(1), greedy, 'temperature 2 over 10 tokens gave the greedy text: the sampler may not sample');
});

test('head options at load: a window of our own and streaming-only; the KV bytes follow them', async () => {
  const windowed = await loadModel(`${ROOT}fixtures/duet-passkey`, {
    pattern: `${ROOT}fixtures/duet-passkey-pattern`, sparsity: 0.5, window: { sink: 4, recent: 8 }, device: 'cpu', placement: 'cpu', threads: 1,
  });
  const only = await loadModel(`${ROOT}fixtures/duet-passkey`, { streamingOnly: true, window: { sink: 4, recent: 8 }, device: 'cpu', threads: 1 });
  try {
    assert.equal(windowed.info.window, { sink: 4, recent: 8 });
    assert.is(windowed.info.streamingHeads, 6);
    const r = await windowed.generate(RAMBLING, { maxTokens: 8 }).result();
    const capacity = r.usage.promptTokens + 8;
    assert.ok(capacity > 12);
    // 6 streaming rings of sink 4 + recent 8 slots; 6 retrieval heads of the whole capacity (head_dim 16, K and V, f32).
    assert.is(r.kv.streaming, 6 * 12 * 16 * 2 * 4);
    assert.is(r.kv.retrieval, 6 * capacity * 16 * 2 * 4);
    assert.is(only.info.streamingHeads, 12);
    const o = await only.generate(RAMBLING, { maxTokens: 8 }).result();
    assert.is(o.kv.retrieval, 0);
    assert.is(o.kv.streaming, 12 * 12 * 16 * 2 * 4);
  } finally {
    await windowed.dispose();
    await only.dispose();
  }
});

test('stats: KV bytes per device against full attention, timings and work counters', async () => {
  const r = await model.generate(RAMBLING, { maxTokens: 8 }).result();
  const prompt = r.usage.promptTokens, capacity = prompt + 8;
  // 12 KV heads of head_dim 16, K and V in f32: 6 retrieval heads hold the capacity, 6 streaming
  // rings hold min(sink 16 + recent 64, capacity) slots (this prompt is shorter than the window).
  assert.ok(capacity < 80);
  assert.is(r.kv.retrieval, 6 * capacity * 16 * 2 * 4);
  assert.is(r.kv.streaming, 6 * Math.min(80, capacity) * 16 * 2 * 4);
  assert.is(r.kv.fullAttention, 12 * capacity * 16 * 2 * 4);
  assert.is(r.kv.cpu, r.kv.retrieval + r.kv.streaming);
  assert.is(r.kv.gpu, 0);
  assert.ok(r.timings.prefillMs > 0 && r.timings.timeToFirstTokenMs >= r.timings.prefillMs && r.timings.decodeMsPerToken > 0);
  assert.ok(r.work.cpuKernelCalls > 0);
  assert.is(r.work.gpuDispatches, 0);
  const s = model.stats();
  assert.equal(s.last, r);
  assert.is(s.model.placement, 'cpu');
  assert.is(s.model.streamingHeads, 6);
  assert.equal(s.model.window, { sink: 16, recent: 64 });
  assert.is(s.model.weights.dtype, 'f32');
});

test('bad options are DuetErrors naming the API field', async () => {
  const cases: Array<[() => unknown, string, RegExp]> = [
    [() => model.generate('x', { maxTokens: 0 }), 'maxTokens', /must be a positive integer/],
    [() => model.generate('x', { temperature: -1 }), 'temperature', /must be ≥ 0/],
    [() => model.generate('x', { topP: 2 }), 'topP', /\(0, 1\]/],
    [() => model.generate('x', { stop: [''] }), 'stop', /non-empty/],
    [() => model.generate([99]), 'prompt', /outside the vocabulary \(0\.\.44\)/],
    [() => model.generate(''), 'prompt', /is empty/],
  ];
  for (const [f, field, re] of cases) {
    try { f(); assert.unreachable(field); } catch (e) {
      assert.instance(e, DuetError, String(e));
      assert.is((e as DuetError).field, field);
      assert.match((e as Error).message, re);
    }
  }
  for (const [opts, field] of [[{ sparsity: 2 }, 'sparsity'], [{ threads: 0 }, 'threads'], [{ contextLength: 10_000 }, 'contextLength']] as const) {
    try {
      await loadModel(`${ROOT}fixtures/duet-passkey`, { device: 'cpu', threads: 1, pattern: `${ROOT}fixtures/duet-passkey-pattern`, ...opts });
      assert.unreachable(field);
    } catch (e) {
      assert.instance(e, DuetError, String(e));
      assert.is((e as DuetError).field, field);
    }
  }
  // A weight format Duet has no kernels for is refused by name, before anything is loaded.
  try {
    await loadModel(`${ROOT}fixtures/duet-passkey`, { device: 'cpu', threads: 1, weights: 'q3_k' as unknown as 'f32' });
    assert.unreachable('weights');
  } catch (e) {
    assert.instance(e, DuetError, String(e));
    assert.is((e as DuetError).field, 'weights');
    assert.match((e as Error).message, /q3_k/);
  }
});

test('the context length: a prompt that leaves no room fails naming both numbers; a long one is cut at the limit', async () => {
  const short = await loadModel(`${ROOT}fixtures/duet-passkey`, { device: 'cpu', threads: 1, contextLength: 64 });
  try {
    try { short.generate('a'.repeat(70)); assert.unreachable(); } catch (e) {
      assert.is((e as DuetError).code, 'context_length_exceeded');
      assert.match((e as Error).message, /has 71 tokens; the context length is 64/);
    }
    const r = await short.generate('a'.repeat(60), { maxTokens: 10 }).result();
    assert.is(r.tokens.length, 3);
    assert.is(r.stoppedBy, 'context');
    assert.is(r.finishReason, 'length');
  } finally {
    await short.dispose();
  }
});

test('chat messages go through the model\'s chat template', async () => {
  const tiny = await loadModel(`${ROOT}fixtures/tiny-random`, { device: 'cpu', threads: 1 });
  try {
    const messages = [{ role: 'user', content: 'hi' }];
    const tok = tiny.tokenizer!;
    const rendered = tok.applyChatTemplate(messages, { addGenerationPrompt: true });
    assert.is(rendered, '<s><|user|>\nhi</s>\n<|assistant|>\n');
    assert.equal(tiny.encode({ messages }), tok.encode(rendered, { addSpecialTokens: false }));
    const chat = await tiny.chat.completions.create({ messages, max_tokens: 4, temperature: 0 });
    const plain = await tiny.generate(tiny.encode({ messages }), { maxTokens: 4 }).result();
    assert.is(chat.choices[0].message.content, plain.text);
    assert.is(chat.usage.prompt_tokens, plain.usage.promptTokens);
  } finally {
    await tiny.dispose();
  }
});

test('OpenAI shapes: chunks with usage only when asked, and field errors in OpenAI names', async () => {
  const chunks = [];
  for await (const c of await model.chat.completions.create({ messages: ANSWERED.messages, temperature: 0, stream: true })) chunks.push(c);
  assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk' && !('usage' in c)));
  assert.is(chunks[chunks.length - 1].choices[0].finish_reason, 'stop');
  const full = await model.completions.create({ prompt: RAMBLING, temperature: 0 });
  assert.is(full.usage!.completion_tokens, 16);
  for (const [params, field] of [
    [{ messages: [] }, 'messages'], [{ messages: [{ role: 'user', content: 1 }] }, 'messages[0].content'],
    [{ messages: ANSWERED.messages, top_p: 0 }, 'top_p'], [{ messages: ANSWERED.messages, n: 2 }, 'n'],
    [{ messages: ANSWERED.messages, stop: [1] }, 'stop'], [{ messages: ANSWERED.messages, model: 'other' }, 'model'],
  ] as const) {
    try { await model.chat.completions.create(params as never); assert.unreachable(field); } catch (e) {
      assert.is((e as DuetError).field, field, String(e));
    }
  }
});

test.after(async () => { await model.dispose(); });

test.run();
