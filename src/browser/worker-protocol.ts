// Messages between the page and the Web Worker that runs the CPU backend (SIMD WebAssembly).
// Tensors are named by ids the page assigns, so every op except `read` is fire-and-forget and the
// worker runs them in the order they were posted (postMessage keeps order).
import type { WeightDType } from '../model/quant.js';
import type { KernelDef, KernelScalars } from '../backend/kernels.js';

/** A tensor argument, as it crosses the worker boundary. */
export interface TensorRef { tensor: number }

/** Backend ops that compute (everything but memory management), run by name in the worker. */
export const KERNEL_OPS = ['embed', 'rmsnorm', 'matmul', 'rope', 'siluMul', 'kvAppend', 'attention',
  'streamingAttention', 'ringAppend'] as const;
export type KernelOp = (typeof KERNEL_OPS)[number];

export type ToWorker =
  | { op: 'alloc'; id: number; length: number }
  | { op: 'upload'; id: number; data: Float32Array }
  /** A packed matmul weight (quant.ts layout: rows of rowBytes(dtype, cols) bytes), kept packed in the worker. */
  | { op: 'uploadWeight'; id: number; dtype: Exclude<WeightDType, 'f32'>; rows: number; cols: number; data: Uint8Array }
  | { op: 'write'; id: number; data: Float32Array; offset: number }
  | { op: 'copy'; dst: number; dstOffset: number; src: number; srcOffset: number; length: number }
  | { op: 'free'; id: number }
  | { op: 'call'; name: KernelOp; args: unknown[] }
  /** Backend.run: any named kernel, its declaration (plain data) forwarded as it is. */
  | { op: 'run'; kernel: KernelDef; tensors: number[]; scalars: KernelScalars }
  /** Replies with the data (or the first error so far) and the kernel counter. */
  | { op: 'read'; req: number; id: number; offset: number; length?: number }
  /** Replies with the kernel counter (or the first error so far). */
  | { op: 'stats'; req: number }
  | { op: 'destroy' };

export type FromWorker =
  | { type: 'ready'; description: string }
  | { type: 'init-error'; message: string }
  | { type: 'reply'; req: number; kernelCalls: number; data?: Float32Array; error?: string }
  /** Sent once, when an op fails; later replies carry the same error. */
  | { type: 'failed'; message: string };
