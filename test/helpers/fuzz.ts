// A small seeded fuzzer for parsers of untrusted input. A parser passes when every mutated input
// either parses (and the caller's check of the result holds) or is refused with a plain Error or a
// DuetError whose message the caller accepts (naming the file or field); a TypeError, RangeError or any other
// exception escaping the parser is a failure, reported with the seed and case number that replay it.
// Reusable for any parser: give a seed input, a mutator (bytes, text or JSON) and a check.
import { DuetError } from '../../src/errors.ts';
import type { ModelFiles } from '../../src/model/files.ts';
import { rng } from '../reference/kernels.ts';

export type Random = () => number;

const pick = <T>(r: Random, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
const int = (r: Random, n: number) => Math.floor(r() * n);

const INTERESTING_NUMBERS = [0, -1, 1, 2, 255, 256, 65535, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 53, 1e9, 1e308, -1e308, 0.5, -0.5, 1e-300];
const INTERESTING_VALUES: unknown[] = [null, true, false, '', 'x', '../../etc/passwd', '/abs', [], {}, [1, 2], { a: 1 }, '1', 'NaN', ...INTERESTING_NUMBERS];

/** 1–4 byte-level edits: bit flips, byte sets, inserts, deletions, truncation, duplicated spans. */
export function mutateBytes(r: Random, input: Uint8Array): Uint8Array {
  let b: Uint8Array = Uint8Array.from(input);
  const edits = 1 + int(r, 4);
  for (let e = 0; e < edits; e++) {
    const at = int(r, Math.max(1, b.length));
    switch (int(r, 6)) {
      case 0: if (b.length) b[at] ^= 1 << int(r, 8); break;
      case 1: if (b.length) b[at] = pick(r, [0, 0xff, 0x7f, 0x80, 0x22, 0x5b, 0x7b, 0x2c, 0x30, 0x39]); break;
      case 2: { const ins = Uint8Array.from({ length: 1 + int(r, 8) }, () => int(r, 256)); b = concat(b.subarray(0, at), ins, b.subarray(at)); break; }
      case 3: b = concat(b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + int(r, 16)))); break;
      case 4: b = b.subarray(0, int(r, b.length + 1)); break;
      default: { const len = Math.min(b.length - at, 1 + int(r, 32)); b = concat(b.subarray(0, at + len), b.subarray(at, at + len), b.subarray(at + len)); }
    }
  }
  return b;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/** Text mutated at the byte level (may become invalid UTF-8 or JSON). */
export function mutateText(r: Random, text: string): string {
  return new TextDecoder().decode(mutateBytes(r, new TextEncoder().encode(text)));
}

/**
 * A structural edit of a JSON value: somewhere in the tree a value is replaced by an interesting one
 * (wrong type, huge, negative, path-like), a key is deleted, or a key is added.
 */
export function mutateJson(r: Random, value: unknown): unknown {
  const copy = structuredClone(value);
  const edits = 1 + int(r, 3);
  let root = copy;
  for (let e = 0; e < edits; e++) root = editAt(r, root, 0);
  return root;
}

const interesting = (r: Random): unknown => structuredClone(pick(r, INTERESTING_VALUES));

function editAt(r: Random, v: unknown, depth: number): unknown {
  const container = typeof v === 'object' && v !== null;
  if (!container || depth > 6 || r() < 0.2) return interesting(r);
  const keys: Array<string | number> = Array.isArray(v) ? v.map((_, i) => i) : Object.keys(v as object);
  const obj = v as Record<string | number, unknown>;
  if (keys.length === 0 || r() < 0.1) {
    if (Array.isArray(v)) v.push(interesting(r)); else obj[pick(r, ['__proto__', 'constructor', 'extra', 'weight_map'])] = interesting(r);
    return v;
  }
  const k = pick(r, keys);
  if (r() < 0.1) { if (Array.isArray(v)) v.splice(Number(k), 1); else delete obj[k]; return v; }
  obj[k] = editAt(r, obj[k], depth + 1);
  return v;
}

export interface FuzzResult { parsed: number; refused: number }

/**
 * Runs `cases` mutated inputs through `run`. `run` returns normally for an accepted input (after
 * checking its result) and throws for a refused one; `clear(message)` says whether a refusal's
 * message is clear enough (e.g. names the file). Anything else fails with the case to replay.
 */
export async function fuzz<T>(name: string, o: { seed: number; cases: number },
  generate: (r: Random, i: number) => T, run: (input: T) => unknown | Promise<unknown>,
  clear: (message: string) => boolean): Promise<FuzzResult> {
  const r = rng(o.seed);
  const result: FuzzResult = { parsed: 0, refused: 0 };
  for (let i = 0; i < o.cases; i++) {
    const input = generate(r, i);
    try {
      await run(input);
      result.parsed++;
    } catch (e) {
      const where = `${name}: case ${i} of seed ${o.seed}`;
      if (!(e instanceof Error) || (e.constructor !== Error && e.constructor !== DuetError)) {
        throw new Error(`${where}: ${e instanceof Error ? e.constructor.name : typeof e} escaped the parser: ${e instanceof Error ? e.message : String(e)}\ninput: ${preview(input)}`);
      }
      if (!clear(e.message)) throw new Error(`${where}: unclear error "${e.message}"\ninput: ${preview(input)}`);
      result.refused++;
    }
  }
  return result;
}

function preview(input: unknown): string {
  if (input instanceof Uint8Array) return `${input.length} bytes: ${Buffer.from(input.subarray(0, 200)).toString('latin1')}`;
  const s = typeof input === 'string' ? input : JSON.stringify(input, (_, v) => (v instanceof Uint8Array ? `<${v.length} bytes>` : v));
  return (s ?? String(input)).slice(0, 400);
}

/** ModelFiles over an in-memory folder (files the fuzzer builds), with the Node reader's checks. */
export function memoryFiles(name: string, entries: Record<string, Uint8Array | string>): ModelFiles {
  const bytes = (p: string): Uint8Array => {
    const v = entries[p];
    if (v === undefined) throw new Error(`${p}: missing from ${name}`);
    return typeof v === 'string' ? new TextEncoder().encode(v) : v;
  };
  return {
    name,
    exists: async (p) => Object.hasOwn(entries, p),
    size: async (p) => bytes(p).length,
    readText: async (p) => new TextDecoder().decode(bytes(p)),
    readBytes: async (p, offset, length) => {
      const b = bytes(p);
      if (offset + length > b.length) throw new Error(`${p}: truncated (wanted ${length} bytes at offset ${offset}, file ended after ${Math.max(0, b.length - offset)})`);
      return b.slice(offset, offset + length);
    },
  };
}
