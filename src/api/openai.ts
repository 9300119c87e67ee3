// OpenAI-shaped chat and text completions over a DuetModel: the request fields OpenAI's API takes
// (named as OpenAI names them in errors), its response objects, and with `stream: true` an async
// iterable of its chunk objects. `duet serve` sends exactly these over HTTP.
import { DuetError } from '../errors.js';
import type { ChatMessage } from '../model/tokenizer.js';
import type { DuetModel, FinishReason, GenerateOptions, Generation, GenerationStats, Prompt } from './model.js';

interface CommonParams {
  model?: string;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean } | null;
  max_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  n?: number | null;
}

export interface ChatCompletionParams extends CommonParams {
  messages: Array<{ role: string; content: string | Array<{ type: string; text?: string }> | null }>;
  max_completion_tokens?: number | null;
}

export interface CompletionParams extends CommonParams {
  prompt: string | string[] | number[];
}

export interface Usage { prompt_tokens: number; completion_tokens: number; total_tokens: number }

export interface ChatCompletion {
  id: string; object: 'chat.completion'; created: number; model: string;
  choices: Array<{ index: number; message: { role: 'assistant'; content: string; refusal: null }; finish_reason: OpenAIFinish; logprobs: null }>;
  usage: Usage;
}

export interface ChatCompletionChunk {
  id: string; object: 'chat.completion.chunk'; created: number; model: string;
  choices: Array<{ index: number; delta: { role?: 'assistant'; content?: string }; finish_reason: OpenAIFinish | null; logprobs: null }>;
  usage?: Usage | null;
}

export interface Completion {
  id: string; object: 'text_completion'; created: number; model: string;
  choices: Array<{ index: number; text: string; finish_reason: OpenAIFinish | null; logprobs: null }>;
  usage?: Usage | null;
}

/** OpenAI's finish reasons; a generation aborted by its signal ends the stream with 'stop'. */
export type OpenAIFinish = 'stop' | 'length';

/** Per-request options that are not part of the request body (as in OpenAI's client). */
export interface RequestOptions { signal?: AbortSignal }

type Field = (name: string, detail: string) => never;
const bad: Field = (name, detail) => { throw new DuetError(name, detail); };

function optionalNumber(p: Record<string, unknown>, name: string, check: (n: number) => boolean, what: string): number | undefined {
  const v = p[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || !check(v)) bad(name, `must be ${what} (got ${JSON.stringify(v)})`);
  return v as number;
}

function generateOptions(p: CommonParams & Record<string, unknown>, model: DuetModel, defaultMaxTokens: number | undefined, maxField = 'max_tokens'): GenerateOptions {
  if (p.model !== undefined && p.model !== null && typeof p.model !== 'string') bad('model', `must be a string (got ${JSON.stringify(p.model)})`);
  if (typeof p.model === 'string' && p.model !== model.info.id) throw new DuetError('model', `"${p.model}" does not exist (this server has "${model.info.id}")`, 'model_not_found');
  const n = optionalNumber(p, 'n', (x) => x === 1, '1 (one choice per request)');
  void n;
  if (p.stream !== undefined && p.stream !== null && typeof p.stream !== 'boolean') bad('stream', `must be a boolean (got ${JSON.stringify(p.stream)})`);
  const so = p.stream_options;
  if (so !== undefined && so !== null && (typeof so !== 'object' || Array.isArray(so) || (so.include_usage !== undefined && typeof so.include_usage !== 'boolean'))) {
    bad('stream_options', 'must be an object like {"include_usage": true}');
  }
  const stop = p.stop;
  if (stop !== undefined && stop !== null && typeof stop !== 'string' && !(Array.isArray(stop) && stop.length <= 4 && stop.every((s) => typeof s === 'string' && s !== ''))) {
    bad('stop', 'must be a string or an array of up to 4 non-empty strings');
  }
  return {
    maxTokens: optionalNumber(p, maxField, (x) => Number.isInteger(x) && x >= 1, 'a positive integer') ?? defaultMaxTokens,
    temperature: optionalNumber(p, 'temperature', (x) => x >= 0 && x <= 2, 'a number from 0 to 2') ?? 1,
    topP: optionalNumber(p, 'top_p', (x) => x > 0 && x <= 1, 'a number in (0, 1]'),
    // Without a seed, each request samples differently (as OpenAI's API does).
    seed: optionalNumber(p, 'seed', (x) => Number.isInteger(x), 'an integer') ?? Math.floor(Math.random() * 2 ** 31),
    stop: stop === null || stop === '' ? undefined : stop,
  };
}

function chatMessages(p: ChatCompletionParams): ChatMessage[] {
  if (!Array.isArray(p.messages) || p.messages.length === 0) bad('messages', 'must be a non-empty array of {role, content}');
  return p.messages.map((m, i) => {
    if (typeof m !== 'object' || m === null) bad(`messages[${i}]`, 'must be an object with role and content');
    if (!['system', 'developer', 'user', 'assistant'].includes(m.role as string)) bad(`messages[${i}].role`, `must be system, developer, user or assistant (got ${JSON.stringify(m.role)})`);
    const c = m.content;
    const content = typeof c === 'string' ? c
      : Array.isArray(c) && c.every((part) => part?.type === 'text' && typeof part.text === 'string') ? c.map((part) => part.text).join('')
      : bad(`messages[${i}].content`, 'must be a string or an array of text parts');
    return { role: m.role === 'developer' ? 'system' : m.role, content };
  });
}

