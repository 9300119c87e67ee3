// Task prompts for a tokenizer: the filler style it can spell, token counts, and a task sample whose
// prompt has an exact token length (the evaluation loop itself is src/api/evaluate.ts).
import type { TextTokenizer } from '../model/tokenizer.js';
import { fillerSentence, type FillerStyle } from '../tasks/filler.js';
import { Random } from '../tasks/random.js';
import { generateSample, type TaskKind, type TaskSample } from '../tasks/tasks.js';

/** The filler that suits a tokenizer: lowercase grammar when it cannot spell capitals (the bundled model). */
export function fillerStyleFor(tokenizer: TextTokenizer): FillerStyle {
  const probe = 'The Pass Key';
  return tokenizer.decode(tokenizer.encode(probe, { addSpecialTokens: false })) === probe ? 'english' : 'grammar';
}

/** Token count of a text (no special tokens), memoised: task generators ask for the same filler often. */
export function tokenCounter(tokenizer: TextTokenizer): (text: string) => number {
  const counts = new Map<string, number>();
  return (text) => {
    let n = counts.get(text);
    if (n === undefined) { n = tokenizer.encode(text, { addSpecialTokens: false }).length; counts.set(text, n); }
    return n;
  };
}

/** A task sample whose prompt, with the tokenizer's special tokens (BOS), is `length` tokens; and its ids. */
export function taskPrompt(tokenizer: TextTokenizer, spec: { kind: TaskKind; length: number; depth: number; seed: number; style: FillerStyle },
  countTokens = tokenCounter(tokenizer)): { sample: TaskSample; ids: number[] } {
  const bos = tokenizer.encode('', { addSpecialTokens: true }).length;
  const sample = generateSample({ ...spec, length: spec.length - bos, countTokens });
  return { sample, ids: tokenizer.encode(sample.prompt, { addSpecialTokens: true }) };
}

/**
 * Held-out text for perplexity: `length` token ids (BOS included) of haystack sentences drawn from
 * seed `seed`, cut at a token boundary. The trainer draws its haystacks from its own seeded stream,
 * so these are new sentences of the same grammar: they measure how well the model (or a quantized
 * copy of it) predicts its language, not long-range retrieval (the tasks measure that).
 */
export function heldOutText(tokenizer: TextTokenizer, length: number, seed: number, style: FillerStyle): number[] {
  const r = new Random(seed);
  let text = '';
  let ids: number[] = tokenizer.encode(text, { addSpecialTokens: true });
  while (ids.length < length) {
    // Sentences ~10 tokens or more each: add a batch before encoding again.
    for (let k = 0; k < Math.max(1, Math.ceil((length - ids.length) / 40)); k++) text += fillerSentence(r, style);
    ids = tokenizer.encode(text, { addSpecialTokens: true });
  }
  return ids.slice(0, length);
}
