// Duet against llama.cpp (node-llama-cpp, CPU) on the same GGUF file per weight format, the same
// prompt token ids and the same threads: prefill tokens/s and decode ms/token per context, Duet with
// full attention and DuoAttention (CPU placement), and how many leading greedy tokens the two
// engines agree on at F32. The library call behind `duet bench --suite peers`; node-llama-cpp is an
// optional package imported only when this runs (never by the browser entry).
import { availableParallelism } from 'node:os';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { allHeads } from '../attention/pattern.js';
import type { StreamingWindow } from '../backend/contract.js';
import { Engine } from '../engine/engine.js';
import { DuetError } from '../errors.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import type { ModelConfig } from '../model/config.js';
import { encodeMatrix } from '../model/gguf-encode.js';
import { ggufChunks } from '../model/gguf-write.js';
import { ValueType, type GgufWriteValue } from '../model/gguf.js';
import { TOKEN_TYPE, byteLevelAlphabet } from '../model/gguf-tokenizer.js';
import { isWeightDType, WEIGHT_DTYPES, type WeightDType } from '../model/quant.js';
import type { ModelWeights } from '../model/weights.js';
import { runE2e, e2eSequenceLength } from '../bench/e2e.js';
import { CpuPool, headConfigs } from '../bench/engines.js';
import { importNodeLlamaCpp, NODE_LLAMA_CPP_MISSING, openLlamaCpp } from '../bench/llama-cpp.js';
import { machineInfo } from '../bench/machine.js';
import { median } from '../bench/timing.js';
import { randomAlphas, randomIds, randomWeights } from '../bench/random-weights.js';
import { benchShape, layersText } from '../bench/shapes.js';
import type { MachineInfo } from '../bench/types.js';
import { lineChart } from '../plot/svg.js';
import { writeChunksAtomic, writeFileAtomic } from './atomic.js';
import { int, positiveInts } from './bench.js';
import { nodeModelFiles } from './files.js';
import { startNodeKernelWorker } from './kernel-threads.js';

export interface PeerRow {
  format: WeightDType;
  engine: 'llama.cpp' | 'duet';
  heads: string;
  context: number;
  prefill_tok_s: number | null;
  prefill_method: 'measured' | 'estimated' | null;
  /** The median of decode_ms_samples (both engines time each decoded token). */
  decode_ms_per_token: number | null;
  decode_ms_samples?: number[];
  error?: string;
}

export interface PeersBenchmarkOptions {
  /** Folder for the GGUF files, peers.json and peers-decode.svg (created if missing; its peers files are replaced). */
  out: string;
  /** A real model's shapes for the random weights (default qwen2.5-0.5b), or a config of your own. */
  shape?: string | ModelConfig;
  /** Only the first layers of a named shape (default: what fits). */
  layers?: number;
  /** Weight formats, one GGUF file each (default f32, f16, q8_0, q4_0). */
  formats?: WeightDType[];
  /** Context lengths in tokens (default 1024, 4096, 16384). */
  contexts?: number[];
  /** DuoAttention sparsities (random gate values binarised; default 0.5, 0.75). */
  sparsities?: number[];
  /** Threads of both engines (default every core). */
  threads?: number;
  /** Streaming window (default sink 128, recent 256). */
  window?: Partial<StreamingWindow>;
  prefillChunk?: number;
  /** Longest prefill that is measured (longer ones are estimated); default 2048. */
  prefillMax?: number;
  decodeTokens?: number;
  warmupTokens?: number;
  seed?: number;
  /** Greedy tokens compared with llama.cpp at f32 (default 32). */
  agreeTokens?: number;
  /** Recorded in peers.json. */
  command?: string;
  /** Each step as it starts ("q8_0: llama.cpp @4096"). */
  notice?: (message: string) => void;
  /** `what`: "random weights (…)" while they are made. */
  onProgress?: (what: string, done: number, total: number) => void;
}

export interface PeersResults {
  rows: PeerRow[];
  /** Leading greedy tokens Duet and llama.cpp agree on at f32 (null without f32). */
  agreement: Record<string, unknown> | null;
  notes: string[];
  /** peers.json and peers-decode.svg. */
  files: string[];
}

