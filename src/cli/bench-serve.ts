// `duet bench --suite serve`: `duet serve`'s throughput and latency. A server runs in this process
// on 127.0.0.1 for each placement; clients stream chat completions over HTTP (SSE) at each
// concurrency; reported: requests/s, completion tokens/s and time to first token (p50, p99, from
// sending the request to its first content chunk, queueing included). Writes JSON and a table.
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadModel, type Placement } from '../node.js';
import { DuetServer } from '../server/server.js';
import { intOption, numberList, threadsOption } from './options.js';
import { isSoftwareGpu, machineInfo } from '../bench/machine.js';

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

export interface ServeRow {
  placement: Placement;
  device: string;
  software_gpu: boolean;
  concurrency: number;
  requests: number;
  seconds: number;
  requests_per_s: number;
  completion_tokens: number;
  tokens_per_s: number;
  ttft_ms_p50: number;
  ttft_ms_p99: number;
}

function percentile(sorted: number[], p: number): number {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[i];
}

/** One streamed request: time to the first content chunk and the completion tokens (from usage). */
async function streamOne(url: string, content: string, maxTokens: number): Promise<{ ttftMs: number; tokens: number }> {
  const t0 = performance.now();
  const r = await fetch(`${url}/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content }], max_tokens: maxTokens, temperature: 0, stream: true, stream_options: { include_usage: true } }),
  });
  if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
  let ttftMs = 0, tokens = 0, buffer = '';
  const decoder = new TextDecoder();
  for await (const part of r.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(part, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
      const chunk = JSON.parse(event.slice(6));
      if (!ttftMs && chunk.choices?.[0]?.delta?.content) ttftMs = performance.now() - t0;
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
    }
  }
  return { ttftMs, tokens };
}

export async function serveBenchCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: argv, options, strict: true });
  const model = v.model ?? 'fixtures/duet-passkey';
  const pattern = v.pattern ?? (v.model === undefined ? 'fixtures/duet-passkey-pattern' : undefined);
  const sparsity = v.sparsity === undefined ? (pattern ? 0.5 : undefined) : Number(v.sparsity);
  const placements = (v.placements ?? 'cpu,split').split(',').map((p) => {
    if (!['cpu', 'split', 'gpu'].includes(p)) throw new Error(`--placements: "${p}" is not cpu, split or gpu`);
    return p as Placement;
  });
  const levels = numberList(v.concurrency ?? '1,4,16', '--concurrency', (n) => Number.isInteger(n) && n >= 1, 'a positive integer');
  const requests = intOption(v.requests, '--requests', 1) ?? 32;
  const promptChars = intOption(v['prompt-chars'], '--prompt-chars', 1) ?? 256;
  const maxTokens = intOption(v['max-tokens'], '--max-tokens', 1) ?? 32;
  const threads = threadsOption(v.threads);
  const outDir = v.out ?? 'bench-results';
  const say = (m: string) => process.stderr.write(`duet bench serve: ${m}\n`);
  // Prompts the bundled model continues to max_tokens (no early end-of-sequence), all different.
  const base = 'the grass is green. the sky is blue. the sun is warm. ';
  const prompts = Array.from({ length: requests }, (_, i) => `${i} ${base.repeat(Math.ceil(promptChars / base.length))}`.slice(0, promptChars));

  const rows: ServeRow[] = [];
  let gpu: string | null = null;
  for (const placement of placements) {
    const notices: string[] = [];
    const m = await loadModel(model, {
      pattern, sparsity, placement, device: placement === 'cpu' ? 'cpu' : 'gpu', threads, notice: (n) => notices.push(n),
    });
    const server = new DuetServer(m, { port: 0, maxQueue: Math.max(...levels) + 1 });
    const address = await server.listen();
    const url = `http://127.0.0.1:${address.port}/v1`;
    const software = placement !== 'cpu' && isSoftwareGpu(m.info.device);
    if (placement !== 'cpu') gpu = m.info.device;
    try {
      await streamOne(url, prompts[0], 4); // warm-up (pipelines, JIT)
      for (const c of levels) {
        const ttfts: number[] = [];
        let tokens = 0, next = 0;
        const t0 = performance.now();
        await Promise.all(Array.from({ length: c }, async () => {
          while (next < requests) {
            const r = await streamOne(url, prompts[next++], maxTokens);
            ttfts.push(r.ttftMs);
            tokens += r.tokens;
          }
        }));
        const seconds = (performance.now() - t0) / 1000;
        ttfts.sort((a, b) => a - b);
        const row: ServeRow = {
          placement: m.info.placement, device: m.info.device, software_gpu: software, concurrency: c, requests, seconds,
          requests_per_s: requests / seconds, completion_tokens: tokens, tokens_per_s: tokens / seconds,
          ttft_ms_p50: percentile(ttfts, 0.5), ttft_ms_p99: percentile(ttfts, 0.99),
        };
        rows.push(row);
        say(`${row.placement} c=${c}: ${row.requests_per_s.toFixed(1)} req/s, ${row.tokens_per_s.toFixed(0)} tokens/s, TTFT p50 ${row.ttft_ms_p50.toFixed(1)} ms p99 ${row.ttft_ms_p99.toFixed(1)} ms`);
      }
    } finally {
      await server.close();
      await m.dispose();
    }
  }
  const result = {
    suite: 'serve', model, pattern: pattern ?? null, sparsity: sparsity ?? null, requests, prompt_chars: promptChars, max_tokens: maxTokens, threads,
    machine: machineInfo(gpu, gpu ? '' : 'CPU placement only'), note: 'requests run one at a time (the server queues them): concurrency raises TTFT, not throughput; split rows on a software GPU (software_gpu) say nothing about GPU speed',
    rows,
  };
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, 'serve.json');
  writeFileSync(`${file}.tmp`, `${JSON.stringify(result, null, 1)}\n`);
  renameSync(`${file}.tmp`, file);
  if (v.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else {
    process.stdout.write('| placement | concurrency | requests/s | tokens/s | TTFT p50 (ms) | TTFT p99 (ms) |\n|---|---:|---:|---:|---:|---:|\n');
    for (const r of rows) {
      process.stdout.write(`| ${r.placement}${r.software_gpu ? ' (software GPU: not a speed)' : ''} | ${r.concurrency} | ${r.requests_per_s.toFixed(1)} | ${r.tokens_per_s.toFixed(0)} | ${r.ttft_ms_p50.toFixed(1)} | ${r.ttft_ms_p99.toFixed(1)} |\n`);
    }
    process.stdout.write(`results: ${file}\n`);
  }
  return 0;
}
