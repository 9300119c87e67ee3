// GGUF (llama.cpp's single-file model format, versions 2 and 3): the header, typed metadata and
// tensor table are parsed here; tensor bytes are read later by byte range. Every check that can
// fail names the file and the key or tensor.
//
// Layout: "GGUF" u32 version, u64 tensor count, u64 metadata count; metadata as (string key, u32
// type, value); tensor infos as (string name, u32 n_dims, u64 dims[n] innermost first, u32 ggml
// type, u64 offset from the data start); the data starts at the next multiple of general.alignment.
import type { ModelFiles } from './files.js';
import { blockBytes, blockSize, GGML_TYPE, WEIGHT_DTYPES } from './quant.js';

export const GGUF_MAGIC = 0x46554747; // "GGUF" little-endian

/** GGUF metadata value types. */
export enum ValueType { U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12 }

export type GgufValue = number | bigint | boolean | string | GgufValue[];
export interface GgufEntry { type: ValueType; value: GgufValue; /** element type of an array */ itemType?: ValueType }

/** ggml tensor types Duet reads, with their block size (elements) and block bytes. */
export const TENSOR_TYPES: Record<number, { name: string; block: number; bytes: number }> = Object.fromEntries([
  ...WEIGHT_DTYPES.map((d) => [GGML_TYPE[d], { name: d.toUpperCase(), block: blockSize(d), bytes: blockBytes(d) }]),
  [GGML_TYPE.bf16, { name: 'BF16', block: 1, bytes: 2 }],
]);

export interface GgufTensor {
  name: string;
  /** ggml order: dims[0] is the innermost (a row's length). */
  dims: number[];
  type: number;
  /** Absolute offset in the file and byte length. */
  offset: number;
  byteLength: number;
}

export interface GgufHeader {
  file: string;
  version: number;
  metadata: Map<string, GgufEntry>;
  tensors: Map<string, GgufTensor>;
  alignment: number;
  dataOffset: number;
  fileSize: number;
}

class NeedMore extends Error {}

