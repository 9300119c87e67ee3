// Identification data. DuoAttention's recipe (passkeySample): a haystack of filler sentences with
// several passkeys made of random words at random depths (0.05–0.95), then one question per passkey
// with its answer written out. For a model that only knows its own task format (the bundled model
// learnt 5-digit pass keys, not words), taskSample uses the evaluation tasks with the answer
// appended. The loss looks at the rows that predict the answer tokens. Pieces are encoded one by one
// so answer token positions are known exactly.
import type { TextTokenizer } from '../model/tokenizer.js';
import { fillerSentence, PASSKEY_WORDS, type FillerStyle } from '../tasks/filler.js';
import type { Random } from '../tasks/random.js';
import { answerText, KEYS, type TaskKind } from '../tasks/tasks.js';
import { taskPrompt } from '../eval/evaluate.js';

export interface IdentifySample {
  ids: Int32Array;
  /** Rows whose next-token prediction is an answer token. */
  answerRows: number[];
  description: string;
}

export function passkeySample(tokenizer: TextTokenizer, r: Random, length: number, style: FillerStyle, passkeys = 4, words = 4): IdentifySample {
  const enc = (t: string) => tokenizer.encode(t, { addSpecialTokens: false });
  const bos = tokenizer.encode('', { addSpecialTokens: true });
  const cap = (t: string) => (style === 'english' ? t[0].toUpperCase() + t.slice(1) : t);
  const names = [...KEYS].sort(() => r.next() - 0.5).slice(0, passkeys);
  const keys = names.map(() => Array.from({ length: words }, () => r.pick(PASSKEY_WORDS)).join(' '));
  const needles = names.map((n, i) => enc(cap(`the pass key of ${n} is ${keys[i]}. `)));
  const questions = names.map((n, i) => ({ q: enc(cap(`what is the pass key of ${n}? the pass key of ${n} is`)), a: enc(` ${keys[i]}. `) }));
  const fixed = bos.length + needles.reduce((a, n) => a + n.length, 0) + questions.reduce((a, q) => a + q.q.length + q.a.length, 0);
  const sentences: number[][] = [];
  let used = fixed;
  for (;;) {
    const s = enc(fillerSentence(r, style));
    if (used + s.length > length) break;
    sentences.push(s);
    used += s.length;
  }
  if (sentences.length < 4) throw new RangeError(`identification samples need more than ${length} tokens (${fixed} for the passkeys and questions alone)`);
  const depths = names.map(() => Math.round((0.05 + 0.9 * r.next()) * sentences.length));
  const ids: number[] = [...bos];
  for (let i = 0; i <= sentences.length; i++) {
    depths.forEach((d, k) => { if (d === i) ids.push(...needles[k]); });
    if (i < sentences.length) ids.push(...sentences[i]);
  }
  const answerRows: number[] = [];
  for (const { q, a } of questions) {
    ids.push(...q);
    for (let t = 0; t < a.length; t++) answerRows.push(ids.length - 1 + t);
    ids.push(...a);
  }
  return { ids: Int32Array.from(ids), answerRows, description: `${passkeys} passkeys of ${words} words, ${ids.length} tokens` };
}

/** One evaluation-task prompt (kind picked from `kinds`) of `length` tokens with its answer appended. */
export function taskSample(tokenizer: TextTokenizer, r: Random, length: number, kinds: readonly TaskKind[], style: FillerStyle, countTokens?: (text: string) => number): IdentifySample {
  const kind = r.pick(kinds);
  const { sample, ids } = taskPrompt(tokenizer, { kind, length, depth: 0.05 + 0.9 * r.next(), seed: r.int(0, 2 ** 31), style }, countTokens);
  const answer = tokenizer.encode(answerText(sample), { addSpecialTokens: false });
  const answerRows = answer.map((_, t) => ids.length - 1 + t);
  return { ids: Int32Array.from([...ids, ...answer]), answerRows, description: `${kind}, ${ids.length + answer.length} tokens` };
}
