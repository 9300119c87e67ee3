// DuoAttention head patterns: a gate value α per (layer, KV head), read from and written to the
// published layout (full_attention_heads.tsv + config.json), and binarised into retrieval/streaming.
// And method patterns (kv_methods.tsv): a KV method name per (layer, KV head).
import { DuetError } from '../errors.js';
import { KV_METHODS, type HeadMethods } from '../kv/registry.js';

export interface HeadPattern {
  /** α per layer per KV head, clipped to [0, 1]. */
  alphas: number[][];
  sink: number;
  recent: number;
  /** The pattern's config.json as read (training options are kept and written back). */
  config: Record<string, unknown>;
}

/** true = retrieval (full KV cache), false = streaming (sink + recent), per layer per KV head. */
export type HeadKinds = boolean[][];

const TSV = 'full_attention_heads.tsv';
const CONFIG = 'config.json';

/** Parses the TSV text; `where` names the file in errors. Values are clipped to [0, 1]. */
export function parseAlphas(text: string, where = TSV): number[][] {
  const lines = text.split(/\r?\n/);
  while (lines.length > 0 && lines[lines.length - 1].trim() === '') lines.pop();
  if (lines.length === 0) throw new Error(`${where}: empty file (expected one line of gate values per layer)`);
  return lines.map((line, i) => {
    const cells = line.trim().split(/[\t ]+/);
    return cells.map((cell, h) => {
      const v = Number(cell);
      if (cell === '' || !Number.isFinite(v)) {
        throw new Error(`${where}: line ${i + 1}, column ${h + 1}: "${cell}" is not a finite number`);
      }
      if (v < -0.5 || v > 1.5) {
        throw new Error(`${where}: line ${i + 1}, column ${h + 1}: gate value ${v} is far outside [0, 1]`);
      }
      return Math.min(1, Math.max(0, v));
    });
  });
}

function sizeField(config: Record<string, unknown>, deployKey: string, key: string, where: string): number {
  const deploy = config[deployKey];
  const value = deploy !== null && deploy !== undefined ? deploy : config[key];
  const name = deploy !== null && deploy !== undefined ? deployKey : key;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new Error(`${where}: field "${name}" must be a non-negative integer (got ${JSON.stringify(value)})`);
  }
  return value;
}

/** Builds a pattern from the two files' texts, checking its shape against the model. */
export function parsePattern(tsvText: string, configText: string | null, layers: number, kvHeads: number,
  dir = '.'): HeadPattern {
  const tsvWhere = `${dir}/${TSV}`;
  const alphas = parseAlphas(tsvText, tsvWhere);
  if (alphas.length !== layers) {
    throw new Error(`${tsvWhere}: has ${alphas.length} lines (layers), the model has ${layers} layers`);
  }
  alphas.forEach((row, i) => {
    if (row.length !== kvHeads) {
      throw new Error(`${tsvWhere}: line ${i + 1} has ${row.length} gate values, the model has ${kvHeads} KV heads per layer`);
    }
  });
  let config: Record<string, unknown> = {};
  if (configText !== null) {
    const cfgWhere = `${dir}/${CONFIG}`;
    try { config = JSON.parse(configText); } catch (e) { throw new Error(`${cfgWhere}: invalid JSON (${(e as Error).message})`); }
    if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new Error(`${cfgWhere}: expected a JSON object`);
    const sink = sizeField(config, 'deploy_sink_size', 'sink_size', cfgWhere);
    const recent = sizeField(config, 'deploy_recent_size', 'recent_size', cfgWhere);
    return { alphas, sink, recent: validRecent(recent, cfgWhere), config };
  }
  throw new Error(`${dir}/${CONFIG}: missing (a pattern directory needs full_attention_heads.tsv and config.json with sink_size and recent_size)`);
}

function validRecent(recent: number, where: string): number {
  if (recent < 1) throw new Error(`${where}: recent_size must be at least 1 (the current token is always in the window)`);
  return recent;
}

export interface BinarizeOptions {
  /** Fraction of KV heads (lowest α first) that become streaming, in [0, 1]. */
  sparsity?: number;
  /** Without sparsity: α ≥ threshold → retrieval (default 0.5). */
  threshold?: number;
}

/**
 * Retrieval/streaming per KV head. With a sparsity s, exactly round(s · N) heads with the lowest α
 * stream; ties are broken by (layer, head) order, the earlier head streaming first.
 */
