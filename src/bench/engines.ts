// Engines for each configuration the bench compares (full attention, DuoAttention at a sparsity)
// on each placement. All CPU sides share one CPU backend (one WebAssembly memory), and they share
// their weights: every engine uploads the same host arrays for the embedding, the norms and the MLP
// (only the attention projections are split differently per head pattern), so the pool uploads
// each host array once and hands the same tensor to every engine that uploads it. That lets all
// configurations live at once, so e2e can interleave their decode steps. Uploaded tensors are
// weights: nothing writes to them. Each engine's lease frees what it allocated when the engine
// is disposed, and a shared weight when its last engine goes.
import { binarize, allHeads, type HeadKinds } from '../attention/pattern.js';
import type { DeviceTensor, StreamingWindow } from '../backend/contract.js';
import { Engine, type CpuLike, type Placement } from '../engine/engine.js';
import { createCpuBackend, type CpuBackend, type CpuOptions, type CpuTensor } from '../cpu/backend.js';
import type { GpuContext } from '../gpu/context.js';
import type { KvDType } from '../backend/kv-dtype.js';
import type { ModelConfig } from '../model/config.js';
import type { WeightDType } from '../model/quant.js';
import type { ModelWeights } from '../model/weights.js';
import type { HeadsKind } from './types.js';

interface Shared { tensor: CpuTensor; refs: number }

export class CpuPool {
  private backend: CpuBackend | null = null;
  private readonly shared = new Map<Float32Array | Uint8Array, Shared>();

  constructor(private readonly options: CpuOptions = {}) {}

  async lease(): Promise<CpuLike> {
    const inner = (this.backend ??= await createCpuBackend(this.options));
    const shared = this.shared;
    const live = new Set<DeviceTensor>();
    const uploaded = new Map<DeviceTensor, Float32Array | Uint8Array>();
    const release = (data: Float32Array | Uint8Array) => {
      const e = shared.get(data)!;
      if (--e.refs === 0) { inner.free(e.tensor); shared.delete(data); }
    };
    const view = Object.create(inner) as CpuBackend;
    view.alloc = (length) => { const t = inner.alloc(length); live.add(t); return t; };
    const share = (data: Float32Array | Uint8Array, upload: () => CpuTensor) => {
      let e = shared.get(data);
      if (!e) { e = { tensor: upload(), refs: 0 }; shared.set(data, e); }
      if (!uploaded.has(e.tensor)) { e.refs++; uploaded.set(e.tensor, data); }
      return e.tensor;
    };
    view.upload = (data) => share(data, () => inner.upload(data));
    // Packed weights (q8_0 …) are shared the same way, by their host bytes.
    view.uploadWeight = (m) => share(m.data, () => inner.uploadWeight(m));
    view.free = (t) => {
      const data = uploaded.get(t);
      if (data) { uploaded.delete(t); release(data); return; }
      live.delete(t); inner.free(t);
    };
    view.destroy = () => {
      for (const t of live) inner.free(t);
      live.clear();
      for (const data of uploaded.values()) release(data);
      uploaded.clear();
    };
    return view;
  }

  /** Stops the backend's worker threads (after the last engine). */
  close(): void { this.backend?.destroy(); }

  /** Bytes of WebAssembly memory in use (0 before the first lease). */
  get memoryBytes(): number { return this.backend?.memoryBytes ?? 0; }
}

export interface HeadConfig {
  label: string;
  heads: HeadsKind;
  sparsity: number;
  kinds: HeadKinds;
}

/** Full attention, then DuoAttention at each sparsity (binarised from the gate values `alphas`). */
export function headConfigs(config: ModelConfig, alphas: number[][], sparsities: number[]): HeadConfig[] {
  const out: HeadConfig[] = [{ label: 'full', heads: 'full', sparsity: 0, kinds: allHeads(config.numLayers, config.numKvHeads, true) }];
  for (const s of sparsities) out.push({ label: `duo@${s}`, heads: 'duo', sparsity: s, kinds: binarize(alphas, { sparsity: s }) });
  return out;
}

/** Which placements a head configuration runs on: full attention has no streaming side to place. */
export function placementsFor(h: HeadConfig, placements: Placement[]): Placement[] {
  if (h.heads === 'duo') return placements;
  const out: Placement[] = [];
  if (placements.includes('split') || placements.includes('gpu')) out.push('gpu');
  if (placements.includes('cpu')) out.push('cpu');
  return out;
}

export interface EngineFactory {
  config: ModelConfig;
  weights: ModelWeights;
  weightDType?: WeightDType;
  /** Storage of the full KV caches (default f32). */
  kvDtype?: KvDType;
  window: StreamingWindow;
  pool: CpuPool;
  acquireGpu?: () => Promise<{ gpu: GpuContext | null; reason: string }>;
}

export async function createBenchEngine(f: EngineFactory, h: HeadConfig, placement: Placement): Promise<Engine> {
  const engine = await Engine.create(f.config, f.weights, {
    device: placement === 'cpu' ? 'cpu' : 'gpu', placement, kinds: h.kinds, window: f.window, weights: f.weightDType, kvDtype: f.kvDtype,
    acquireGpu: f.acquireGpu, createCpu: () => f.pool.lease(),
  });
  if (engine.placement !== placement) {
    engine.dispose();
    throw new Error(`asked for placement ${placement}, the engine chose ${engine.placement}`);
  }
  return engine;
}
