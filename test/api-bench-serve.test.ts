// runServeBenchmark (the Node entry; `duet bench --suite serve`'s library call), tiny: the bundled
// model served in process on the CPU, streamed requests at two concurrencies; every request is
// counted, its tokens add up, and the report has a row per run. Measures nothing (no timings asserted).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuetError, runServeBenchmark, serveReportText } from '../src/node.ts';

const ROOT = new URL('..', import.meta.url).pathname;

test('runServeBenchmark: one row per placement and concurrency, every request and token counted, serve.json written', async () => {
  const out = mkdtempSync(join(tmpdir(), 'duet-bench-serve-'));
  const notices: string[] = [];
  const r = await runServeBenchmark({
    model: `${ROOT}fixtures/duet-passkey`, pattern: `${ROOT}fixtures/duet-passkey-pattern`, sparsity: 0.5, placements: ['cpu'],
    concurrency: [1, 3], requests: 5, promptChars: 40, maxTokens: 4, threads: 1, out, notice: (m) => notices.push(m),
  });
  assert.equal(r.rows.map((x) => [x.placement, x.concurrency, x.requests]), [['cpu', 1, 5], ['cpu', 3, 5]]);
  // The prompts run to max_tokens (the bundled model does not end them early): 5 × 4 tokens.
  for (const x of r.rows) {
    assert.is(x.completion_tokens, 20);
    assert.ok(x.requests_per_s > 0 && x.ttft_ms_p50 > 0 && x.ttft_ms_p50 <= x.ttft_ms_p99, JSON.stringify(x));
  }
  assert.is(notices.length, 2);
  assert.equal(r.files, [join(out, 'serve.json')]);
  assert.equal(JSON.parse(readFileSync(r.files[0], 'utf8')).rows, r.rows);
  assert.is(serveReportText(r).split('\n').length, 4);
});

test('runServeBenchmark: bad options are DuetErrors naming the option, before any model is loaded', async () => {
  for (const [opts, field] of [[{ placements: ['tpu'] }, 'placements'], [{ concurrency: [0] }, 'concurrency'], [{ requests: 1.5 }, 'requests'], [{ maxTokens: 0 }, 'maxTokens']] as const) {
    const e = await runServeBenchmark({ model: '/nonexistent', ...opts } as never).catch((x) => x);
    assert.instance(e, DuetError, String(e));
    assert.is(e.field, field);
  }
});

test.run();