/** A cursor over the first `buf.length` bytes of a file; NeedMore when a read runs past them. */
class Cursor {
  private readonly view: DataView;
  pos = 0;
  constructor(private readonly buf: Uint8Array, private readonly complete: boolean, private readonly where: () => string) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  private need(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    if (this.complete) throw new Error(`${this.where()}: truncated (needs ${n} bytes at offset ${this.pos}, the file has ${this.buf.length})`);
    throw new NeedMore();
  }
  u8() { this.need(1); return this.view.getUint8(this.pos++); }
  u32() { this.need(4); const v = this.view.getUint32(this.pos, true); this.pos += 4; return v; }
  u64(what: string): number {
    this.need(8);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${this.where()}: ${what} ${v} is too large`);
    return Number(v);
  }
  value(type: ValueType, what: string): GgufValue {
    const v = this.view;
    const at = (n: number) => { this.need(n); const p = this.pos; this.pos += n; return p; };
    switch (type) {
      case ValueType.U8: return v.getUint8(at(1));
      case ValueType.I8: return v.getInt8(at(1));
      case ValueType.U16: return v.getUint16(at(2), true);
      case ValueType.I16: return v.getInt16(at(2), true);
      case ValueType.U32: return v.getUint32(at(4), true);
      case ValueType.I32: return v.getInt32(at(4), true);
      case ValueType.F32: return v.getFloat32(at(4), true);
      case ValueType.BOOL: {
        const b = v.getUint8(at(1));
        if (b > 1) throw new Error(`${this.where()}: ${what} is a bool of value ${b}`);
        return b === 1;
      }
      case ValueType.STRING: return this.string(what);
      case ValueType.U64: { const x = v.getBigUint64(at(8), true); return x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x; }
      case ValueType.I64: { const x = v.getBigInt64(at(8), true); return x <= BigInt(Number.MAX_SAFE_INTEGER) && x >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x; }
      case ValueType.F64: return v.getFloat64(at(8), true);
      default: throw new Error(`${this.where()}: ${what} has unknown value type ${type}`);
    }
  }
  string(what: string): string {
    const n = this.u64(`${what}: string length`);
    this.need(n);
    const s = decoder.decode(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return s;
  }
}
const decoder = new TextDecoder('utf-8', { fatal: false });

/** Parses a GGUF header from the bytes it has; throws NeedMore if they end before the header does. */
export function parseGgufHeader(bytes: Uint8Array, fileSize: number, file: string): GgufHeader {
  let context = 'header';
  const cur = new Cursor(bytes, bytes.length >= fileSize, () => `${file}: ${context}`);
  if (fileSize < 4 || (bytes.length >= 4 && cur.u32() !== GGUF_MAGIC)) {
    throw new Error(`${file}: not a GGUF file (bad magic; expected "GGUF")`);
  }
  if (bytes.length < 4) cur.u32();
  const version = cur.u32();
  if (version !== 2 && version !== 3) throw new Error(`${file}: unsupported GGUF version ${version} (Duet reads versions 2 and 3)`);
  const tensorCount = cur.u64('tensor count');
  const kvCount = cur.u64('metadata count');
  // Each metadata entry takes at least 12 bytes and each tensor info at least 24.
  if (kvCount * 12 + tensorCount * 24 > fileSize) {
    throw new Error(`${file}: header claims ${kvCount} metadata entries and ${tensorCount} tensors, more than a ${fileSize}-byte file can hold`);
  }
  const metadata = new Map<string, GgufEntry>();
  for (let i = 0; i < kvCount; i++) {
    context = `metadata entry ${i}`;
    const key = cur.string('key');
    context = `metadata "${key}"`;
    if (metadata.has(key)) throw new Error(`${file}: metadata key "${key}" appears twice`);
    const type = cur.u32() as ValueType;
    if (type === ValueType.ARRAY) {
      const itemType = cur.u32() as ValueType;
      if (itemType === ValueType.ARRAY) throw new Error(`${file}: metadata "${key}" is an array of arrays (not supported)`);
      const n = cur.u64('array length');
      if (n > fileSize) throw new Error(`${file}: metadata "${key}" claims ${n} elements, more than the file has bytes`);
      const items: GgufValue[] = new Array(n);
      for (let j = 0; j < n; j++) items[j] = cur.value(itemType, `metadata "${key}"[${j}]`);
      metadata.set(key, { type, itemType, value: items });
    } else {
      metadata.set(key, { type, value: cur.value(type, `metadata "${key}"`) });
    }
  }
  const alignEntry = metadata.get('general.alignment');
  const alignment = alignEntry === undefined ? 32 : alignEntry.value;
  if (typeof alignment !== 'number' || !Number.isInteger(alignment) || alignment < 1 || (alignment & (alignment - 1)) !== 0) {
    throw new Error(`${file}: metadata "general.alignment" must be a power of two (got ${String(alignment)})`);
  }
  const raw: Array<{ name: string; dims: number[]; type: number; rel: number }> = [];
  for (let i = 0; i < tensorCount; i++) {
    context = `tensor info ${i}`;
    const name = cur.string('tensor name');
    context = `tensor "${name}"`;
    const nDims = cur.u32();
    if (nDims < 1 || nDims > 4) throw new Error(`${file}: tensor "${name}" has ${nDims} dimensions (GGUF allows 1 to 4)`);
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(cur.u64('dimension'));
    const type = cur.u32();
    const rel = cur.u64('offset');
    raw.push({ name, dims, type, rel });
  }
  const dataOffset = Math.ceil(cur.pos / alignment) * alignment;
  const tensors = new Map<string, GgufTensor>();
  for (const { name, dims, type, rel } of raw) {
    if (tensors.has(name)) throw new Error(`${file}: tensor "${name}" appears twice`);
    const tt = TENSOR_TYPES[type];
    if (!tt) throw new Error(`${file}: tensor "${name}" has ggml type ${type}, which Duet does not read (supported: ${Object.values(TENSOR_TYPES).map((t) => t.name).join(', ')})`);
    if (dims.some((d) => d < 1)) throw new Error(`${file}: tensor "${name}" has an empty dimension [${dims.join(', ')}]`);
    if (dims[0] % tt.block !== 0) throw new Error(`${file}: tensor "${name}" is ${tt.name} but its rows of ${dims[0]} elements are not a multiple of the ${tt.block}-element block`);
    if (rel % alignment !== 0) throw new Error(`${file}: tensor "${name}" offset ${rel} is not a multiple of the alignment ${alignment}`);
    const elements = dims.reduce((a, b) => a * b, 1);
    const byteLength = (elements / tt.block) * tt.bytes;
    const offset = dataOffset + rel;
    if (offset + byteLength > fileSize) {
      throw new Error(`${file}: tensor "${name}" (bytes ${offset}..${offset + byteLength}) lies beyond the end of the ${fileSize}-byte file (truncated?)`);
    }
    tensors.set(name, { name, dims, type, offset, byteLength });
  }
  const sorted = [...tensors.values()].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1], b = sorted[i];
    if (b.offset < a.offset + a.byteLength) throw new Error(`${file}: tensors "${a.name}" and "${b.name}" overlap (bytes ${a.offset}..${a.offset + a.byteLength} and ${b.offset}..)`);
  }
  return { file, version, metadata, tensors, alignment, dataOffset, fileSize };
}

/** Reads a GGUF header through `files`, fetching more of the file until the header fits. */
export async function readGgufHeader(files: ModelFiles, path: string): Promise<GgufHeader> {
  const size = await files.size(path);
  const name = files.name;
  let want = Math.min(size, 1 << 20);
  for (;;) {
    const bytes = await files.readBytes(path, 0, want);
    try {
      return parseGgufHeader(bytes, size, name);
    } catch (e) {
      if (!(e instanceof NeedMore)) throw e;
      want = Math.min(size, want * 4);
    }
  }
}

// ---- writing ----

export interface GgufWriteTensor { name: string; dims: number[]; type: number; data: Uint8Array }

/** A metadata value to write: the type is explicit so readers see exactly what llama.cpp expects. */
export type GgufWriteValue =
  | { type: ValueType.STRING; value: string }
  | { type: ValueType.U32 | ValueType.I32 | ValueType.F32 | ValueType.U64 | ValueType.F64 | ValueType.U8 | ValueType.I8 | ValueType.U16 | ValueType.I16 | ValueType.I64; value: number }
  | { type: ValueType.BOOL; value: boolean }
  | { type: ValueType.ARRAY; itemType: ValueType; value: GgufValue[] };

class Writer {
  private chunks: Uint8Array[] = [];
  private cur = new Uint8Array(1 << 16);
  private view = new DataView(this.cur.buffer);
  private pos = 0;
  length = 0;
  private room(n: number) {
    if (this.pos + n <= this.cur.length) return;
    this.flush();
    if (n > this.cur.length) { this.cur = new Uint8Array(n); this.view = new DataView(this.cur.buffer); }
  }
  flush() {
    if (this.pos) this.chunks.push(this.cur.slice(0, this.pos));
    this.pos = 0;
  }
  bytes(b: Uint8Array) { this.room(b.length); this.cur.set(b, this.pos); this.pos += b.length; this.length += b.length; }
  num(type: ValueType, v: number | bigint | boolean) {
    const size = { [ValueType.U8]: 1, [ValueType.I8]: 1, [ValueType.BOOL]: 1, [ValueType.U16]: 2, [ValueType.I16]: 2, [ValueType.U32]: 4, [ValueType.I32]: 4, [ValueType.F32]: 4, [ValueType.U64]: 8, [ValueType.I64]: 8, [ValueType.F64]: 8 }[type as number];
    if (size === undefined) throw new Error(`GGUF writer: ${type} is not a numeric type`);
    this.room(size);
    const p = this.pos, w = this.view;
    switch (type) {
      case ValueType.U8: w.setUint8(p, Number(v)); break;
      case ValueType.I8: w.setInt8(p, Number(v)); break;
      case ValueType.BOOL: w.setUint8(p, v ? 1 : 0); break;
      case ValueType.U16: w.setUint16(p, Number(v), true); break;
      case ValueType.I16: w.setInt16(p, Number(v), true); break;
      case ValueType.U32: w.setUint32(p, Number(v), true); break;
      case ValueType.I32: w.setInt32(p, Number(v), true); break;
      case ValueType.F32: w.setFloat32(p, Number(v), true); break;
      case ValueType.U64: w.setBigUint64(p, BigInt(v as number), true); break;
      case ValueType.I64: w.setBigInt64(p, BigInt(v as number), true); break;
      case ValueType.F64: w.setFloat64(p, Number(v), true); break;
    }
    this.pos += size;
    this.length += size;
  }
  string(s: string) { const b = new TextEncoder().encode(s); this.num(ValueType.U64, b.length); this.bytes(b); }
  value(type: ValueType, v: GgufValue) {
    if (type === ValueType.STRING) this.string(v as string);
    else this.num(type, v as number);
  }
  take(): Uint8Array[] { this.flush(); return this.chunks; }
}

export interface GgufTensorInfo { name: string; dims: number[]; type: number; /** from the data start */ offset: number }

/** The header bytes (magic to the padded end of the tensor table), unchecked: tests build bad files with it. */
export function encodeGgufHeader(metadata: Array<[string, GgufWriteValue]>, infos: GgufTensorInfo[], alignment = 32, version = 3): Uint8Array {
  const w = new Writer();
  w.num(ValueType.U32, GGUF_MAGIC);
  w.num(ValueType.U32, version);
  w.num(ValueType.U64, infos.length);
  const meta = metadata.some(([k]) => k === 'general.alignment') || alignment === 32
    ? metadata : [...metadata, ['general.alignment', { type: ValueType.U32, value: alignment }] as [string, GgufWriteValue]];
  w.num(ValueType.U64, meta.length);
  for (const [key, v] of meta) {
    w.string(key);
    w.num(ValueType.U32, v.type);
    if (v.type === ValueType.ARRAY) {
      w.num(ValueType.U32, v.itemType);
      w.num(ValueType.U64, v.value.length);
      for (const item of v.value) w.value(v.itemType, item);
    } else {
      w.value(v.type, v.value as GgufValue);
    }
  }
  for (const t of infos) {
    w.string(t.name);
    w.num(ValueType.U32, t.dims.length);
    for (const d of t.dims) w.num(ValueType.U64, d);
    w.num(ValueType.U32, t.type);
    w.num(ValueType.U64, t.offset);
  }
  w.bytes(new Uint8Array((alignment - (w.length % alignment)) % alignment));
  return concatBytes(w.take());
}

/**
 * A GGUF v3 file as a list of byte chunks (header, then each tensor's bytes padded to the
 * alignment), so a caller can stream it to disk without one big copy.
 */
export function encodeGguf(metadata: Array<[string, GgufWriteValue]>, tensors: GgufWriteTensor[], alignment = 32): Uint8Array[] {
  const pad = (n: number) => (alignment - (n % alignment)) % alignment;
  const infos: GgufTensorInfo[] = [];
  let offset = 0;
  for (const t of tensors) {
    const tt = TENSOR_TYPES[t.type];
    if (!tt) throw new Error(`GGUF writer: tensor "${t.name}" has unsupported ggml type ${t.type}`);
    const expected = (t.dims.reduce((a, b) => a * b, 1) / tt.block) * tt.bytes;
    if (t.dims[0] % tt.block !== 0 || t.data.byteLength !== expected) {
      throw new Error(`GGUF writer: tensor "${t.name}" [${t.dims.join(', ')}] as ${tt.name} needs ${expected} bytes, got ${t.data.byteLength}`);
    }
    infos.push({ name: t.name, dims: t.dims, type: t.type, offset });
    offset += t.data.byteLength + pad(t.data.byteLength);
  }
  const out = [encodeGgufHeader(metadata, infos, alignment)];
  for (const t of tensors) {
    out.push(t.data);
    const p = pad(t.data.byteLength);
    if (p) out.push(new Uint8Array(p));
  }
  return out;
}

/** Joins chunks (for tests and small files). */
export function concatBytes(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}
