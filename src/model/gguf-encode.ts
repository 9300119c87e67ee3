// Row-major f32 matrices encoded in GGUF tensor types, and GGUF tensors read back, through the
// block codecs of quant.ts (whose packed rows are GGUF's bytes exactly).
import type { MatrixEncoder } from './gguf-write.js';
import type { GgufTensor } from './gguf.js';
import { GGML_TYPE, quantizeMatrix, type PackedMatrix, type WeightDType } from './quant.js';
import { decodeTensor } from './safetensors.js';

export const encodeMatrix: MatrixEncoder = (type, values, rows, cols, name) => {
  const m = quantizeMatrix(type, values, rows, cols, `tensor "${name}"`);
  return m.data instanceof Float32Array ? new Uint8Array(m.data.buffer, m.data.byteOffset, m.data.byteLength) : m.data;
};

const DTYPE_OF = new Map<number, WeightDType>(Object.entries(GGML_TYPE).filter(([k]) => k !== 'bf16').map(([k, v]) => [v, k as WeightDType]));

/** A GGUF tensor's bytes as a PackedMatrix (BF16 widened to f32: Duet has no bf16 kernels). */
export function ggufPacked(t: GgufTensor, bytes: Uint8Array, rows: number, cols: number): PackedMatrix {
  if (t.type === GGML_TYPE.bf16) return { dtype: 'f32', rows, cols, data: decodeTensor(bytes, 'BF16') };
  const dtype = DTYPE_OF.get(t.type);
  if (!dtype) throw new Error(`tensor "${t.name}": ggml type ${t.type} has no codec`);
  return { dtype, rows, cols, data: dtype === 'f32' ? decodeTensor(bytes, 'F32') : bytes };
}
