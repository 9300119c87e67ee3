// Long-context tasks generated offline from a seed, in the spirit of the passkey test and RULER's
// needle-in-a-haystack and variable-tracking tasks. A sample is a haystack of filler sentences of
// about `length` tokens with needles inserted at sentence boundaries; the target needle sits at the
// asked depth (0 = start of the haystack, 1 = end); the prompt ends with a question whose answer
// needs the needle(s).
import { fillerSentence, type FillerStyle } from './filler.js';
import { Random } from './random.js';

export const TASK_KINDS = ['passkey', 'niah-single', 'niah-multikey', 'niah-multivalue', 'vt'] as const;
export type TaskKind = (typeof TASK_KINDS)[number];

export interface TaskSpec {
  kind: TaskKind;
  /** Target prompt length in tokens (as counted by countTokens). */
  length: number;
  /** Relative position of the target needle in the haystack, 0..1. */
  depth: number;
  seed: number;
  style: FillerStyle;
  /** Token count of a piece of text for the model's tokenizer. */
  countTokens: (text: string) => number;
}

export interface TaskSample {
  kind: TaskKind;
  prompt: string;
  /** Expected strings: one for exact-match tasks, several for multi-value ones. */
  answers: string[];
  /** Character range of the target needle in the prompt. */
  needle: [number, number];
  /** Where the target needle really landed: its haystack offset / haystack length (characters). */
  actualDepth: number;
  /** Enough new tokens for the answer. */
  maxNewTokens: number;
}

export const KEYS = ['apple', 'violin', 'harbor', 'meadow', 'candle', 'falcon', 'silver', 'orchid', 'lantern', 'pepper', 'glacier', 'marble'];

interface Needle { text: string; depth: number; target: boolean }

function variableName(r: Random): string {
  let s = '';
  for (let i = 0; i < 4; i++) s += String.fromCharCode(97 + r.int(0, 26));
  return s;
}

function capitalise(text: string, style: FillerStyle): string {
  return style === 'english' ? text.replace(/(^|[.?] )([a-z])/g, (_m, p: string, c: string) => p + c.toUpperCase()) : text;
}

/** Needles, question and answers of one sample (before the haystack is built). */
function design(spec: TaskSpec, r: Random): { needles: Needle[]; question: string; answers: string[]; maxNewTokens: number } {
  const { kind, depth } = spec;
  switch (kind) {
    case 'passkey': {
      const key = r.digits(5);
      return {
        needles: [{ text: `the pass key is ${key}. remember it. `, depth, target: true }],
        question: 'what is the pass key? the pass key is', answers: [key], maxNewTokens: 8,
      };
    }
    case 'niah-single': {
      const key = r.pick(KEYS), value = r.digits(6);
      return {
        needles: [{ text: `the magic number for ${key} is ${value}. `, depth, target: true }],
        question: `what is the magic number for ${key}? the magic number for ${key} is`, answers: [value], maxNewTokens: 9,
      };
    }
    case 'niah-multikey': {
      const keys = [...KEYS].sort(() => r.next() - 0.5).slice(0, 4);
      const values = keys.map(() => r.digits(6));
      const needles = keys.map((k, i) => ({ text: `the magic number for ${k} is ${values[i]}. `, depth: i === 0 ? depth : r.next(), target: i === 0 }));
      return {
        needles, question: `what is the magic number for ${keys[0]}? the magic number for ${keys[0]} is`,
        answers: [values[0]], maxNewTokens: 9,
      };
    }
    case 'niah-multivalue': {
      const key = r.pick(KEYS);
      const values = [0, 1, 2, 3].map(() => r.digits(6));
      const needles = values.map((v, i) => ({ text: `the magic number for ${key} is ${v}. `, depth: i === 0 ? depth : r.next(), target: i === 0 }));
      return {
        needles, question: `what are all the magic numbers for ${key}? the magic numbers for ${key} are`,
        answers: values, maxNewTokens: 36,
      };
    }
    case 'vt': {
      const value = r.digits(5);
      const names: string[] = [];
      while (names.length < 3) { const n = variableName(r); if (!names.includes(n)) names.push(n); }
      // The chain starts at the asked depth; later hops lie after it.
      const d1 = depth + (1 - depth) * r.next(), d2 = d1 + (1 - d1) * r.next();
      const needles = [
        { text: `var ${names[0]} = ${value}. `, depth, target: true },
        { text: `var ${names[1]} = ${names[0]}. `, depth: d1, target: false },
        { text: `var ${names[2]} = ${names[1]}. `, depth: d2, target: false },
      ];
      return { needles, question: `which variables are equal to ${value}? they are`, answers: names, maxNewTokens: 20 };
    }
  }
}

/** The answer as written after the question (the bundled model's training format): " 48213." */
export function answerText(sample: TaskSample): string {
  return ` ${sample.answers.join(', ')}.`;
}

export function generateSample(spec: TaskSpec): TaskSample {
  if (!(spec.depth >= 0 && spec.depth <= 1)) throw new RangeError(`task depth must be in [0, 1] (got ${spec.depth})`);
  if (!(Number.isInteger(spec.length) && spec.length > 0)) throw new RangeError(`task length must be a positive integer (got ${spec.length})`);
  const r = new Random(spec.seed);
  const d = design(spec, r);
  const needles = d.needles.map((n) => ({ ...n, text: capitalise(n.text, spec.style) }));
  const question = capitalise(d.question, spec.style);
  const fixed = spec.countTokens(question) + needles.reduce((a, n) => a + spec.countTokens(n.text), 0);
  const budget = spec.length - fixed;
  if (budget < 0) throw new RangeError(`a ${spec.kind} sample needs more than ${spec.length} tokens for its needles and question alone`);
  const sentences: string[] = [];
  let used = 0;
  for (;;) {
    const s = fillerSentence(r, spec.style);
    const n = spec.countTokens(s);
    if (used + n > budget) break;
    sentences.push(s);
    used += n;
  }
  // Needles go in at the sentence boundary nearest their depth, in the order given.
  const at = needles.map((n) => Math.round(n.depth * sentences.length));
  let prompt = '';
  let haystackChars = 0;
  let needle: [number, number] = [0, 0];
  let targetHaystackOffset = 0;
  for (let i = 0; i <= sentences.length; i++) {
    needles.forEach((n, k) => {
      if (at[k] !== i) return;
      if (n.target) { needle = [prompt.length, prompt.length + n.text.length]; targetHaystackOffset = haystackChars; }
      prompt += n.text;
    });
    if (i < sentences.length) { prompt += sentences[i]; haystackChars += sentences[i].length; }
  }
  prompt += question;
  return {
    kind: spec.kind, prompt, answers: d.answers, needle,
    actualDepth: haystackChars ? targetHaystackOffset / haystackChars : 0, maxNewTokens: d.maxNewTokens,
  };
}
