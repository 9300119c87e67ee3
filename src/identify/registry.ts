// The head scorers identification can run, by name (the `method` of identifyHeads and `duet
// identify --method`). A new scorer: a HeadScorer (./scorer.ts) in its module, appended here;
// test/head-scorers.test.ts then runs it too.
import { DuetError } from '../errors.js';
import { duoScorer } from './duo.js';
import { razorScorer, retrievalScorer } from './scores.js';
import type { HeadScorer } from './scorer.js';

export const HEAD_SCORERS: readonly HeadScorer[] = [duoScorer, retrievalScorer, razorScorer];

export function headScorer(name: string): HeadScorer {
  const s = HEAD_SCORERS.find((x) => x.name === name);
  if (!s) throw new DuetError('method', `must be one of ${HEAD_SCORERS.map((x) => x.name).join(', ')} (got ${JSON.stringify(name)})`);
  return s;
}
