// Scoring of generated answers. Exact match: the first word of the prediction (punctuation trimmed)
// is the answer. Multi-answer tasks: the fraction of expected strings that appear as whole words.
import type { TaskKind } from '../tasks/tasks.js';

function words(text: string): string[] {
  return text.toLowerCase().split(/[^a-z0-9]+/).filter(Boolean);
}

export function exactMatch(prediction: string, answer: string): number {
  return words(prediction)[0] === answer.toLowerCase() ? 1 : 0;
}

export function fractionFound(prediction: string, answers: string[]): number {
  const found = new Set(words(prediction));
  return answers.filter((a) => found.has(a.toLowerCase())).length / answers.length;
}

export function score(kind: TaskKind, prediction: string, answers: string[]): number {
  return kind === 'niah-multivalue' || kind === 'vt' ? fractionFound(prediction, answers) : exactMatch(prediction, answers[0]);
}