function completionPrompt(p: CompletionParams): Prompt {
  const v = p.prompt;
  if (typeof v === 'string' && v !== '') return v;
  if (Array.isArray(v) && v.length === 1 && typeof v[0] === 'string' && v[0] !== '') return v[0];
  if (Array.isArray(v) && v.length > 0 && v.every((x) => Number.isInteger(x))) return v as number[];
  return bad('prompt', 'must be a non-empty string (or one string, or token ids)');
}

const usageOf = (s: GenerationStats): Usage => ({ prompt_tokens: s.usage.promptTokens, completion_tokens: s.usage.completionTokens, total_tokens: s.usage.totalTokens });
const finishOf = (r: FinishReason): OpenAIFinish => (r === 'length' ? 'length' : 'stop');

function requestId(prefix: string): string {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return `${prefix}-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

function start(model: DuetModel, prompt: Prompt, options: GenerateOptions, request: RequestOptions): Generation {
  return model.generate(prompt, { ...options, signal: request.signal });
}

export class ChatCompletions {
  constructor(private readonly model: DuetModel) {}

  create(params: ChatCompletionParams & { stream: true }, request?: RequestOptions): Promise<AsyncIterable<ChatCompletionChunk>>;
  create(params: ChatCompletionParams & { stream?: false | null }, request?: RequestOptions): Promise<ChatCompletion>;
  create(params: ChatCompletionParams, request?: RequestOptions): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>>;
  async create(params: ChatCompletionParams, request: RequestOptions = {}): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>> {
    if (typeof params !== 'object' || params === null) bad('body', 'must be a JSON object');
    const messages = chatMessages(params);
    const field = params.max_completion_tokens !== undefined && params.max_completion_tokens !== null ? 'max_completion_tokens' : 'max_tokens';
    const options = generateOptions(params as ChatCompletionParams & Record<string, unknown>, this.model, undefined, field);
    const generation = start(this.model, { messages }, options, request);
    const head = { id: requestId('chatcmpl'), created: Math.floor(Date.now() / 1000), model: this.model.info.id };
    if (!params.stream) {
      const s = await generation.result();
      return {
        ...head, object: 'chat.completion',
        choices: [{ index: 0, message: { role: 'assistant', content: s.text, refusal: null }, finish_reason: finishOf(s.finishReason), logprobs: null }],
        usage: usageOf(s),
      };
    }
    const includeUsage = params.stream_options?.include_usage === true;
    return (async function* (): AsyncGenerator<ChatCompletionChunk> {
      const chunk = (delta: ChatCompletionChunk['choices'][0]['delta'], finish: OpenAIFinish | null): ChatCompletionChunk => ({
        ...head, object: 'chat.completion.chunk', choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }],
        ...(includeUsage ? { usage: null } : {}),
      });
      yield chunk({ role: 'assistant', content: '' }, null);
      for await (const d of generation) if (d.text) yield chunk({ content: d.text }, null);
      const s = await generation.result();
      yield chunk({}, finishOf(s.finishReason));
      if (includeUsage) yield { ...head, object: 'chat.completion.chunk', choices: [], usage: usageOf(s) };
    })();
  }
}

export class Completions {
  constructor(private readonly model: DuetModel) {}

  create(params: CompletionParams & { stream: true }, request?: RequestOptions): Promise<AsyncIterable<Completion>>;
  create(params: CompletionParams & { stream?: false | null }, request?: RequestOptions): Promise<Completion>;
  create(params: CompletionParams, request?: RequestOptions): Promise<Completion | AsyncIterable<Completion>>;
  async create(params: CompletionParams, request: RequestOptions = {}): Promise<Completion | AsyncIterable<Completion>> {
    if (typeof params !== 'object' || params === null) bad('body', 'must be a JSON object');
    const prompt = completionPrompt(params);
    // OpenAI's default for completions is 16 tokens.
    const options = generateOptions(params as CompletionParams & Record<string, unknown>, this.model, 16);
    const generation = start(this.model, prompt, options, request);
    const head = { id: requestId('cmpl'), object: 'text_completion' as const, created: Math.floor(Date.now() / 1000), model: this.model.info.id };
    if (!params.stream) {
      const s = await generation.result();
      return { ...head, choices: [{ index: 0, text: s.text, finish_reason: finishOf(s.finishReason), logprobs: null }], usage: usageOf(s) };
    }
    const includeUsage = params.stream_options?.include_usage === true;
    return (async function* (): AsyncGenerator<Completion> {
      const chunk = (text: string, finish: OpenAIFinish | null): Completion => ({
        ...head, choices: [{ index: 0, text, finish_reason: finish, logprobs: null }], ...(includeUsage ? { usage: null } : {}),
      });
      for await (const d of generation) if (d.text) yield chunk(d.text, null);
      const s = await generation.result();
      yield chunk('', finishOf(s.finishReason));
      if (includeUsage) yield { ...head, choices: [], usage: usageOf(s) };
    })();
  }
}
