// Haystack text: sentences from a small random grammar. Locally predictable (a model learns the
// grammar from the last few words) but carrying no long-range information, so answering a question
// about a needle needs attention that reaches back to it. Two styles: lowercase (the bundled model's
// character vocabulary) and capitalised English (other models' tokenizers).
import type { Random } from './random.js';

const DETERMINERS = ['the', 'a', 'every', 'one', 'this', 'that', 'some'];
const ADJECTIVES = ['green', 'small', 'quiet', 'old', 'bright', 'heavy', 'slow', 'warm', 'tall', 'calm', 'red', 'young'];
const NOUNS = ['river', 'farmer', 'bird', 'garden', 'stone', 'teacher', 'window', 'horse', 'cloud', 'road', 'boat',
  'village', 'tree', 'child', 'market', 'lamp', 'field', 'baker', 'bridge', 'letter'];
const VERBS = ['sees', 'follows', 'finds', 'carries', 'watches', 'visits', 'paints', 'likes', 'passes', 'builds', 'hears', 'keeps'];
const ADVERBS = ['slowly', 'today', 'again', 'quietly', 'often', 'there', 'at noon', 'in spring'];

export type FillerStyle = 'grammar' | 'english';

/** Words passkeys are made of in the identification data (DuoAttention uses random words). */
export const PASSKEY_WORDS: readonly string[] = [...NOUNS, ...ADJECTIVES];

function nounPhrase(r: Random): string {
  const adj = r.next() < 0.4 ? `${r.pick(ADJECTIVES)} ` : '';
  return `${r.pick(DETERMINERS)} ${adj}${r.pick(NOUNS)}`;
}

/** One sentence with its trailing space, e.g. "the old farmer finds a bridge today. ". */
export function fillerSentence(r: Random, style: FillerStyle): string {
  const adverb = r.next() < 0.3 ? ` ${r.pick(ADVERBS)}` : '';
  const s = `${nounPhrase(r)} ${r.pick(VERBS)} ${nounPhrase(r)}${adverb}.`;
  return `${style === 'english' ? s[0].toUpperCase() + s.slice(1) : s} `;
}
