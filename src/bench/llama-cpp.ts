// llama.cpp as a peer engine through the optional npm package node-llama-cpp (its prebuilt CPU
// binaries ship as npm packages; nothing is downloaded or built at run time: build 'never').
// Node-only; imported lazily so nothing else needs the package.

export const NODE_LLAMA_CPP_MISSING = 'node-llama-cpp is not installed (it is an optional dependency: npm install --include=optional, or npm install node-llama-cpp@3.22.1)';

/* eslint-disable @typescript-eslint/no-explicit-any */
type Any = any;

export interface LlamaCppRun {
  /** llama.cpp's build, as node-llama-cpp reports it. */
  version: string;
  /** Greedy continuation of `ids` (temperature 0), `n` tokens. */
  greedy(ids: number[], n: number): Promise<number[]>;
  /**
   * Prefill `ids` into a fresh sequence, then decode greedily: the prefill's wall time and each of
   * `decodeTokens` decoded tokens' wall times in ms, after `warmupTokens` untimed ones.
   */
  time(ids: number[], decodeTokens: number, warmupTokens?: number): Promise<{ prefillMs: number; decodeMsSamples: number[] }>;
  dispose(): Promise<void>;
}

/** node-llama-cpp's module, or null when the optional package is absent. */
export async function importNodeLlamaCpp(): Promise<Any | null> {
  try {
    return await import(/* webpackIgnore: true */ 'node-llama-cpp' as string);
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_MODULE_NOT_FOUND') return null;
    throw e;
  }
}

/** Loads a GGUF file in llama.cpp on the CPU with `threads` threads and room for `contextSize` tokens. */
export async function openLlamaCpp(file: string, options: { threads: number; contextSize: number; batchSize?: number }): Promise<LlamaCppRun> {
  const mod = await importNodeLlamaCpp();
  if (!mod) throw new Error(NODE_LLAMA_CPP_MISSING);
  const llama = await mod.getLlama({ gpu: false, build: 'never', logLevel: mod.LlamaLogLevel.error, progressLogs: false });
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  const batch = Math.min(options.batchSize ?? 512, options.contextSize);
  let context = await model.createContext({ contextSize: options.contextSize, threads: options.threads, batchSize: batch, sequences: 1 });
  const fresh = async () => { await context.dispose(); context = await model.createContext({ contextSize: options.contextSize, threads: options.threads, batchSize: batch, sequences: 1 }); return context.getSequence(); };
  const version = String(llama.llamaCppRelease?.release ?? 'unknown');
  return {
    version,
    async greedy(ids, n) {
      const seq = await fresh();
      const out: number[] = [];
      for await (const t of seq.evaluate(ids, { temperature: 0 })) { out.push(t); if (out.length >= n) break; }
      return out;
    },
    async time(ids, decodeTokens, warmupTokens = 0) {
      const seq = await fresh();
      const t0 = performance.now();
      await seq.evaluateWithoutGeneratingNewTokens(ids.slice(0, -1));
      const prefillMs = performance.now() - t0;
      // The first token yielded finishes the prompt's last position; each later one is one decode step.
      // Per-token times (not one mean) so that the report can take the median: on a loaded machine a
      // thread of llama.cpp's pool that loses its core stalls single steps by 10x and more.
      const samples: number[] = [];
      let last = 0, yielded = 0;
      for await (const _ of seq.evaluate(ids.slice(-1), { temperature: 0 })) {
        void _;
        const now = performance.now();
        if (yielded > warmupTokens) samples.push(now - last);
        last = now;
        if (++yielded > warmupTokens + decodeTokens) break;
      }
      return { prefillMs, decodeMsSamples: samples };
    },
    async dispose() { await context.dispose(); await model.dispose(); await llama.dispose(); },
  };
}
