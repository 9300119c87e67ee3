// Runs `duet bench` in-process for the bench smoke tests: a fresh --out directory, stdout captured,
// results.json parsed.
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchCommand } from '../../src/cli/bench.ts';
import type { BenchResults } from '../../src/bench/types.ts';

export const finitePositive = (v: unknown, what: string) => assert.ok(typeof v === 'number' && Number.isFinite(v) && v > 0, `${what} = ${v}`);

export async function runBenchCli(args: string[]): Promise<{ code: number; stdout: string; out: string; results: BenchResults }> {
  const out = mkdtempSync(join(tmpdir(), 'duet-bench-'));
  const write = process.stdout.write.bind(process.stdout);
  let stdout = '';
  process.stdout.write = ((chunk: string | Uint8Array) => { stdout += String(chunk); return true; }) as typeof process.stdout.write;
  let code: number;
  try {
    code = await benchCommand([...args, '--out', out]);
  } finally { process.stdout.write = write; }
  const results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as BenchResults;
  return { code, stdout, out, results };
}
