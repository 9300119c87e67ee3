// The memory suite: KV bytes per device as the runtime allocates them (session.kvMemory() after a
// decode step at each context) next to what `duet memory` projects for the same heads and KV dtype,
// plus the process's memory. Like e2e's long prompts, the session starts
// from a synthetic cache (pastLen set, no prefill): allocation does not depend on the values.
import { projectKvMemory } from '../attention/memory.js';
import type { Placement } from '../engine/engine.js';
import { createBenchEngine, placementsFor, type EngineFactory, type HeadConfig } from './engines.js';
import { kvOf } from './e2e.js';
import type { MemoryRow } from './types.js';

export interface ProcessMemory { rss: number; peakRss: number }

export interface MemoryOptions {
  factory: EngineFactory;
  heads: HeadConfig[];
  placements: Placement[];
  contexts: number[];
  /** Resident and peak resident bytes of this process (Node: process.memoryUsage / resourceUsage). */
  processMemory: () => ProcessMemory;
  onProgress?: (done: number, total: number, detail: string) => void;
}

export async function runMemory(o: MemoryOptions): Promise<MemoryRow[]> {
  const { config, window, pool } = o.factory;
  const kvDtype = o.factory.kvDtype ?? 'f32';
  const jobs = o.heads.flatMap((h) => placementsFor(h, o.placements).map((p) => ({ h, p })));
  const total = jobs.length * o.contexts.length;
  const rows: MemoryRow[] = [];
  let done = 0;
  for (const { h, p } of jobs) {
    const label = `${h.label}/${p}`;
    const proj = (context: number) => {
      const m = projectKvMemory(h.kinds, config.headDim, context, window, kvDtype);
      const projected = p === 'split' ? { gpu: m.gpu_bytes, cpu: m.cpu_bytes } : p === 'gpu' ? { gpu: m.duo_bytes, cpu: 0 } : { gpu: 0, cpu: m.duo_bytes };
      return { ...projected, total: m.duo_bytes, full: m.full_bytes };
    };
    const zero = { gpu: 0, cpu: 0, retrieval: 0, streaming: 0, total: 0 };
    let engine;
    try {
      engine = await createBenchEngine(o.factory, h, p);
    } catch (e) {
      for (const context of o.contexts) {
        const mem = o.processMemory();
        rows.push({ label, heads: h.heads, sparsity: h.sparsity, placement: p, kv_dtype: kvDtype, context, measured: zero, projected: proj(context), matches: false,
          wasm_bytes: pool.memoryBytes, rss_bytes: mem.rss, peak_rss_bytes: mem.peakRss, error: (e as Error).message });
      }
      done += o.contexts.length;
      continue;
    }
    try {
      for (const context of o.contexts) {
        o.onProgress?.(done, total, `${label} @${context}`);
        const projected = proj(context);
        let measured = zero, error: string | undefined;
        let mem = o.processMemory(), wasm = pool.memoryBytes;
        try {
          const session = engine.newSession(context, 1);
          try {
            session.pastLen = context - 1;
            await session.forward([0]);
            measured = kvOf(session.kvMemory());
            mem = o.processMemory();
            wasm = pool.memoryBytes;
          } finally { session.dispose(); }
        } catch (e) { error = (e as Error).message; }
        rows.push({
          label, heads: h.heads, sparsity: h.sparsity, placement: p, kv_dtype: kvDtype, context, measured, projected,
          matches: !error && measured.gpu === projected.gpu && measured.cpu === projected.cpu,
          wasm_bytes: wasm, rss_bytes: mem.rss, peak_rss_bytes: mem.peakRss, ...(error ? { error } : {}),
        });
        done++;
      }
    } finally { engine.dispose(); }
  }
  o.onProgress?.(total, total, 'done');
  return rows;
}
