// The server benchmark as a library call: throughput and latency of DuetServer (the server behind
// `duet serve`). A server runs in this process on 127.0.0.1 for each placement; clients stream chat
// completions over HTTP (SSE) at each concurrency; measured: requests/s, completion tokens/s and
// time to first token (p50, p99, from sending the request to its first content chunk, queueing
// included). `duet bench --suite serve` is its CLI.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { isSoftwareGpu, machineInfo } from '../bench/machine.js';
import type { MachineInfo } from '../bench/types.js';
import type { Placement } from '../engine/engine.js';
import { DuetError } from '../errors.js';
import { loadModel } from './load-model.js';
import { DuetServer } from '../server/server.js';
import { writeFileAtomic } from './atomic.js';
import { int, positiveInts } from './bench.js';

export interface ServeBenchmarkOptions {
  /** A model folder (default the bundled fixtures/duet-passkey, with its pattern at sparsity 0.5). */
  model?: string;
  pattern?: string;
  sparsity?: number;
  /** Default cpu, split. */
  placements?: Placement[];
  /** Concurrent clients per run (default 1, 4, 16). */
  concurrency?: number[];
  /** Requests per run (default 32). */
  requests?: number;
  /** Characters per prompt (default 256). */
  promptChars?: number;
  /** max_tokens of each request (default 32). */
  maxTokens?: number;
  threads?: number;
  /** A folder to write serve.json to (created if missing); default: nothing written. */
  out?: string;
  /** Each run's numbers as it ends. */
  notice?: (message: string) => void;
}

export interface ServeResults {
  suite: 'serve';
  model: string;
  pattern: string | null;
  sparsity: number | null;
  requests: number;
  prompt_chars: number;
  max_tokens: number;
  threads: number | undefined;
  machine: MachineInfo;
  note: string;
  rows: ServeRow[];
}

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

export async function runServeBenchmark(o: ServeBenchmarkOptions = {}): Promise<ServeResults & { files: string[] }> {
  const model = o.model ?? 'fixtures/duet-passkey';
  const pattern = o.pattern ?? (o.model === undefined ? 'fixtures/duet-passkey-pattern' : undefined);
  const sparsity = o.sparsity ?? (pattern ? 0.5 : undefined);
  const placements = o.placements ?? ['cpu', 'split'];
  if (!Array.isArray(placements) || placements.length === 0) throw new DuetError('placements', 'must be a non-empty list');
  for (const p of placements) if (!['cpu', 'split', 'gpu'].includes(p)) throw new DuetError('placements', `${JSON.stringify(p)} is not cpu, split or gpu`);
  const levels = positiveInts(o.concurrency, [1, 4, 16], 'concurrency', 1);
  const requests = int(o.requests, 'requests', 1, 32);
  const promptChars = int(o.promptChars, 'promptChars', 1, 256);
  const maxTokens = int(o.maxTokens, 'maxTokens', 1, 32);
  const threads = o.threads === undefined ? undefined : int(o.threads, 'threads', 1, 1);
  const say = o.notice ?? (() => {});
  // Prompts the bundled model continues to max_tokens (no early end-of-sequence), all different.
  const base = 'the grass is green. the sky is blue. the sun is warm. ';
  const prompts = Array.from({ length: requests }, (_, i) => `${i} ${base.repeat(Math.ceil(promptChars / base.length))}`.slice(0, promptChars));

  const rows: ServeRow[] = [];
  let gpu: string | null = null;
  for (const placement of placements) {
    const m = await loadModel(model, { pattern, sparsity, placement, device: placement === 'cpu' ? 'cpu' : 'gpu', threads });
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
  const result: ServeResults = {
    suite: 'serve', model, pattern: pattern ?? null, sparsity: sparsity ?? null, requests, prompt_chars: promptChars, max_tokens: maxTokens, threads,
    machine: machineInfo(gpu, gpu ? '' : 'CPU placement only'), note: 'requests run one at a time (the server queues them): concurrency raises TTFT, not throughput; split rows on a software GPU (software_gpu) say nothing about GPU speed',
    rows,
  };
  const files: string[] = [];
  if (o.out !== undefined) {
    mkdirSync(o.out, { recursive: true });
    files.push(join(o.out, 'serve.json'));
    writeFileAtomic(files[0], `${JSON.stringify(result, null, 1)}\n`);
  }
  return { ...result, files };
}

/** The rows as a Markdown table (as in the README). */
export function serveReportText(r: Pick<ServeResults, 'rows'>): string {
  return ['| placement | concurrency | requests/s | tokens/s | TTFT p50 (ms) | TTFT p99 (ms) |', '|---|---:|---:|---:|---:|---:|',
    ...r.rows.map((x) => `| ${x.placement}${x.software_gpu ? ' (software GPU: not a speed)' : ''} | ${x.concurrency} | ${x.requests_per_s.toFixed(1)} | ${x.tokens_per_s.toFixed(0)} | ${x.ttft_ms_p50.toFixed(1)} | ${x.ttft_ms_p99.toFixed(1)} |`)].join('\n');
}
