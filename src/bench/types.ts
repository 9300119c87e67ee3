import type { PerTokenCounters } from '../gpu/context.js';
// The benchmark's result records (what results.json holds). Times in ms, sizes in bytes.
import type { Placement } from '../engine/engine.js';
import type { KvDType } from '../backend/kv-dtype.js';

export interface MachineInfo {
  cpu: string;
  cores: number;
  memory_bytes: number;
  platform: string;
  node: string;
  /** WebGPU adapter used for GPU rows, or null. */
  gpu: string | null;
  /** True when that adapter is a software rasteriser (timings say nothing about GPUs). */
  gpu_software: boolean;
  /** Why GPU rows are missing or untrustworthy. */
  gpu_note: string;
}

export interface ModelInfo {
  /** `shape:NAME` or the checkpoint directory. */
  source: string;
  layers: number;
  layers_total: number;
  hidden_size: number;
  intermediate_size: number;
  num_heads: number;
  num_kv_heads: number;
  head_dim: number;
  vocab_size: number;
  /** f32 bytes of weights each decode step reads (layers + LM head). */
  decode_weight_bytes: number;
  pattern: string;
  sink: number;
  recent: number;
}

/**
 * A roofline measured in the run. WASM (one thread): a SIMD streaming read of a buffer larger than
 * the caches, and independent f32x4 multiply + add chains on registers (no FMA in WASM SIMD).
 * WebGPU (wgsl/probe.wgsl): a coalesced read of a buffer larger than a GPU's caches, and
 * independent vec4 fma chains on registers.
 */
export interface Probes {
  bandwidth_gbps: number;
  bandwidth_buffer_bytes: number;
  peak_gflops: number;
  /** WASM: the kernel threads the probes ran on at once (the rows they are compared with ran on as many). */
  threads?: number;
}

export interface KernelRow {
  /** e.g. gemv, gemm, attention-decode, streaming-decode, attention-prefill, streaming-prefill, attention-decode-layer. */
  kernel: string;
  backend: 'wasm' | 'webgpu';
  /** Readable problem size. */
  shape: string;
  context: number | null;
  ms: number;
  flops: number;
  /** Bytes the kernel must move at least once (weights, KV read, activations). */
  bytes: number;
  gflops: number;
  gbps: number;
  /** Share of the same backend's probes (WASM: `probes`, WebGPU: `gpu_probes`); null without them. */
  pct_of_peak: number | null;
  pct_of_bandwidth: number | null;
  /** Achieved GFLOP/s over min(peak, intensity × bandwidth). */
  pct_of_roofline: number | null;
  /** attention-decode-layer rows: which heads ("full", "duo@0.5") and the speedup over full. */
  config?: string;
  speedup_vs_full?: number;
  /** Thread-scaling rows: the thread count and the speedup over the same kernel on one thread. */
  threads?: number;
  speedup_vs_one_thread?: number;
  note?: string;
}

/** full = every head retrieval; duo = DuoAttention at a sparsity. */
export type HeadsKind = 'full' | 'duo';

export interface KvBytes { gpu: number; cpu: number; retrieval: number; streaming: number; total: number }

export interface E2eRow {
  /** e.g. "duo@0.5/split", "full/cpu". */
  label: string;
  heads: HeadsKind;
  sparsity: number;
  placement: Placement;
  /** Storage of the retrieval heads' full caches (--kv-dtype; streaming rings are f32). */
  kv_dtype: KvDType;
  /** Device that runs the projections and the retrieval heads. */
  main_device: 'cpu' | 'gpu';
  context: number;
  prefill_ms: number | null;
  /** measured: the whole prompt ran; estimated: first and last chunk timed, linear in between. */
  prefill_method: 'measured' | 'estimated' | null;
  decode_ms_per_token: number | null;
  /** Every timed decode step (ms), in order. */
  decode_ms_samples: number[];
  decode_tokens: number;
  /**
   * DuoAttention rows: median of the full-attention decode steps interleaved with this row's (same
   * main device, same context); decode_speedup divides it by this row's median.
   */
  reference_decode_ms: number | null;
  /** Full attention on the same main device, same context, same run, divided by this row. */
  prefill_speedup: number | null;
  decode_speedup: number | null;
  /** The decode speedup that the bytes read per token imply (weights + KV). */
  ideal_decode_speedup: number | null;
  kv: KvBytes | null;
  /** GPU counters per timed decode step (docs/benchmarks.md "Counters"); null on the CPU placement. */
  counters: PerTokenCounters | null;
  error?: string;
}

export interface MemoryRow {
  label: string;
  heads: HeadsKind;
  sparsity: number;
  placement: Placement;
  kv_dtype: KvDType;
  context: number;
  /** From session.kvMemory() after a decode step at this context. */
  measured: KvBytes;
  /** projectKvMemory (what `duet memory --kv-dtype <kv_dtype>` prints), mapped onto the placement's devices. */
  projected: { gpu: number; cpu: number; total: number; full: number };
  /** measured total = projected total (rings are allocated whole, so contexts below sink + recent differ). */
  matches: boolean;
  /** Bytes of the CPU's WebAssembly memory in use. */
  wasm_bytes: number;
  rss_bytes: number;
  peak_rss_bytes: number;
  error?: string;
}

export interface Crossover {
  label: string;
  sparsity: number;
  placement: Placement;
  kv_dtype: KvDType;
  target: number;
  /** Smallest measured context where the decode speedup reached the target, or null. */
  measured_context: number | null;
  /** From straight-line fits of decode ms vs context (full and DuoAttention), or null. */
  fitted_context: number | null;
  /** Where bytes read per token (weights + KV) predict the target, with the bench's layers and with all layers. */
  bytes_context: number | null;
  bytes_context_all_layers: number | null;
  /** What sets the crossover for this sparsity (the bytes each decode step reads). */
  why: string;
  /** The straight-line fits behind fitted_context, in words (null with fewer than two contexts). */
  fit: string | null;
}

export interface BenchResults {
  version: 1;
  created: string;
  command: string;
  machine: MachineInfo;
  model: ModelInfo;
  notes: string[];
  settings: {
    suites: string[]; contexts: number[]; sparsities: number[]; placements: Placement[]; kv_dtypes: KvDType[];
    prefill_chunk: number; prefill_max: number; threads: number; decode_tokens: number; warmup_tokens: number; seed: number;
  };
  probes: Probes | null;
  /** The WebGPU adapter's roofline (null without GPU kernel rows). */
  gpu_probes: Probes | null;
  kernels: KernelRow[];
  e2e: E2eRow[];
  memory: MemoryRow[];
  crossovers: Crossover[];
  /** Placement 'auto' per DuoAttention sparsity against the split and gpu decode the e2e suite measured (needs both). */
  auto_placement?: AutoPlacementRow[];
  /** SVG files written next to results.json. */
  plots: string[];
}

export interface AutoPlacementRow {
  sparsity: number;
  choice: 'gpu' | 'split';
  reason: string;
  /** The calibration's cost estimates per decoded token (ms), and what it measured. */
  split_ms_per_token: number;
  gpu_ms_per_token: number;
  round_trip_ms: number;
  cpu_streaming_ms: number;
  gpu_streaming_ms: number;
  /** Per context: the e2e suite's decode ms per token on each placement, and whether the choice was the faster. */
  measured: Array<{ context: number; split_decode_ms: number; gpu_decode_ms: number; faster: 'gpu' | 'split'; chosen_was_faster: boolean }>;
}
