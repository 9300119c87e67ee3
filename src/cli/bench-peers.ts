// `duet bench --suite peers`: Duet against llama.cpp (node-llama-cpp, CPU) on the same GGUF file per
// weight format, the same prompt token ids and the same threads: prefill tokens/s and decode
// ms/token per context, Duet with full attention and DuoAttention (CPU placement), and how many
// leading greedy tokens the two engines agree on at F32.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { allHeads } from '../attention/pattern.js';
import { Engine } from '../engine/engine.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import type { ModelConfig } from '../model/config.js';
import { encodeMatrix } from '../model/gguf-encode.js';
import { ggufChunks } from '../model/gguf-write.js';
import { ValueType, type GgufWriteValue } from '../model/gguf.js';
import { TOKEN_TYPE, byteLevelAlphabet } from '../model/gguf-tokenizer.js';
import type { WeightDType } from '../model/quant.js';
import type { ModelWeights } from '../model/weights.js';
import { nodeModelFiles } from '../node/files.js';
import { writeFileAtomic } from '../node/atomic-write.js';
import { startNodeKernelWorker } from '../node/kernel-threads.js';
import { runE2e } from '../bench/e2e.js';
import { CpuPool, headConfigs } from '../bench/engines.js';
import { importNodeLlamaCpp, NODE_LLAMA_CPP_MISSING, openLlamaCpp } from '../bench/llama-cpp.js';
import { randomIds } from '../bench/random-weights.js';
import type { MachineInfo } from '../bench/types.js';
import { lineChart } from '../plot/svg.js';

export interface PeerRow {
  format: WeightDType;
  engine: 'llama.cpp' | 'duet';
  heads: string;
  context: number;
  prefill_tok_s: number | null;
  prefill_method: 'measured' | 'estimated' | null;
  decode_ms_per_token: number | null;
  error?: string;
}

export interface PeerOptions {
  config: ModelConfig;
  weights: ModelWeights;
  alphas: number[][];
  window: { sink: number; recent: number };
  formats: WeightDType[];
  contexts: number[];
  sparsities: number[];
  threads: number;
  chunk: number;
  prefillMax: number;
  decodeTokens: number;
  warmupTokens: number;
  seed: number;
  agreeTokens: number;
  outDir: string;
  machine: MachineInfo;
  command: string;
  notes: string[];
  say: (m: string) => void;
}

/** A byte-level vocabulary of `n` tokens (256 bytes, then placeholders) so llama.cpp accepts the file. */
function syntheticTokenizer(n: number): Array<[string, GgufWriteValue]> {
  const bytes = byteLevelAlphabet();
  const tokens = Array.from({ length: n }, (_, i) => (i < 256 ? bytes[i] : `[T${i}]`));
  const types = tokens.map((_, i) => (i < 256 ? TOKEN_TYPE.normal : TOKEN_TYPE.userDefined));
  return [
    ['tokenizer.ggml.model', { type: ValueType.STRING, value: 'gpt2' }],
    ['tokenizer.ggml.pre', { type: ValueType.STRING, value: 'gpt-2' }],
    ['tokenizer.ggml.tokens', { type: ValueType.ARRAY, itemType: ValueType.STRING, value: tokens }],
    ['tokenizer.ggml.token_type', { type: ValueType.ARRAY, itemType: ValueType.I32, value: types }],
    ['tokenizer.ggml.merges', { type: ValueType.ARRAY, itemType: ValueType.STRING, value: [] }],
    ['tokenizer.ggml.add_bos_token', { type: ValueType.BOOL, value: false }],
  ];
}

const argmax = (a: Float32Array) => { let b = 0; for (let i = 1; i < a.length; i++) if (a[i] > a[b]) b = i; return b; };
function margin(a: Float32Array): number {
  let m1 = -Infinity, m2 = -Infinity;
  for (const v of a) { if (v > m1) { m2 = m1; m1 = v; } else if (v > m2) m2 = v; }
  return m1 - m2;
}

