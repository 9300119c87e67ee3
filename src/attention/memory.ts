// Projected KV-cache memory of full attention vs a DuoAttention pattern, for any model and context,
// byte for byte as a Session allocates it: full caches in the KV dtype's rows (backend/kv-dtype.ts),
// streaming rings in f32 (the rings are constant-size and always f32).
import { DuetError } from '../errors.js';
import { kvRowBytes, type KvDType } from '../backend/kv-dtype.js';
import type { HeadKinds } from './pattern.js';

export interface MemoryProjection {
  context: number;
  /** Storage of the full caches. */
  kvDtype: KvDType;
  /** Every head with a full cache. */
  full_bytes: number;
  /** Retrieval heads full, streaming heads sink + recent. */
  duo_bytes: number;
  /** With the split placement: the retrieval caches live on the GPU, the rings on the CPU. */
  gpu_bytes: number;
  cpu_bytes: number;
  retrieval_heads: number;
  streaming_heads: number;
}

export function projectKvMemory(kinds: HeadKinds, headDim: number, context: number,
  window: { sink: number; recent: number }, kvDtype: KvDType): MemoryProjection {
  if (!(Number.isInteger(context) && context >= 1)) throw new DuetError('context', `must be a positive integer (got ${context})`);
  const perToken = 2 * kvRowBytes(headDim, kvDtype); // K and V of one head, one position
  const ringPerToken = 2 * kvRowBytes(headDim, 'f32');
  let retrieval = 0, streaming = 0;
  for (const row of kinds) for (const r of row) (r ? retrieval++ : streaming++);
  const ringTokens = Math.min(context, window.sink + window.recent);
  const gpu = retrieval * context * perToken;
  const cpu = streaming * ringTokens * ringPerToken;
  return {
    context, kvDtype,
    full_bytes: (retrieval + streaming) * context * perToken,
    duo_bytes: gpu + cpu, gpu_bytes: gpu, cpu_bytes: cpu,
    retrieval_heads: retrieval, streaming_heads: streaming,
  };
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  while (n >= 1024 && u < units.length - 1) { n /= 1024; u++; }
  return `${n.toFixed(u === 0 ? 0 : 2)} ${units[u]}`;
}
