// `placement: 'auto'`: decide between `gpu` (every head on the GPU) and `split` (streaming heads on
// the CPU) from a short calibration on the devices at hand. Split pays when the CPU's streaming
// attention plus the GPU drain it costs (one host round trip per layer with streaming heads) is
// cheaper than the GPU running those heads itself; on real GPUs the drain usually decides it.
import type { Backend, DeviceTensor, StreamingWindow } from '../backend/contract.js';

export interface PlacementCalibration {
  /** Layers with at least one streaming head (each costs split one host round trip per token). */
  streamingLayers: number;
  /** Streaming KV heads in the layer that has the most (the calibration's shape). */
  streamingHeads: number;
  /** ms of a GPU submit + wait for a few bytes read back (median). */
  roundTripMs: number;
  /** ms of one decode step of those heads' streaming attention, window full, on the CPU (WASM) and on the GPU. */
  cpuStreamingMs: number;
  gpuStreamingMs: number;
}

export interface PlacementDecision {
  placement: 'gpu' | 'split';
  /** Per decoded token: what split adds over the GPU doing the heads itself, and what the GPU would spend on them. */
  splitMsPerToken: number;
  gpuMsPerToken: number;
  reason: string;
}

/**
 * The choice from measured costs. Split's cost per token is taken without overlap (the GPU's
 * retrieval attention can run while the CPU works, so split can do better than this), which makes
 * the rule choose split only when it clearly pays.
 */
export function choosePlacement(c: PlacementCalibration): PlacementDecision {
  if (c.streamingLayers === 0) {
    return { placement: 'gpu', splitMsPerToken: 0, gpuMsPerToken: 0, reason: 'no streaming heads: nothing to split' };
  }
  const split = c.streamingLayers * (c.roundTripMs + c.cpuStreamingMs);
  const gpu = c.streamingLayers * c.gpuStreamingMs;
  const placement = split < gpu ? 'split' : 'gpu';
  const f = (ms: number) => `${ms.toFixed(3)} ms`;
  const reason = `${c.streamingLayers} layers with streaming heads: split costs ${c.streamingLayers} × (${f(c.roundTripMs)} round trip + ${f(c.cpuStreamingMs)} `
    + `WASM streaming attention) = ${f(split)} per token, the GPU ${c.streamingLayers} × ${f(c.gpuStreamingMs)} = ${f(gpu)}`;
  return { placement, splitMsPerToken: split, gpuMsPerToken: gpu, reason };
}

/** ms per call of `record` when `reps` calls are recorded and then waited for once (median of samples). */
async function timePerCall(backend: Backend, probe: DeviceTensor, record: () => void, reps: number, samples: number): Promise<number> {
  const times: number[] = [];
  for (let s = 0; s <= samples; s++) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) record();
    backend.flush();
    await backend.read(probe, 0, 1);
    // The first sample compiles pipelines and warms caches: not counted.
    if (s > 0) times.push((performance.now() - t0) / reps);
  }
  times.sort((a, b) => a - b);
  return times[times.length >> 1];
}

/** One decode row of `heads` streaming KV heads (GQA `group`) on `backend`, ring full; returns a disposer. */
function streamingCase(backend: Backend, heads: number, group: number, headDim: number, window: StreamingWindow) {
  const slots = window.sink + window.recent;
  const fill = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) * 0.5);
  const out = backend.alloc(heads * group * headDim);
  const q = backend.upload(fill(heads * group * headDim));
  const k = backend.upload(fill(heads * headDim)), v = backend.upload(fill(heads * headDim));
  const kRing = backend.upload(fill(heads * slots * headDim)), vRing = backend.upload(fill(heads * slots * headDim));
  const shape = { rows: 1, numHeads: heads * group, numKvHeads: heads, headDim, pastLen: slots + 1, scale: 1 / Math.sqrt(headDim) };
  return {
    out,
    run: () => backend.streamingAttention(out, q, k, v, kRing, vRing, shape, window),
    dispose: () => { for (const t of [out, q, k, v, kRing, vRing]) backend.free(t); },
  };
}

/**
 * Measures the costs choosePlacement weighs, on the model's shapes: a few dozen decode-step calls
 * per device (tens of milliseconds on a real GPU).
 */
export async function calibratePlacement(gpu: Backend, cpu: Backend, o: {
  streamingPerLayer: number[]; group: number; headDim: number; window: StreamingWindow;
}): Promise<PlacementCalibration> {
  const streamingLayers = o.streamingPerLayer.filter((n) => n > 0).length;
  const streamingHeads = Math.max(0, ...o.streamingPerLayer);
  if (streamingLayers === 0) return { streamingLayers, streamingHeads, roundTripMs: 0, cpuStreamingMs: 0, gpuStreamingMs: 0 };
  const onGpu = streamingCase(gpu, streamingHeads, o.group, o.headDim, o.window);
  const onCpu = streamingCase(cpu, streamingHeads, o.group, o.headDim, o.window);
  try {
    // A round trip: one tiny dispatch, submitted and waited for, as the split placement does per layer.
    const roundTripMs = await timePerCall(gpu, onGpu.out, () => {}, 1, 9);
    const gpuStreamingMs = await timePerCall(gpu, onGpu.out, onGpu.run, 32, 5);
    const cpuStreamingMs = await timePerCall(cpu, onCpu.out, onCpu.run, 32, 5);
    return { streamingLayers, streamingHeads, roundTripMs, cpuStreamingMs, gpuStreamingMs };
  } finally {
    onGpu.dispose();
    onCpu.dispose();
  }
}