export async function runPeersBenchmark(o: PeersBenchmarkOptions): Promise<PeersResults> {
  if (typeof o?.out !== 'string' || o.out === '') throw new DuetError('out', 'is required (a folder for the GGUF files and results)');
  const formats = o.formats ?? ['f32', 'f16', 'q8_0', 'q4_0'];
  if (!Array.isArray(formats) || formats.length === 0) throw new DuetError('formats', 'must be a non-empty list');
  for (const f of formats) if (!isWeightDType(f)) throw new DuetError('formats', `${JSON.stringify(f)} is not one of ${WEIGHT_DTYPES.join(', ')}`);
  const contexts = positiveInts(o.contexts, [1024, 4096, 16384], 'contexts', 2).sort((a, b) => a - b);
  const sparsities = o.sparsities ?? [0.5, 0.75];
  for (const s of sparsities) if (!(s >= 0 && s <= 1)) throw new DuetError('sparsities', `${s} is not a sparsity in [0, 1]`);
  const threads = int(o.threads, 'threads', 1, availableParallelism());
  const chunk = int(o.prefillChunk, 'prefillChunk', 1, 512);
  const prefillMax = int(o.prefillMax, 'prefillMax', 0, 2048);
  const decodeTokens = int(o.decodeTokens, 'decodeTokens', 1, 8);
  const warmupTokens = int(o.warmupTokens, 'warmupTokens', 0, 2);
  const seed = int(o.seed, 'seed', -Infinity, 0);
  const agreeTokens = int(o.agreeTokens, 'agreeTokens', 1, 32);
  const window = { sink: int(o.window?.sink, 'window.sink', 0, 128), recent: int(o.window?.recent, 'window.recent', 1, 256) };
  // Checked before random weights are made (minutes for a real shape).
  if (!(await importNodeLlamaCpp())) throw new DuetError(null, `the peers benchmark needs llama.cpp: ${NODE_LLAMA_CPP_MISSING}`, 'unavailable');

  let config: ModelConfig;
  const notes: string[] = [];
  let label: string;
  if (typeof o.shape === 'object' && o.shape !== null) {
    if (o.layers !== undefined) throw new DuetError('layers', 'applies to a named shape; give the config its num_hidden_layers');
    config = o.shape;
    label = 'random weights (the given config)';
    notes.push('random weights with the given config');
  } else {
    const name = o.shape ?? 'qwen2.5-0.5b';
    const positions = e2eSequenceLength(Math.max(...contexts), warmupTokens, decodeTokens, sparsities.length);
    const shape = benchShape(name, { layers: o.layers === undefined ? undefined : int(o.layers, 'layers', 1, 0), positions, chunk, residency: { engines: 2, kvFactor: 1 + Math.max(0, ...sparsities.map((x) => 1 - x)) } });
    config = shape.config;
    label = `random weights (${name}, ${layersText(config.numLayers)})`;
    notes.push(`random weights with the shapes of ${shape.source}`, ...shape.notes);
  }
  notes.push("Duet runs each GGUF file's tensors in the file's format (packed CPU kernels, no dequantize at load)");
  const weights = randomWeights(config, seed, (d, t) => o.onProgress?.(label, d, t));
  const { rows, agreement, files } = await runPeers({
    config, weights, alphas: randomAlphas(config.numLayers, config.numKvHeads, seed), window, formats, contexts, sparsities, threads,
    chunk, prefillMax, decodeTokens, warmupTokens, seed, agreeTokens, outDir: o.out, machine: machineInfo(null, 'CPU only'),
    command: o.command ?? 'runPeersBenchmark', notes, say: o.notice ?? (() => {}),
  });
  return { rows, agreement, notes, files };
}

