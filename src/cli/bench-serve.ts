// `duet bench --suite serve`: runServeBenchmark (src/node/bench-serve.ts) with flags; serve.json in
// --out and a Markdown table.
import { parseArgs } from 'node:util';
import { runServeBenchmark, serveReportText, type Placement } from '../node.js';
import { intOption, numberList, threadsOption } from './options.js';

const options = {
  suite: { type: 'string' },
  model: { type: 'string' },
  pattern: { type: 'string' },
  sparsity: { type: 'string' },
  placements: { type: 'string' },
  concurrency: { type: 'string' },
  requests: { type: 'string' },
  'prompt-chars': { type: 'string' },
  'max-tokens': { type: 'string' },
  threads: { type: 'string' },
  out: { type: 'string' },
  json: { type: 'boolean' },
} as const;

export async function serveBenchCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: argv, options, strict: true });
  const placements = v.placements?.split(',').map((p) => {
    if (!['cpu', 'split', 'gpu'].includes(p)) throw new Error(`--placements: "${p}" is not cpu, split or gpu`);
    return p as Placement;
  });
  const r = await runServeBenchmark({
    model: v.model, pattern: v.pattern, sparsity: v.sparsity === undefined ? undefined : Number(v.sparsity), placements,
    concurrency: v.concurrency === undefined ? undefined : numberList(v.concurrency, '--concurrency', (n) => Number.isInteger(n) && n >= 1, 'a positive integer'),
    requests: intOption(v.requests, '--requests', 1), promptChars: intOption(v['prompt-chars'], '--prompt-chars', 1),
    maxTokens: intOption(v['max-tokens'], '--max-tokens', 1), threads: threadsOption(v.threads), out: v.out ?? 'bench-results',
    notice: (m) => process.stderr.write(`duet bench serve: ${m}\n`),
  });
  const { files, ...result } = r;
  if (v.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else process.stdout.write(`${serveReportText(r)}\nresults: ${files[0]}\n`);
  return 0;
}
