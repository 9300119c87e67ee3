// Row-major f32 matrices encoded in GGUF tensor types, and GGUF tensors decoded back to f32.
// F32 is a copy; the other types are engineer C's block codecs (quant.ts) once they are merged.
import type { MatrixEncoder } from './gguf-write.js';
import { decodeGgufFloat, type GgufDecoder } from './gguf-model.js';

export const encodeMatrix: MatrixEncoder = (type, values) => {
  if (type === 'f32') return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  throw new Error(`--type ${type}: the block codecs are not in this build yet (only f32)`);
};

export const decodeGgufTensor: GgufDecoder = decodeGgufFloat;