export function binarize(alphas: number[][], options: BinarizeOptions = {}): HeadKinds {
  const { sparsity } = options;
  if (sparsity === undefined) {
    const threshold = options.threshold ?? 0.5;
    return alphas.map((row) => row.map((a) => a >= threshold));
  }
  if (!(sparsity >= 0 && sparsity <= 1)) throw new DuetError('sparsity', `must be within [0, 1] (got ${sparsity})`);
  const heads = alphas.flatMap((row, l) => row.map((a, h) => ({ a, l, h })));
  heads.sort((x, y) => x.a - y.a || x.l - y.l || x.h - y.h);
  const streaming = Math.round(sparsity * heads.length);
  const kinds = alphas.map((row) => row.map(() => true));
  for (let i = 0; i < streaming; i++) kinds[heads[i].l][heads[i].h] = false;
  return kinds;
}

export function allHeads(layers: number, kvHeads: number, retrieval: boolean): HeadKinds {
  return Array.from({ length: layers }, () => Array.from({ length: kvHeads }, () => retrieval));
}

/** Text of full_attention_heads.tsv for the given α (the published number style). */
export function formatAlphas(alphas: number[][]): string {
  return alphas.map((row) => row.map((a) => a.toExponential(2)).join('\t')).join('\n') + '\n';
}

export function countStreaming(kinds: HeadKinds): number {
  return kinds.reduce((n, row) => n + row.filter((r) => !r).length, 0);
}

/** The two file reads a pattern needs (ModelFiles fits). */
export interface PatternFiles {
  readonly name: string;
  exists(path: string): Promise<boolean>;
  readText(path: string): Promise<string>;
}

/** Loads a pattern directory in DuoAttention's layout, validated against the model's shape. */
export async function loadPattern(files: PatternFiles, layers: number, kvHeads: number): Promise<HeadPattern> {
  if (!(await files.exists(TSV))) throw new Error(`${files.name}/${TSV}: missing (not a DuoAttention pattern directory)`);
  const tsv = await files.readText(TSV);
  const config = (await files.exists(CONFIG)) ? await files.readText(CONFIG) : null;
  return parsePattern(tsv, config, layers, kvHeads, files.name);
}

/** The file a method pattern is read from by default (one line per layer, a method name per KV head). */
export const METHODS_FILE = 'kv_methods.tsv';

/**
 * Parses a method pattern: one line per layer, one KV method name per KV head (tabs or spaces
 * between them; `#` starts a comment; blank lines are skipped), checked against the registered methods
 * and the model's shape. `where` names the file in errors.
 */
export function parseHeadMethods(text: string, layers: number, kvHeads: number, where = METHODS_FILE): HeadMethods {
  const names = KV_METHODS.map((m) => m.name);
  const rows: Array<{ line: number; cells: string[] }> = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (line !== '') rows.push({ line: i + 1, cells: line.split(/[\t ]+/) });
  });
  if (rows.length === 0) throw new Error(`${where}: no method names (expected one line per layer, one name per KV head: ${names.join(', ')})`);
  if (rows.length !== layers) throw new Error(`${where}: has ${rows.length} lines of methods (layers), the model has ${layers} layers`);
  return rows.map(({ line, cells }) => {
    if (cells.length !== kvHeads) throw new Error(`${where}: line ${line} names ${cells.length} methods, the model has ${kvHeads} KV heads per layer`);
    cells.forEach((c, h) => {
      if (!names.includes(c)) throw new Error(`${where}: line ${line}, column ${h + 1}: unknown KV method "${c}" (registered: ${names.join(', ')})`);
    });
    return cells;
  });
}

/** Text of a method pattern (tab-separated, one line per layer). */
export function formatHeadMethods(methods: HeadMethods): string {
  return methods.map((row) => row.join('\t')).join('\n') + '\n';
}

/** Loads a method pattern (`path` in `files`, default kv_methods.tsv), validated against the model's shape. */
export async function loadHeadMethods(files: PatternFiles, layers: number, kvHeads: number, path = METHODS_FILE): Promise<HeadMethods> {
  if (!(await files.exists(path))) throw new Error(`${files.name}/${path}: missing (a method pattern: one line per layer, a KV method name per KV head)`);
  return parseHeadMethods(await files.readText(path), layers, kvHeads, `${files.name}/${path}`);
}

/** Method names from head kinds with the streaming heads' method replaced: e.g. DuoAttention's streaming heads as locret. */
export function methodsOfPattern(kinds: HeadKinds, streamingAs: string): HeadMethods {
  return kinds.map((row) => row.map((retrieval) => (retrieval ? 'full' : streamingAs)));
}