interface PeerOptions {
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

/**
 * A byte-level vocabulary of `n` tokens (256 bytes, then placeholders) for random-weight GGUF files:
 * llama.cpp accepts it, and text encodes to one token per byte.
 */
export function syntheticTokenizer(n: number): Array<[string, GgufWriteValue]> {
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

async function runPeers(o: PeerOptions): Promise<{ rows: PeerRow[]; agreement: Record<string, unknown> | null; files: string[] }> {
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
    await writeChunksAtomic(file, ggufChunks(config, o.weights, { name: 'duet-peers', type: format, encode: encodeMatrix, tokenizer, onFallback: (t, _f, to) => fell.add(`${t} → ${to}`) }), { force: true });
    if (fell.size) o.notes.push(`${format}: ${fell.size} tensors fell back (${[...fell].slice(0, 3).join(', ')}${fell.size > 3 ? ', …' : ''})`);
    // Duet reads the same file and keeps each tensor's format (its packed CPU kernels run it).
    const ckpt = await loadCheckpoint(nodeModelFiles(file));
    const duetConfig = { ...ckpt.config, maxPositionEmbeddings: config.maxPositionEmbeddings };

    o.say(`${format}: llama.cpp`);
    const llama = await openLlamaCpp(file, { threads: o.threads, contextSize: maxCtx + o.warmupTokens + o.decodeTokens + 8, batchSize: o.chunk });
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
          const t = await llama.time(ids.slice(0, context + 1), o.decodeTokens, o.warmupTokens);
          rows.push({ format, engine: 'llama.cpp', heads: 'full', context, prefill_tok_s: context / (t.prefillMs / 1000), prefill_method: 'measured',
            decode_ms_per_token: median(t.decodeMsSamples), decode_ms_samples: t.decodeMsSamples });
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
          decode_ms_per_token: r.decode_ms_per_token, decode_ms_samples: r.decode_ms_samples, ...(r.error ? { error: r.error } : {}) });
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
  writeFileAtomic(files[0], `${JSON.stringify(results, null, 1)}\n`);
  const series = new Map<string, Array<[number, number]>>();
  for (const r of rows) {
    if (r.decode_ms_per_token === null) continue;
    const key = `${r.engine === 'duet' ? `duet ${r.heads}` : 'llama.cpp'} ${r.format}`;
    series.set(key, [...(series.get(key) ?? []), [r.context, r.decode_ms_per_token]]);
  }
  writeFileAtomic(files[1], lineChart([...series].map(([label, points]) => ({ label, points })), { title: `decode: Duet vs llama.cpp (CPU, ${o.threads} threads)`, xLabel: 'context (tokens)', yLabel: 'ms per token', logX: true, height: 480 }));
  return { rows, agreement, files };
}

/** The rows as a table, with the greedy agreement at f32. */
export function peersReportText({ rows, agreement }: Pick<PeersResults, 'rows' | 'agreement'>): string {
  const lines = ['format  engine      heads     context  prefill tok/s  decode ms/tok  vs llama.cpp'];
  for (const r of rows) {
    const ref = rows.find((x) => x.engine === 'llama.cpp' && x.format === r.format && x.context === r.context);
    const ratio = r.engine === 'duet' && ref?.decode_ms_per_token && r.decode_ms_per_token ? `${(r.decode_ms_per_token / ref.decode_ms_per_token).toFixed(2)}x` : '';
    lines.push([r.format.padEnd(7), r.engine.padEnd(11), r.heads.padEnd(9), String(r.context).padStart(7),
      (r.prefill_tok_s === null ? '-' : `${r.prefill_tok_s.toFixed(0)}${r.prefill_method === 'estimated' ? '*' : ''}`).padStart(14),
      (r.decode_ms_per_token === null ? (r.error ?? '-') : r.decode_ms_per_token.toFixed(2)).padStart(14), ratio.padStart(12)].join(' '));
  }
  lines.push('(* prefill estimated from the first and last chunk, as the e2e suite does; decode = median of per-token times; ratio = Duet ms/token ÷ llama.cpp ms/token)');
  if (agreement) lines.push(`greedy agreement at f32: ${agreement.leading_agree} of ${agreement.tokens} leading tokens (Duet's smallest top-2 logit margin ${Number(agreement.duet_min_top2_margin).toFixed(3)})`);
  return lines.join('\n');
}
