// safetensors: an 8-byte little-endian header length, a JSON header {name: {dtype, shape,
// data_offsets}}, then the data. Tensors are read one at a time by byte range and decoded to f32.
import type { ModelFiles } from './files.js';
import { readJson } from './files.js';
import { bf16ArrayToF32, f16ArrayToF32 } from './quant.js';

export type Dtype = 'F32' | 'F16' | 'BF16';
const DTYPE_BYTES: Record<Dtype, number> = { F32: 4, F16: 2, BF16: 2 };

export interface TensorInfo {
  name: string;
  file: string;
  dtype: Dtype;
  shape: number[];
  /** Absolute byte offset in the file and byte length. */
  offset: number;
  byteLength: number;
}

const MAX_HEADER_BYTES = 100_000_000;

/** Reads and validates one file's header. */
export async function readSafetensorsHeader(files: ModelFiles, file: string): Promise<TensorInfo[]> {
  if (!(await files.exists(file))) throw new Error(`${file}: missing from ${files.name}`);
  const size = await files.size(file);
  if (size < 8) throw new Error(`${file}: truncated (${size} bytes, not even a header length)`);
  const lenBytes = await files.readBytes(file, 0, 8);
  const headerLen = Number(new DataView(lenBytes.buffer, lenBytes.byteOffset, 8).getBigUint64(0, true));
  // The reference library's limit: a header is JSON text, never hundreds of megabytes.
  if (headerLen > MAX_HEADER_BYTES) throw new Error(`${file}: header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit; not safetensors`);
  if (headerLen > size - 8) throw new Error(`${file}: header length ${headerLen} exceeds the file size (${size} bytes); truncated or not safetensors`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(await files.readBytes(file, 8, headerLen)));
  } catch (e) {
    throw new Error(`${file}: header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new Error(`${file}: header is not a JSON object`);
  const dataStart = 8 + headerLen;
  const dataSize = size - dataStart;
  const tensors: TensorInfo[] = [];
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const t = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const where = `${file}: tensor "${name}"`;
    if (typeof t !== 'object' || t === null) throw new Error(`${where}: entry is not an object`);
    if (typeof t.dtype !== 'string') throw new Error(`${where}: missing dtype`);
    if (!(t.dtype in DTYPE_BYTES)) throw new Error(`${where}: unsupported dtype ${t.dtype} (supported: F32, F16, BF16)`);
    const dtype = t.dtype as Dtype;
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isInteger(d) && d >= 0)) throw new Error(`${where}: invalid shape ${JSON.stringify(t.shape)}`);
    const off = t.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((o) => Number.isInteger(o) && o >= 0) || off[1] < off[0]) {
      throw new Error(`${where}: invalid data_offsets ${JSON.stringify(off)}`);
    }
    const shape = t.shape as number[];
    const expected = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
    if (off[1] - off[0] !== expected) throw new Error(`${where}: data_offsets span ${off[1] - off[0]} bytes, but shape ${JSON.stringify(shape)} of ${dtype} needs ${expected}`);
    if (off[1] > dataSize) throw new Error(`${where}: data_offsets [${off[0]}, ${off[1]}] are out of range (the file has ${dataSize} data bytes; truncated?)`);
    tensors.push({ name, file, dtype, shape, offset: dataStart + off[0], byteLength: expected });
  }
  // No two tensors may share bytes (the reference library rejects overlapping data_offsets too).
  const byStart = tensors.filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byStart.length; i++) {
    const a = byStart[i - 1], b = byStart[i];
    if (b.offset < a.offset + a.byteLength) {
      throw new Error(`${file}: tensors "${a.name}" and "${b.name}" overlap (data_offsets [${a.offset - dataStart}, ${a.offset - dataStart + a.byteLength}] and [${b.offset - dataStart}, ${b.offset - dataStart + b.byteLength}])`);
    }
  }
  return tensors;
}

/** Every tensor of a checkpoint: model.safetensors, or the shards of model.safetensors.index.json. */
export async function readCheckpointIndex(files: ModelFiles): Promise<Map<string, TensorInfo>> {
  const INDEX = 'model.safetensors.index.json';
  let shardFiles: string[];
  let weightMap: Record<string, unknown> | null = null;
  if (await files.exists(INDEX)) {
    const index = (await readJson(files, INDEX)) as { weight_map?: unknown };
    if (typeof index !== 'object' || index === null || Array.isArray(index)) throw new Error(`${INDEX}: expected a JSON object`);
    const map = index.weight_map;
    if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new Error(`${INDEX}: missing "weight_map" (an object of tensor name → shard file)`);
    weightMap = map as Record<string, unknown>;
    for (const [tensor, shard] of Object.entries(weightMap)) {
      if (typeof shard !== 'string') throw new Error(`${INDEX}: weight_map["${tensor}"] must be a file name (got ${JSON.stringify(shard)})`);
      // A shard is a plain file name in the model folder: no folders, no way out of it.
      if (!/^[A-Za-z0-9._-]+$/.test(shard) || shard === '.' || shard === '..') {
        throw new Error(`${INDEX}: weight_map["${tensor}"] names "${shard}", not a file in the model folder (shards are plain file names)`);
      }
    }
    shardFiles = [...new Set(Object.values(weightMap) as string[])];
    if (shardFiles.length === 0) throw new Error(`${INDEX}: "weight_map" is empty`);
    for (const f of shardFiles) if (!(await files.exists(f))) throw new Error(`${INDEX}: shard "${f}" is missing from ${files.name}`);
  } else if (await files.exists('model.safetensors')) {
    shardFiles = ['model.safetensors'];
  } else {
    throw new Error(`${files.name}: no model.safetensors or model.safetensors.index.json`);
  }
  const all = new Map<string, TensorInfo>();
  for (const f of shardFiles) {
    for (const t of await readSafetensorsHeader(files, f)) {
      const other = all.get(t.name);
      if (other) throw new Error(`${f}: tensor "${t.name}" is also in ${other.file}`);
      all.set(t.name, t);
    }
  }
  if (weightMap) {
    for (const [tensor, shard] of Object.entries(weightMap)) {
      const t = all.get(tensor);
      if (!t || t.file !== shard) throw new Error(`${INDEX}: weight_map puts "${tensor}" in ${shard}, ${t ? `but it is in ${t.file}` : 'but no shard holds it'}`);
    }
  }
  return all;
}

/** Decodes raw little-endian bytes of the given dtype into f32. */
export function decodeTensor(bytes: Uint8Array, dtype: Dtype): Float32Array {
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  if (dtype === 'F32') return new Float32Array(aligned.buffer.slice(aligned.byteOffset, aligned.byteOffset + bytes.byteLength));
  const u16 = new Uint16Array(aligned.buffer, aligned.byteOffset, n);
  return dtype === 'F16' ? f16ArrayToF32(u16) : bf16ArrayToF32(u16);
}

export async function readTensor(files: ModelFiles, t: TensorInfo): Promise<Float32Array> {
  return decodeTensor(await files.readBytes(t.file, t.offset, t.byteLength), t.dtype);
}

/** A safetensors file of F32 tensors (header padded to 8 bytes, as the format recommends). */
export function encodeSafetensorsF32(tensors: Array<{ name: string; shape: number[]; data: Float32Array }>, metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8 !== 0) json += ' ';
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const t of tensors) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
    at += t.data.byteLength;
  }
  return out;
}
