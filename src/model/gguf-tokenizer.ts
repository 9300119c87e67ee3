// Tokenizers in GGUF metadata (tokenizer.ggml.*), both ways:
// - reading: the "gpt2" (byte-level BPE with merges) and "llama" (SentencePiece: pieces with
//   scores and token types, byte fallback) vocabularies become the equivalent tokenizer.json, which
//   @huggingface/tokenizers then runs;
// - writing: a byte-level or character-level BPE tokenizer.json becomes the "gpt2" entries
//   llama.cpp reads.
import { ValueType, type GgufEntry, type GgufValue, type GgufWriteValue } from './gguf.js';

/** llama.cpp token types. */
export const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

/** Pre-tokenizer regexes of the byte-level BPE vocabularies Duet reads (tokenizer.ggml.pre). */
const PRE_SPLIT: Record<string, string | null> = {
  'gpt-2': null, // ByteLevel's own GPT-2 regex
  'llama-bpe': "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  qwen2: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

export interface GgufTokenizer { tokenizer: Record<string, unknown>; config: Record<string, unknown> }

/** tokenizer.json + tokenizer_config for the GGUF's tokenizer.ggml.* metadata. */
export function tokenizerFromGguf(file: string, meta: Map<string, GgufEntry>): GgufTokenizer {
  const fail = (key: string, why: string): never => { throw new Error(`${file}: metadata "${key}" ${why}`); };
  const model = meta.get('tokenizer.ggml.model')?.value;
  if (model === undefined) fail('tokenizer.ggml.model', 'is missing (no tokenizer in this GGUF)');
  const arr = (key: string, required: boolean, check: (v: GgufValue) => boolean, what: string): GgufValue[] | null => {
    const e = meta.get(key);
    if (e === undefined) return required ? fail(key, 'is missing') : null;
    if (!Array.isArray(e.value)) return fail(key, `must be an array of ${what}`);
    const bad = e.value.findIndex((v) => !check(v));
    if (bad >= 0) fail(key, `[${bad}] must be ${what} (got ${JSON.stringify(String(e.value[bad]))})`);
    return e.value;
  };
  const tokens = arr('tokenizer.ggml.tokens', true, (v) => typeof v === 'string', 'strings') as string[];
  const n = tokens.length;
  const types = (arr('tokenizer.ggml.token_type', false, (v) => typeof v === 'number' && Number.isInteger(v), 'integers') as number[] | null) ?? new Array(n).fill(TOKEN_TYPE.normal);
  if (types.length !== n) fail('tokenizer.ggml.token_type', `has ${types.length} entries for ${n} tokens`);
  const id = (key: string): number | null => {
    const e = meta.get(key);
    if (e === undefined) return null;
    if (typeof e.value !== 'number' || !Number.isInteger(e.value) || e.value < 0) fail(key, 'must be a non-negative integer');
    // llama.cpp writes -1 cast to u32 for "none" in some converters.
    if ((e.value as number) === 0xffffffff) return null;
    if ((e.value as number) >= n) fail(key, `(${e.value}) is not a token id (the vocabulary has ${n} tokens)`);
    return e.value as number;
  };
  const flag = (key: string, fallback: boolean): boolean => {
    const e = meta.get(key);
    if (e === undefined) return fallback;
    if (typeof e.value !== 'boolean') fail(key, 'must be a bool');
    return e.value as boolean;
  };
  const bos = id('tokenizer.ggml.bos_token_id'), eos = id('tokenizer.ggml.eos_token_id');
  const unk = id('tokenizer.ggml.unknown_token_id'), pad = id('tokenizer.ggml.padding_token_id');
  const seen = new Map<string, number>();
  tokens.forEach((t, i) => { if (!seen.has(t)) seen.set(t, i); });
  const vocab: Record<string, number> = Object.fromEntries(seen);

  const added = tokens.flatMap((content, i) => types[i] === TOKEN_TYPE.control || types[i] === TOKEN_TYPE.userDefined || types[i] === TOKEN_TYPE.unused || (types[i] === TOKEN_TYPE.unknown && model === 'gpt2')
    ? [{ id: i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: types[i] !== TOKEN_TYPE.userDefined }] : []);
  const addBos = flag('tokenizer.ggml.add_bos_token', model === 'llama');
  const addEos = flag('tokenizer.ggml.add_eos_token', false);
  const special = (i: number | null) => (i === null ? [] : [{ SpecialToken: { id: tokens[i], type_id: 0 } }]);
  const specialTokens: Record<string, unknown> = {};
  for (const i of [addBos ? bos : null, addEos ? eos : null]) if (i !== null) specialTokens[tokens[i]] = { id: tokens[i], ids: [i], tokens: [tokens[i]] };
  const post = (addBos && bos !== null) || (addEos && eos !== null) ? {
    type: 'TemplateProcessing',
    single: [...special(addBos ? bos : null), { Sequence: { id: 'A', type_id: 0 } }, ...special(addEos ? eos : null)],
    pair: [...special(addBos ? bos : null), { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }, ...special(addEos ? eos : null)],
    special_tokens: specialTokens,
  } : null;

  let tokenizer: Record<string, unknown>;
  if (model === 'gpt2') {
    const merges = arr('tokenizer.ggml.merges', true, (v) => typeof v === 'string' && v.includes(' '), 'strings "a b"') as string[];
    const given = (meta.get('tokenizer.ggml.pre')?.value as string | undefined) ?? 'gpt-2';
    const pre = given === 'llama3' || given === 'llama-v3' ? 'llama-bpe' : given;
    if (!(pre in PRE_SPLIT)) fail('tokenizer.ggml.pre', `is "${given}"; Duet reads ${Object.keys(PRE_SPLIT).join(', ')}`);
    const split = PRE_SPLIT[pre];
    tokenizer = {
      version: '1.0', truncation: null, padding: null, added_tokens: added, normalizer: null,
      pre_tokenizer: split === null
        ? { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true }
        : { type: 'Sequence', pretokenizers: [
          { type: 'Split', pattern: { Regex: split }, behavior: 'Isolated', invert: false },
          { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] },
      post_processor: post,
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges },
    };
  } else if (model === 'llama') {
    const scores = arr('tokenizer.ggml.scores', true, (v) => typeof v === 'number' && !Number.isNaN(v), 'numbers') as number[];
    if (scores.length !== n) fail('tokenizer.ggml.scores', `has ${scores.length} entries for ${n} tokens`);
    if (unk === null) fail('tokenizer.ggml.unknown_token_id', 'is missing (a SentencePiece vocabulary needs one)');
    const prefix = flag('tokenizer.ggml.add_space_prefix', true);
    tokenizer = {
      version: '1.0', truncation: null, padding: null, added_tokens: added,
      normalizer: { type: 'Sequence', normalizers: [...(prefix ? [{ type: 'Prepend', prepend: '▁' }] : []), { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
      pre_tokenizer: null,
      post_processor: post,
      decoder: { type: 'Sequence', decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' },
        ...(prefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : [])] },
      model: { type: 'BPE', dropout: null, unk_token: tokens[unk!], continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true,
        vocab, merges: spmMerges(tokens, scores, types) },
    };
  } else {
    return fail('tokenizer.ggml.model', `is "${String(model)}"; Duet reads "llama" (SentencePiece) and "gpt2" (byte-level BPE)`);
  }
  const template = meta.get('tokenizer.chat_template')?.value;
  const config: Record<string, unknown> = {
    add_bos_token: addBos, add_eos_token: addEos,
    ...(bos !== null ? { bos_token: tokens[bos] } : {}), ...(eos !== null ? { eos_token: tokens[eos] } : {}),
    ...(unk !== null ? { unk_token: tokens[unk] } : {}), ...(pad !== null ? { pad_token: tokens[pad] } : {}),
    ...(typeof template === 'string' ? { chat_template: template } : {}),
  };
  return { tokenizer, config };
}

/**
 * SentencePiece's merge order as BPE merges: every split of a normal piece into two pieces of the
 * vocabulary, ranked by the merged piece's score (llama.cpp merges the adjacent pair whose union
 * scores highest; ties go to the leftmost pair, which BPE does for equal ranks).
 */
function spmMerges(tokens: string[], scores: number[], types: number[]): string[] {
  const ids = new Map<string, number>();
  tokens.forEach((t, i) => { if (types[i] === TOKEN_TYPE.normal || types[i] === TOKEN_TYPE.userDefined) if (!ids.has(t)) ids.set(t, i); });
  const merges: Array<{ a: string; b: string; score: number; id: number; left: number }> = [];
  for (const [t, i] of ids) {
    const chars = [...t];
    for (let s = 1; s < chars.length; s++) {
      const a = chars.slice(0, s).join(''), b = chars.slice(s).join('');
      const ia = ids.get(a), ib = ids.get(b);
      if (ia !== undefined && ib !== undefined) merges.push({ a, b, score: scores[i], id: i, left: ia });
    }
  }
  merges.sort((x, y) => y.score - x.score || x.id - y.id || x.left - y.left);
  return merges.map((m) => `${m.a} ${m.b}`);
}

// ---- writing ----

/** GPT-2's byte → printable-character map used by byte-level BPE. */
export function byteLevelAlphabet(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let extra = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) { bs.push(b); cs.push(256 + extra++); }
  const map: string[] = new Array(256);
  bs.forEach((b, i) => { map[b] = String.fromCodePoint(cs[i]); });
  return map;
}

type Json = Record<string, unknown>;

function hasByteLevel(pre: Json | null | undefined): boolean {
  if (!pre) return false;
  if (pre.type === 'ByteLevel') return true;
  return pre.type === 'Sequence' && Array.isArray(pre.pretokenizers) && (pre.pretokenizers as Json[]).some(hasByteLevel);
}

/** Which llama.cpp pre-tokenizer a byte-level tokenizer.json's pre_tokenizer is. */
function preName(pre: Json): string | null {
  if (pre.type === 'ByteLevel' && pre.use_regex !== false) return 'gpt-2';
  if (pre.type !== 'Sequence') return null;
  const parts = pre.pretokenizers as Json[];
  const regex = (parts.find((p) => p.type === 'Split')?.pattern as Json | undefined)?.Regex;
  for (const [name, re] of Object.entries(PRE_SPLIT)) if (re !== null && re === regex) return name;
  return null;
}

/**
 * The tokenizer.ggml.* entries (model "gpt2") for a BPE tokenizer.json: byte-level vocabularies as
 * they are, character-level ones without merges or a pre-tokenizer (the bundled model) re-spelled
 * byte-level so llama.cpp reads them. Anything else is an error naming the field.
 */
export function tokenizerToGguf(file: string, tok: Json, config: Json, vocabSize?: number): Array<[string, GgufWriteValue]> {
  const model = tok.model as Json | undefined;
  const fail = (field: string, why: string): never => { throw new Error(`${file}: ${field} ${why}; duet quantize writes byte-level BPE (GGUF "gpt2") tokenizers`); };
  if (!model || model.type !== 'BPE') fail('model.type', `is ${JSON.stringify(model?.type)}`);
  if (model!.byte_fallback) fail('model.byte_fallback', 'is true (a SentencePiece-style vocabulary)');
  if (tok.normalizer) fail('normalizer', `is ${JSON.stringify((tok.normalizer as Json).type)}`);
  const vocabObj = model!.vocab as Record<string, number>;
  const rawMerges = (model!.merges as Array<string | [string, string]>).map((m) => (Array.isArray(m) ? m.join(' ') : m));
  const byteLevel = hasByteLevel(tok.pre_tokenizer as Json | null);
  let pre = 'gpt-2';
  if (byteLevel) {
    const p = preName(tok.pre_tokenizer as Json);
    if (p === null) fail('pre_tokenizer', `(${JSON.stringify(tok.pre_tokenizer).slice(0, 120)}) matches none of llama.cpp's gpt-2, llama-bpe, qwen2`);
    pre = p!;
  } else if (tok.pre_tokenizer || rawMerges.length > 0) {
    fail('pre_tokenizer', 'is not byte-level and the vocabulary has merges or another pre-tokenizer');
  }
  const added = new Map<number, Json>();
  for (const a of (tok.added_tokens as Json[] | undefined) ?? []) added.set(a.id as number, a);
  const used = Math.max(...Object.values(vocabObj), ...added.keys()) + 1;
  if (vocabSize !== undefined && used > vocabSize) throw new Error(`${file}: token id ${used - 1} does not fit the model's vocab_size ${vocabSize}`);
  // llama.cpp sizes the embedding by the token list: pad it to vocab_size as its converter does.
  const size = vocabSize ?? used;
  const tokens: string[] = new Array(size).fill('');
  const types: number[] = new Array(size).fill(TOKEN_TYPE.unused);
  const alphabet = byteLevelAlphabet();
  const respell = (s: string) => Array.from(new TextEncoder().encode(s), (b) => alphabet[b]).join('');
  for (const [t, i] of Object.entries(vocabObj)) { tokens[i] = byteLevel ? t : respell(t); types[i] = TOKEN_TYPE.normal; }
  for (const [i, a] of added) { tokens[i] = a.content as string; types[i] = a.special ? TOKEN_TYPE.control : TOKEN_TYPE.userDefined; }
  tokens.forEach((t, i) => { if (types[i] === TOKEN_TYPE.unused) tokens[i] = `[PAD${i}]`; });
  const idOf = (key: string): number | null => {
    const v = config[key];
    const s = typeof v === 'string' ? v : (v as Json | undefined)?.content as string | undefined;
    if (s === undefined || s === null) return null;
    for (const [i, a] of added) if (a.content === s) return i;
    const i = vocabObj[s];
    if (i === undefined) throw new Error(`${file}: tokenizer_config.json ${key} ${JSON.stringify(s)} is not in the vocabulary`);
    return i;
  };
  const u32 = (value: number): GgufWriteValue => ({ type: ValueType.U32, value });
  const out: Array<[string, GgufWriteValue]> = [
    ['tokenizer.ggml.model', { type: ValueType.STRING, value: 'gpt2' }],
    ['tokenizer.ggml.pre', { type: ValueType.STRING, value: pre }],
    ['tokenizer.ggml.tokens', { type: ValueType.ARRAY, itemType: ValueType.STRING, value: tokens }],
    ['tokenizer.ggml.token_type', { type: ValueType.ARRAY, itemType: ValueType.I32, value: types }],
    ['tokenizer.ggml.merges', { type: ValueType.ARRAY, itemType: ValueType.STRING, value: rawMerges }],
  ];
  const bos = idOf('bos_token'), eos = idOf('eos_token'), unk = idOf('unk_token'), pad = idOf('pad_token');
  if (bos !== null) out.push(['tokenizer.ggml.bos_token_id', u32(bos)]);
  if (eos !== null) out.push(['tokenizer.ggml.eos_token_id', u32(eos)]);
  if (unk !== null) out.push(['tokenizer.ggml.unknown_token_id', u32(unk)]);
  if (pad !== null) out.push(['tokenizer.ggml.padding_token_id', u32(pad)]);
  // add_bos: tokenizer_config's flag, else whether the post-processor puts the BOS token first.
  const post = tok.post_processor as Json | null | undefined;
  const firstSpecial = (post?.single as Json[] | undefined)?.[0]?.SpecialToken as Json | undefined;
  const addBos = typeof config.add_bos_token === 'boolean' ? config.add_bos_token : bos !== null && firstSpecial?.id === tokens[bos];
  out.push(['tokenizer.ggml.add_bos_token', { type: ValueType.BOOL, value: addBos }]);
  out.push(['tokenizer.ggml.add_eos_token', { type: ValueType.BOOL, value: config.add_eos_token === true }]);
  const template = config.chat_template;
  const source = typeof template === 'string' ? template
    : Array.isArray(template) ? (template.find((x: Json) => x.name === 'default')?.template as string | undefined) : undefined;
  if (source) out.push(['tokenizer.chat_template', { type: ValueType.STRING, value: source }]);
  return out;
}
