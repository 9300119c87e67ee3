// Tokenizers through GGUF metadata: the bundled model's character-level vocabulary and a byte-level
// BPE with merges written as tokenizer.ggml.* and read back tokenize and decode identically on
// varied text; a SentencePiece ("llama") vocabulary tokenizes as llama.cpp's algorithm does (a plain
// reference below); bad tokenizer metadata names the file and key.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeGgufHeader, parseGgufHeader, ValueType, concatBytes, type GgufWriteValue } from '../src/model/gguf.ts';
import { tokenizerFromGguf, tokenizerToGguf, TOKEN_TYPE } from '../src/model/gguf-tokenizer.ts';
import { ggufChunks } from '../src/model/gguf-write.ts';
import { TextTokenizer } from '../src/model/tokenizer.ts';
import { loadCheckpoint } from '../src/model/checkpoint.ts';
import { nodeModelFiles } from '../src/node/files.ts';
import { byteLevelTokenizer, writeCheckpoint } from './helpers/checkpoint.ts';
import { rng } from './reference/kernels.ts';

const FILE = 'test.gguf';
const meta = (entries: Array<[string, GgufWriteValue]>) => {
  const bytes = encodeGgufHeader(entries, []);
  return parseGgufHeader(bytes, bytes.length, FILE).metadata;
};
const viaGguf = (tok: object, config: object) => {
  const t = tokenizerFromGguf(FILE, meta(tokenizerToGguf('tokenizer.json', tok as Record<string, unknown>, config as Record<string, unknown>)));
  return new TextTokenizer(t.tokenizer, t.config);
};

function texts(alphabet: string[], seed: number, count: number): string[] {
  const random = rng(seed);
  return Array.from({ length: count }, (_, i) => Array.from({ length: 1 + Math.floor(random() * (8 + i * 3)) }, () => alphabet[Math.floor(random() * alphabet.length)]).join(''));
}

function sameTokenization(a: TextTokenizer, b: TextTokenizer, samples: string[]): void {
  for (const s of samples) {
    const ia = a.encode(s), ib = b.encode(s);
    assert.equal(ib, ia, `encode ${JSON.stringify(s)}`);
    assert.is(b.decode(ib), a.decode(ia), `decode ${JSON.stringify(s)}`);
    assert.equal(b.encode(s, { addSpecialTokens: false }), a.encode(s, { addSpecialTokens: false }));
  }
}

