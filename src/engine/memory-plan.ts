// Memory a placed model needs, planned before anything is allocated: weights, KV caches and a
// session's activations on each device, computed from config.json and the placement exactly as
// DeviceModel and Session allocate them, and checked against the one limit Duet can know in every
// environment: the CPU backend's wasm32 memory (4 GiB). WebGPU does not expose a device's memory
// size; GPU tensors larger than a buffer are split (src/gpu/context.ts), so the GPU side is planned
// (and reported) but not refused here.
import type { HeadKinds } from '../attention/pattern.js';
import type { StreamingWindow } from '../backend/contract.js';
import { DuetError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { rowBytes, type WeightDType } from '../model/quant.js';
import { matrixBytes, type ModelWeights } from '../model/weights.js';
import type { KvDType } from '../backend/kv-dtype.js';
import { layoutBytes, layoutHostBytes, methodBytes, valueHeadsOf, type KvMethod, type KvSettings } from '../kv/method.js';
import type { LocretSettings } from '../kv/locret/settings.js';
import type { MagicPigSettings } from '../kv/magicpig/settings.js';
import { methodsOfKinds, type HeadMethods } from '../kv/registry.js';
import { layerGroups, type LayerGroup } from './layer-groups.js';

/** wasm32's address space: the most the CPU backend's memory can grow to. */
export const WASM_MEMORY_BYTES = 2 ** 32;
/** Kept free of the plan on the CPU heap: the kernels' per-thread scratch and the module's own data. */
export const WASM_HEADROOM_BYTES = 64 * 2 ** 20;

export interface PlacementShape {
  config: ModelConfig;
  /** Retrieval (true) / streaming (false) per layer per KV head, the model's sliding window applied. */
  kinds: HeadKinds;
  /** The KV method of each (layer, KV head), by name; default: from `kinds`. */
  methods?: HeadMethods;
  window: StreamingWindow;
  /** Where the weights, full caches and activations live; where methods whose home is 'side' (the streaming rings) live. */
  main: 'cpu' | 'gpu';
  streaming: 'cpu' | 'gpu';
  /** Storage of the full caches (default f32); the rings are f32. */
  kvDtype?: KvDType;
  /** Streaming heads keep RazorAttention's compensation sums (default false). */
  compensation?: boolean;
  /** Budget, stabilizers and retaining heads of heads whose method is locret. */
  locret?: LocretSettings;
  /** LSH parameters and static tokens of heads whose method is magicpig. */
  magicpig?: MagicPigSettings;
}

/** Each layer's head groups, as DeviceModel builds them. */
function groupsOf(p: PlacementShape): LayerGroup[][] {
  return layerGroups(p.config, p.methods ?? methodsOfKinds(p.kinds));
}

export interface DeviceBytes {
  weights: number; kv: number; activations: number; total: number;
  /** Of kv, the bytes in KV methods' own host memories (magicpig's stores), outside the CPU backend's WebAssembly memory. */
  offloadedKv: number;
}
export type MemoryPlan = Record<'cpu' | 'gpu', DeviceBytes>;

/**
 * Bytes of the weights placed on the main device with every matmul weight stored as `dtype`
 * (untied embeddings keep their own storage: `embedBytes`, default `dtype`).
 */
export function placedWeightBytes(p: PlacementShape, dtype: WeightDType, embedBytes?: number): number {
  const { hiddenSize: H, intermediateSize: I, headDim: D, vocabSize: V } = p.config;
  // One group's Q, K, V rows and O columns (and biases).
  const side = (g: LayerGroup): number => {
    const rows = g.numHeads + g.shape.numKvHeads + valueHeadsOf(g.shape);
    const bias = p.config.attentionBias ? 4 * rows * D : 0;
    return rows * D * rowBytes(dtype, H) + H * rowBytes(dtype, g.numHeads * D) + bias;
  };
  const lmHead = V * rowBytes(dtype, H);
  let bytes = lmHead + (p.config.tieWordEmbeddings ? 0 : embedBytes ?? lmHead) + 4 * H + 4 * (D / 2);
  for (const groups of groupsOf(p)) {
    bytes += 8 * H + 2 * I * rowBytes(dtype, H) + H * rowBytes(dtype, I) + groups.reduce((n, g) => n + side(g), 0);
  }
  return bytes;
}

/**
 * Every device's bytes for weights of `weightBytes` (on the main device) and one session of
 * `context` positions prefilling `rows` tokens at a time, as Session allocates them (each group's
 * cache as its KV method lays it out, activations f32).
 */
export function planMemory(p: PlacementShape, weightBytes: number, context: number, rows: number): MemoryPlan {
  const { hiddenSize: H, intermediateSize: I, headDim: D, vocabSize: V } = p.config;
  const settings: KvSettings = { kvDtype: p.kvDtype ?? 'f32', window: p.window, compensation: p.compensation ?? false, locret: p.locret, magicpig: p.magicpig };
  const plan: MemoryPlan = { cpu: zero(), gpu: zero() };
  const deviceOf = (m: KvMethod) => (m.home === 'main' ? p.main : p.streaming);
  // Largest group of each method over the layers (Session sizes one workspace per method).
  const most = new Map<KvMethod, { q: number; k: number; v: number }>();
  for (const groups of groupsOf(p)) {
    for (const g of groups) {
      const m = most.get(g.method) ?? { q: 0, k: 0, v: 0 };
      most.set(g.method, { q: Math.max(m.q, g.numHeads), k: Math.max(m.k, g.shape.numKvHeads), v: Math.max(m.v, valueHeadsOf(g.shape)) });
      const specs = g.method.layout(g.shape, context, settings), host = layoutHostBytes(specs);
      plan[deviceOf(g.method)].kv += layoutBytes(specs) - host;
      plan.cpu.kv += host;
      plan.cpu.offloadedKv += host;
    }
  }
  // Per method q, k, v, out for `rows` tokens (Session's GroupBuffers), again on the method's device
  // when that is not the main one, which also holds the packed q|k|v transfer.
  const buffers = (h: { q: number; k: number; v: number }) => 4 * rows * D * (2 * h.q + h.k + h.v);
  // The residual stream x, gate and up for `rows` tokens and one logits row (the norms are folded into the matmuls).
  plan[p.main].activations += 4 * (rows * (H + 2 * I) + V);
  for (const [method, heads] of most) {
    plan[p.main].activations += buffers(heads);
    if (deviceOf(method) !== p.main) {
      plan[deviceOf(method)].activations += buffers(heads);
      plan[p.main].activations += 4 * rows * D * (heads.q + heads.k + heads.v);
    }
  }
  plan[p.main].weights = weightBytes;
  for (const d of [plan.cpu, plan.gpu]) d.total = d.weights + d.kv + d.activations;
  return plan;
}

/**
 * KV-cache bytes of one session of `context` positions under `methods`, by where the methods live
 * (main, side), each group's cache laid out as its method allocates it; bytes and KV heads per method.
 * Exact for every layout layerGroups builds, DHA's decoupled layers included.
 */
export function kvBytesByHome(config: ModelConfig, methods: HeadMethods, context: number, settings: KvSettings):
  { main: number; side: number; heads: Record<string, number>; byMethod: Record<string, number> } {
  const out = { main: 0, side: 0, heads: {} as Record<string, number>, byMethod: {} as Record<string, number> };
  for (const groups of layerGroups(config, methods)) {
    for (const g of groups) {
      const b = methodBytes(g.method, g.shape, context, settings);
      out[g.method.home] += b;
      out.byMethod[g.method.name] = (out.byMethod[g.method.name] ?? 0) + b;
      out.heads[g.method.name] = (out.heads[g.method.name] ?? 0) + g.kvHeads.length;
    }
  }
  return out;
}

/** Bytes of weights as they are held (each matrix in its own storage), e.g. packed weights placed unchanged. */
export function heldWeightBytes(w: ModelWeights): number {
  const vectors = (l: ModelWeights['layers'][number]) => [l.inputNorm, l.postNorm, l.bq, l.bk, l.bv].reduce((a, v) => a + (v?.byteLength ?? 0), 0);
  let bytes = matrixBytes(w.lmHead) + (w.embed === w.lmHead ? 0 : matrixBytes(w.embed)) + w.finalNorm.byteLength;
  for (const l of w.layers) bytes += vectors(l) + [l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown].reduce((a, m) => a + matrixBytes(m), 0);
  return bytes;
}

/** What the CPU backend's memory can hold of a plan. */
export const CPU_PLAN_LIMIT = WASM_MEMORY_BYTES - WASM_HEADROOM_BYTES;

/** The plan's bytes in the CPU backend's own WebAssembly memory (not the KV methods' separate stores). */
export function cpuBackendBytes(plan: MemoryPlan): number {
  return plan.cpu.total - plan.cpu.offloadedKv;
}

/** The largest context (≤ `upTo`) whose plan fits the CPU limit; 0 when not even one position fits. */
export function maxCpuContext(p: PlacementShape, weightBytes: number, upTo: number, rows: number): number {
  const fits = (c: number) => cpuBackendBytes(planMemory(p, weightBytes, c, Math.min(rows, c))) <= CPU_PLAN_LIMIT;
  if (fits(upTo)) return upTo;
  let lo = 0, hi = upTo; // fits(lo) or lo = 0; !fits(hi)
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (fits(mid)) lo = mid; else hi = mid;
  }
  return lo;
}

/** The plan's CPU side in words: "4.50 GiB (weights 4.00 GiB, KV cache 0.25 GiB, activations 0.25 GiB)". */
export function describeCpu(plan: MemoryPlan): string {
  const c = plan.cpu;
  return `${gib(c.total - c.offloadedKv)} (weights ${gib(c.weights)}, KV cache ${gib(c.kv - c.offloadedKv)}, activations ${gib(c.activations)})`;
}

/** Refuses a plan whose CPU side cannot fit the WebAssembly memory, naming the option at fault and its value. */
export function checkCpuPlan(plan: MemoryPlan, field: string, value: string, advice: string): void {
  if (cpuBackendBytes(plan) <= CPU_PLAN_LIMIT) return;
  throw new DuetError(field, `${value}: the model needs ${describeCpu(plan)} of the CPU backend's WebAssembly memory, more than wasm32's 4 GiB allows (64 MiB kept for the kernels); ${advice}`);
}

export function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}

function zero(): DeviceBytes {
  return { weights: 0, kv: 0, activations: 0, total: 0, offloadedKv: 0 };
}
