// Task prompts for a tokenizer: the filler style it can spell, token counts, and a task sample whose
// prompt has an exact token length (the evaluation loop itself is src/api/evaluate.ts).
import type { TextTokenizer } from '../model/tokenizer.js';
import type { FillerStyle } from '../tasks/filler.js';
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