export async function runPeers(o: PeerOptions): Promise<{ rows: PeerRow[]; agreement: Record<string, unknown> | null; files: string[] }> {
  const mod = await importNodeLlamaCpp();
  if (!mod) throw new Error(`--suite peers: ${NODE_LLAMA_CPP_MISSING}`);
  mkdirSync(o.outDir, { recursive: true });
  const rows: PeerRow[] = [];
  let agreement: Record<string, unknown> | null = null;
  const maxCtx = Math.max(...o.contexts);
  const ids = randomIds(maxCtx + o.decodeTokens * 4 + o.chunk + 64, o.config.vocabSize, o.seed);
  const tokenizer = syntheticTokenizer(o.config.vocabSize);
  const config = { ...o.config, maxPositionEmbeddings: Math.max(o.config.maxPositionEmbeddings, maxCtx + 4 * o.decodeTokens + 64) };
  let llamaVersion = '';
  for (const format of o.formats) {
    const file = join(o.outDir, `peers-${format}.gguf`);
    o.say(`${format}: writing ${file}`);
    const fell = new Set<string>();
    await writeFileAtomic(file, ggufChunks(config, o.weights, { name: 'duet-peers', type: format, encode: encodeMatrix, tokenizer, onFallback: (t, _f, to) => fell.add(`${t} → ${to}`) }), { force: true });
    if (fell.size) o.notes.push(`${format}: ${fell.size} tensors fell back (${[...fell].slice(0, 3).join(', ')}${fell.size > 3 ? ', …' : ''})`);
    // Duet reads the same file and keeps each tensor's format (its packed CPU kernels run it).
    const ckpt = await loadCheckpoint(nodeModelFiles(file));
    const duetConfig = { ...ckpt.config, maxPositionEmbeddings: config.maxPositionEmbeddings };

    o.say(`${format}: llama.cpp`);
    const llama = await openLlamaCpp(file, { threads: o.threads, contextSize: maxCtx + o.decodeTokens + 8, batchSize: o.chunk });
    llamaVersion = llama.version;
    try {
      if (format === 'f32') {
        const prompt = ids.slice(0, 64);
        const theirs = await llama.greedy(prompt, o.agreeTokens);
        const pool = new CpuPool({ threads: o.threads, startWorker: startNodeKernelWorker });
        const engine = await Engine.create(duetConfig, ckpt.weights, { device: 'cpu', placement: 'cpu', kinds: allHeads(config.numLayers, config.numKvHeads, true), window: o.window, createCpu: () => pool.lease() });
        const ours: number[] = [], margins: number[] = [];
        try {
          const s = engine.newSession(prompt.length + o.agreeTokens + 1, o.chunk);
          let logits = await s.forward(prompt);
          for (let i = 0; i < o.agreeTokens; i++) {
            const t = argmax(logits);
            ours.push(t); margins.push(margin(logits));
            logits = await s.forward([t]);
          }
          s.dispose();
        } finally { engine.dispose(); pool.close(); }
        let agree = 0;
        while (agree < ours.length && ours[agree] === theirs[agree]) agree++;
        agreement = { format, prompt_tokens: prompt.length, tokens: o.agreeTokens, leading_agree: agree, duet: ours, llama_cpp: theirs, duet_min_top2_margin: Math.min(...margins), margin_at_first_difference: agree < ours.length ? margins[agree] : null };
      }
      for (const context of o.contexts) {
        o.say(`${format}: llama.cpp @${context}`);
        try {
          const t = await llama.time(ids.slice(0, context + 1), o.decodeTokens);
          rows.push({ format, engine: 'llama.cpp', heads: 'full', context, prefill_tok_s: context / (t.prefillMs / 1000), prefill_method: 'measured', decode_ms_per_token: t.decodeMsPerToken });
        } catch (e) {
          rows.push({ format, engine: 'llama.cpp', heads: 'full', context, prefill_tok_s: null, prefill_method: null, decode_ms_per_token: null, error: (e as Error).message });
        }
      }
    } finally { await llama.dispose(); }

    o.say(`${format}: duet`);
    const pool = new CpuPool({ threads: o.threads, startWorker: startNodeKernelWorker });
    try {
      const e2e = await runE2e({
        factory: { config: duetConfig, weights: ckpt.weights, window: o.window, pool },
        heads: headConfigs(duetConfig, o.alphas, o.sparsities), placements: ['cpu'], contexts: o.contexts, chunk: o.chunk,
        prefillMax: o.prefillMax, decodeTokens: o.decodeTokens, warmupTokens: o.warmupTokens, seed: o.seed,
        onProgress: (_d, _t, detail) => o.say(`${format}: duet ${detail}`),
      });
      for (const r of e2e) {
        rows.push({ format, engine: 'duet', heads: r.heads === 'full' ? 'full' : `duo@${r.sparsity}`, context: r.context,
          prefill_tok_s: r.prefill_ms ? r.context / (r.prefill_ms / 1000) : null, prefill_method: r.prefill_method,
          decode_ms_per_token: r.decode_ms_per_token, ...(r.error ? { error: r.error } : {}) });
      }
    } finally { pool.close(); }
  }
  const results = {
    version: 1, created: new Date().toISOString(), command: o.command, machine: o.machine, llama_cpp: { package: 'node-llama-cpp@3.22.1', release: llamaVersion },
    model: { layers: config.numLayers, hidden_size: config.hiddenSize, intermediate_size: config.intermediateSize, num_heads: config.numHeads, num_kv_heads: config.numKvHeads, vocab_size: config.vocabSize },
    settings: { formats: o.formats, contexts: o.contexts, sparsities: o.sparsities, threads: o.threads, prefill_chunk: o.chunk, prefill_max: o.prefillMax, decode_tokens: o.decodeTokens },
    notes: o.notes, agreement, rows,
  };
  const files = [join(o.outDir, 'peers.json'), join(o.outDir, 'peers-decode.svg')];
  writeFileSync(files[0], `${JSON.stringify(results, null, 1)}\n`);
  const series = new Map<string, Array<[number, number]>>();
  for (const r of rows) {
    if (r.decode_ms_per_token === null) continue;
    const key = `${r.engine === 'duet' ? `duet ${r.heads}` : 'llama.cpp'} ${r.format}`;
    series.set(key, [...(series.get(key) ?? []), [r.context, r.decode_ms_per_token]]);
  }
  writeFileSync(files[1], lineChart([...series].map(([label, points]) => ({ label, points })), { title: `decode: Duet vs llama.cpp (CPU, ${o.threads} threads)`, xLabel: 'context (tokens)', yLabel: 'ms per token', logX: true, height: 480 }));
  return { rows, agreement, files };
}

