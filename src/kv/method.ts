// A KV-cache method: how one group of a layer's KV heads keeps its keys and values and attends over
// them. Each method is one folder under src/kv/ on this small interface (kvpress-style) and one
// entry in ./registry.ts; the coordinator (src/engine/session.ts) only ever sees this interface, and
// test/kv-methods.test.ts runs every registered method on every backend against its reference.
//
// Per chunk of `rows` tokens at positions pastLen…, the coordinator calls attend() and then append()
// on each group's cache, on the group's backend:
//  - attend: each query row r (position pastLen + r) attends, causally, the positions the method
//    keeps of [0, pastLen) and the chunk's own keys up to itself; what the cache holds is unchanged.
//    It may return a promise (a method that attends on the host reads q, k, v back; the
//    coordinator awaits it before append).
//  - append: stores the chunk, so the next chunk sees positions [0, pastLen + rows). It also gets the
//    chunk's queries (a method may score tokens from them, as Locret's retaining heads do) and may
//    return a promise (such a method reads tensors back to the host; the coordinator awaits it).
// Tensors are the Backend contract's (src/backend/contract.ts): q and out [rows][numKvHeads·group][headDim],
// k and v [rows][numKvHeads][headDim], f32, keys after RoPE (with decoupled heads, KvGroupShape.maps:
// q and out [rows][query heads][headDim], v [rows][value heads][headDim]). Kernels are Backend ops for now.
import type { Backend, DeviceTensor, HeadMaps, StreamingWindow } from '../backend/contract.js';
import type { KvDType } from '../backend/kv-dtype.js';
import type { LocretSettings } from './locret/settings.js';
import type { MagicPigSettings } from './magicpig/settings.js';

/** The heads one cache serves: numKvHeads KV heads, each read by `group` query heads. */
export interface KvGroupShape {
  numKvHeads: number;
  group: number;
  headDim: number;
  /** The layer the group belongs to (0 when not given); methods with per-layer weights read it. */
  layer?: number;
  /**
   * The layer's KV heads this group serves, ascending (default: all of them, 0 … numKvHeads − 1);
   * a method that scores from the whole layer (locret) picks its heads' scores by them.
   */
  kvHeads?: number[];
  /**
   * Decoupled key and value heads (a DHA layer): numKvHeads key heads, maps.numValueHeads value
   * heads, maps.queryToKey.length query heads (group is then 1 and unused). Only methods with
   * decoupledHeads are given such a shape.
   */
  maps?: HeadMaps;
}

/**
 * Every head group's q, k, v of the chunk in one layer, on the main backend (before any transfer):
 * what a method that reads the whole layer (locret's retaining head) needs when it serves only part
 * of it. q is [rows][numKvHeads·group][headDim], k and v [rows][numKvHeads][headDim], per group.
 */
export interface LayerChunk {
  groups: ReadonlyArray<{ kvHeads: readonly number[]; q: DeviceTensor; k: DeviceTensor; v: DeviceTensor }>;
}

/** Value heads of a group: numKvHeads unless its heads are decoupled. */
export function valueHeadsOf(shape: KvGroupShape): number {
  return shape.maps?.numValueHeads ?? shape.numKvHeads;
}

/** Query heads of a group. */
export function queryHeadCount(shape: KvGroupShape): number {
  return shape.maps ? shape.maps.queryToKey.length : shape.numKvHeads * shape.group;
}

/** Options of a session that methods read (each reads its own; a new method adds its fields here). */
export interface KvSettings {
  /** Storage of full caches (the full method). */
  kvDtype: KvDType;
  /** Sink + recent window (the streaming method). */
  window: StreamingWindow;
  /** RazorAttention's compensation token (the streaming method). */
  compensation: boolean;
  /** Budget, stabilizers and retaining heads (the locret method; src/kv/locret/settings.ts). */
  locret?: LocretSettings;
  /** LSH parameters, static tokens and hyperplane seed (the magicpig method; src/kv/magicpig/settings.ts). */
  magicpig?: MagicPigSettings;
}

/** One tensor of a cache: what it holds and its length in 32-bit words. */
export interface KvTensorSpec {
  name: string;
  words: number;
  /** Held in host memory (a WebAssembly memory of the method's own), not on the group's backend. */
  host?: boolean;
}

export interface KvMethod {
  /** The name patterns use for it (and its folder under src/kv/). */
  readonly name: string;
  /** Where its groups run: the main backend, or the side backend (the CPU in the split placement). */
  readonly home: 'main' | 'side';
  /** It serves groups with decoupled key and value heads (KvGroupShape.maps); others are never given one. */
  readonly decoupledHeads?: boolean;
  /** The tensors a cache allocates for `shape` with room for `capacity` positions. */
  layout(shape: KvGroupShape, capacity: number, settings: KvSettings): KvTensorSpec[];
  /** A cache on `backend` holding no positions yet, allocated exactly as layout() says. */
  create(backend: Backend, shape: KvGroupShape, capacity: number, settings: KvSettings): KvGroupCache;
}

export interface KvGroupCache {
  /** Bytes of the tensors it holds now. */
  bytes(): number;
  /** Of bytes(), those held in host memory whatever the group's backend (KvTensorSpec.host; absent: none). */
  hostBytes?(): number;
  /** A sampling method's keys per decode step (single-row chunk): sampled and offloaded, summed over its query heads. */
  sampling?(): KvSampling;
  attend(out: DeviceTensor, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, rows: number, pastLen: number): void | Promise<void>;
  /** `layer`: every group's q, k, v of this layer's chunk (the coordinator passes it; tests may not). */
  append(k: DeviceTensor, v: DeviceTensor, rows: number, pastLen: number, q: DeviceTensor, layer?: LayerChunk): void | Promise<void>;
  /** Makes room for `capacity` positions (more than before), keeping positions [0, pastLen). */
  grow(capacity: number, pastLen: number): void;
  /** Releases its tensors; the cache must not be used afterwards. */
  free(): void;
}

/** Per decode step, keys a sampling method attended of those it could have (summed over query heads). */
export interface KvSampling { sampled: number[]; offloaded: number[] }

/** Bytes of a layout. */
export function layoutBytes(specs: readonly KvTensorSpec[]): number {
  return 4 * specs.reduce((n, s) => n + s.words, 0);
}

/** Of a layout's bytes, those held in host memory (KvTensorSpec.host). */
export function layoutHostBytes(specs: readonly KvTensorSpec[]): number {
  return 4 * specs.reduce((n, s) => n + (s.host ? s.words : 0), 0);
}

/** Projected bytes of one group's cache: what a cache created (or grown) at `capacity` holds. */
export function methodBytes(method: KvMethod, shape: KvGroupShape, capacity: number, settings: KvSettings): number {
  return layoutBytes(method.layout(shape, capacity, settings));
}

/** Bytes of live tensors (f32 words). */
export function tensorBytes(tensors: ReadonlyArray<DeviceTensor | null>): number {
  return 4 * tensors.reduce((n, t) => n + (t ? t.length : 0), 0);
}

/** The attention shape of a group's chunk (scale 1/√headDim). */
export function groupAttentionShape(shape: KvGroupShape, rows: number, pastLen: number) {
  const { numKvHeads, headDim, maps } = shape;
  return { rows, numHeads: queryHeadCount(shape), numKvHeads, headDim, pastLen, scale: 1 / Math.sqrt(headDim), ...(maps ? { maps } : {}) };
}