test('the bundled model\'s character-level tokenizer survives GGUF (re-spelled byte-level), chat template included', () => {
  const dir = new URL('../fixtures/duet-passkey/', import.meta.url).pathname;
  const tok = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
  const config = { ...JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')), chat_template: '{% for m in messages %}{{ m.content }}\n{% endfor %}' };
  const a = new TextTokenizer(tok, config), b = viaGguf(tok, config);
  const alphabet = Object.keys(tok.model.vocab).filter((t) => t.length === 1);
  assert.ok(alphabet.includes(' ') && alphabet.includes('\n'), 'vocabulary has space and newline');
  sameTokenization(a, b, [...texts(alphabet, 1, 60), 'The pass key is 71432. Remember it.\n', '  two  spaces\n\nand lines ']);
  assert.is(b.applyChatTemplate([{ role: 'user', content: 'hi' }]), a.applyChatTemplate([{ role: 'user', content: 'hi' }]));
  assert.is(b.encode('ab')[0], 0, 'BOS added');
});

test('a byte-level BPE with merges (GPT-2 pre-tokenizer) survives GGUF on unicode, spaces and newlines', () => {
  const { tokenizer, config } = byteLevelTokenizer(400);
  const a = new TextTokenizer(tokenizer, config as Record<string, unknown>), b = viaGguf(tokenizer, config);
  const alphabet = [...'the world hello in or ll el er th ', 'e', 't', 'h', ' ', '  ', '\n', '\t', 'é', '中', '🙂', '0', '9', "'s", '!', 'W'];
  sameTokenization(a, b, [...texts(alphabet, 2, 60), 'hello the world\n\n  there', 'naïve café 中文 🙂🙂']);
  assert.ok(a.encode('hello there').length < 'hello there'.length + 1, 'merges are in use');
});

// llama.cpp's SentencePiece tokenizer: prefix a space, spaces → ▁, then repeatedly merge the
// adjacent pair whose union is a piece with the highest score (leftmost first); pieces not in the
// vocabulary become their UTF-8 bytes <0xXX>.
function spmReference(pieces: Map<string, { id: number; score: number }>, byteIds: number[], text: string, bos: number): number[] {
  let syms = [...('▁' + text.replaceAll(' ', '▁'))];
  for (;;) {
    let best = -1, bestScore = -Infinity;
    for (let i = 0; i + 1 < syms.length; i++) {
      const p = pieces.get(syms[i] + syms[i + 1]);
      if (p && p.score > bestScore) { best = i; bestScore = p.score; }
    }
    if (best < 0) break;
    syms = [...syms.slice(0, best), syms[best] + syms[best + 1], ...syms.slice(best + 2)];
  }
  return [bos, ...syms.flatMap((s) => pieces.has(s) ? [pieces.get(s)!.id] : Array.from(new TextEncoder().encode(s), (b) => byteIds[b]))];
}

test('a SentencePiece ("llama") vocabulary tokenizes as llama.cpp does, with byte fallback, and decodes back', () => {
  const random = rng(9);
  const tokens = ['<unk>', '<s>', '</s>'];
  const types: number[] = [TOKEN_TYPE.unknown, TOKEN_TYPE.control, TOKEN_TYPE.control];
  const scores = [0, 0, 0];
  const byteIds: number[] = [];
  for (let b = 0; b < 256; b++) { byteIds.push(tokens.length); tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`); types.push(TOKEN_TYPE.byte); scores.push(0); }
  const chars = [...'▁abcdehilnorstw'];
  const pieces = new Set<string>(chars);
  while (pieces.size < 120) { // random multi-character pieces built from existing ones
    const all = [...pieces];
    pieces.add(all[Math.floor(random() * all.length)] + all[Math.floor(random() * chars.length)]);
  }
  const map = new Map<string, { id: number; score: number }>();
  [...pieces].forEach((p, i) => {
    const score = -i - random() * 0.5; // unique scores, roughly shorter pieces first
    map.set(p, { id: tokens.length, score });
    tokens.push(p); types.push(TOKEN_TYPE.normal); scores.push(score);
  });
  const entries: Array<[string, GgufWriteValue]> = [
    ['tokenizer.ggml.model', { type: ValueType.STRING, value: 'llama' }],
    ['tokenizer.ggml.tokens', { type: ValueType.ARRAY, itemType: ValueType.STRING, value: tokens }],
    ['tokenizer.ggml.scores', { type: ValueType.ARRAY, itemType: ValueType.F32, value: scores }],
    ['tokenizer.ggml.token_type', { type: ValueType.ARRAY, itemType: ValueType.I32, value: types }],
    ['tokenizer.ggml.bos_token_id', { type: ValueType.U32, value: 1 }],
    ['tokenizer.ggml.eos_token_id', { type: ValueType.U32, value: 2 }],
    ['tokenizer.ggml.unknown_token_id', { type: ValueType.U32, value: 0 }],
  ];
  const m = meta(entries);
  // Scores come back as f32: the reference uses the same rounded values.
  const f32 = m.get('tokenizer.ggml.scores')!.value as number[];
  for (const v of map.values()) v.score = f32[v.id];
  const t = tokenizerFromGguf(FILE, m);
  const tok = new TextTokenizer(t.tokenizer, t.config);
  for (const s of [...texts([...'abcdehilnorstw', ' ', ' ', 'é', 'Z', '中'], 3, 80), 'hello world', 'a  b']) {
    assert.equal(tok.encode(s), spmReference(map, byteIds, s, 1), `encode ${JSON.stringify(s)}`);
    assert.is(tok.decode(tok.encode(s)), s, `decode ${JSON.stringify(s)}`);
  }
});

test('a GGUF file carries the tokenizer: generate-ready TextTokenizer from loadCheckpoint', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'duet-ggtok-'));
  await writeCheckpoint(dir, { tokenizer: true, vocab: 301 });
  const hf = await loadCheckpoint(nodeModelFiles(dir));
  const tok = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
  const cfg = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
  const file = join(dir, 'm.gguf');
  writeFileSync(file, concatBytes(ggufChunks(hf.config, hf.weights, { name: 't', type: 'f32', encode: (_, v) => new Uint8Array(v.slice().buffer), tokenizer: tokenizerToGguf('tokenizer.json', tok, cfg) })));
  const g = await loadCheckpoint(nodeModelFiles(file));
  assert.ok(g.tokenizer);
  assert.equal(g.tokenizer!.encode('hello the world'), hf.tokenizer!.encode('hello the world'));
  assert.equal(g.eosTokenIds, [1]);
  assert.is(g.config.bosTokenId, 0);
  assert.is(g.tokenizer!.applyChatTemplate([{ role: 'user', content: 'x' }]), hf.tokenizer!.applyChatTemplate([{ role: 'user', content: 'x' }]));
});

test('bad tokenizer metadata: errors name the file and key', () => {
  const s = (value: string): GgufWriteValue => ({ type: ValueType.STRING, value });
  const strs = (value: string[]): GgufWriteValue => ({ type: ValueType.ARRAY, itemType: ValueType.STRING, value });
  const base: Array<[string, GgufWriteValue]> = [['tokenizer.ggml.model', s('gpt2')], ['tokenizer.ggml.tokens', strs(['a', 'b', 'ab'])], ['tokenizer.ggml.merges', strs(['a b'])]];
  const cases: Array<[Array<[string, GgufWriteValue]>, RegExp]> = [
    [[], /test.gguf: metadata "tokenizer.ggml.model" is missing/],
    [[['tokenizer.ggml.model', s('bert')], ['tokenizer.ggml.tokens', strs(['a'])]], /metadata "tokenizer.ggml.model" is "bert"/],
    [[['tokenizer.ggml.model', s('gpt2')]], /metadata "tokenizer.ggml.tokens" is missing/],
    [base.slice(0, 2), /metadata "tokenizer.ggml.merges" is missing/],
    [[...base, ['tokenizer.ggml.pre', s('falcon')]], /metadata "tokenizer.ggml.pre" is "falcon"; Duet reads gpt-2, llama-bpe, qwen2/],
    [[...base, ['tokenizer.ggml.bos_token_id', { type: ValueType.U32, value: 3 }]], /metadata "tokenizer.ggml.bos_token_id" \(3\) is not a token id \(the vocabulary has 3 tokens\)/],
    [[...base, ['tokenizer.ggml.token_type', { type: ValueType.ARRAY, itemType: ValueType.I32, value: [1, 1] }]], /metadata "tokenizer.ggml.token_type" has 2 entries for 3 tokens/],
    [[['tokenizer.ggml.model', s('llama')], ['tokenizer.ggml.tokens', strs(['a'])]], /metadata "tokenizer.ggml.scores" is missing/],
    [[['tokenizer.ggml.model', s('llama')], ['tokenizer.ggml.tokens', strs(['a'])], ['tokenizer.ggml.scores', { type: ValueType.ARRAY, itemType: ValueType.F32, value: [0] }]], /metadata "tokenizer.ggml.unknown_token_id" is missing/],
  ];
  for (const [entries, re] of cases) assert.throws(() => tokenizerFromGguf(FILE, meta(entries)), re);
  assert.throws(() => tokenizerToGguf('tokenizer.json', { model: { type: 'Unigram' } }, {}), /tokenizer.json: model.type is "Unigram"/);
});

test.run();