export function renderPeers(rows: PeerRow[], agreement: Record<string, unknown> | null): string {
  const lines = ['format  engine      heads     context  prefill tok/s  decode ms/tok  vs llama.cpp'];
  for (const r of rows) {
    const ref = rows.find((x) => x.engine === 'llama.cpp' && x.format === r.format && x.context === r.context);
    const ratio = r.engine === 'duet' && ref?.decode_ms_per_token && r.decode_ms_per_token ? `${(r.decode_ms_per_token / ref.decode_ms_per_token).toFixed(2)}x` : '';
    lines.push([r.format.padEnd(7), r.engine.padEnd(11), r.heads.padEnd(9), String(r.context).padStart(7),
      (r.prefill_tok_s === null ? '-' : `${r.prefill_tok_s.toFixed(0)}${r.prefill_method === 'estimated' ? '*' : ''}`).padStart(14),
      (r.decode_ms_per_token === null ? (r.error ?? '-') : r.decode_ms_per_token.toFixed(2)).padStart(14), ratio.padStart(12)].join(' '));
  }
  lines.push('(* prefill estimated from the first and last chunk, as the e2e suite does; ratio = Duet ms/token ÷ llama.cpp ms/token)');
  if (agreement) lines.push(`greedy agreement at f32: ${agreement.leading_agree} of ${agreement.tokens} leading tokens (Duet's smallest top-2 logit margin ${Number(agreement.duet_min_top2_margin).toFixed(3)})`);
  return lines.join('\n');
}
