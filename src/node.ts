// Duet's Node entry: everything the browser entry has, plus model and pattern folders on disk,
// Dawn (the optional `webgpu` package, imported only when a GPU is asked for), WebAssembly
// kernel threads in worker_threads, and the tools that write files or serve HTTP.
import type { ModelFiles } from './model/files.js';
import { createNodeGpu } from './node/gpu.js';
import { files } from './node/load-model.js';
import { chooseTrainingGpu, type TrainingDevice } from './api/device.js';
import { identifyHeadsOn, type HeadIdentification, type IdentifyOptions } from './api/identify.js';

export * from './api/public.js';
export { loadModel, type ModelSource, type NodeModelOptions, type PatternSource } from './node/load-model.js';
export { nodeModelFiles } from './node/files.js';
export { httpModelFiles } from './browser/http-files.js';
export { savePattern, PATTERN_FILES } from './node/pattern-files.js';
export { BENCH_SUITES, benchReportText, runBenchmark, writeBenchReport, type BenchmarkOptions, type BenchResults, type BenchSuite } from './node/bench.js';
export { trainModel, type TrainOptions, type TrainResult } from './node/train.js';
export { convertToDha, type DhaConvertOptions, type DhaConverted, type DhaStopped, type DhaResumePoint } from './node/dha.js';
export { fallbackText, quantizeModel, type QuantizeOptions, type QuantizeResult } from './node/quantize.js';
export { DuetServer, type ServeOptions } from './server/server.js';
export { runServeBenchmark, serveReportText, type ServeBenchmarkOptions, type ServeResults, type ServeRow } from './node/bench-serve.js';
export { offloadReportText, runOffloadBenchmark, type OffloadBenchmarkOptions, type OffloadResults } from './node/bench-offload.js';
export type { OffloadArmRow } from './bench/offload.js';
export { peersReportText, runPeersBenchmark, type PeerRow, type PeersBenchmarkOptions, type PeersResults } from './node/bench-peers.js';

export interface NodeIdentifyOptions extends IdentifyOptions {
  /** 'cpu' (default), 'gpu' (a WebGPU adapter, software or not) or 'auto' (a hardware adapter, else the CPU). */
  device?: TrainingDevice;
  gpuBackend?: string;
  notice?: (message: string) => void;
}

/** Finds the retrieval heads of a model folder (see IdentifyOptions); savePattern writes the result. */
export async function identifyHeads(source: string | URL | ModelFiles, options: NodeIdentifyOptions): Promise<HeadIdentification> {
  const { device, gpuBackend, notice = () => {}, ...rest } = options;
  const gpu = await chooseTrainingGpu(device, () => createNodeGpu({ backend: gpuBackend }), notice);
  try {
    return await identifyHeadsOn(files(source), rest, gpu);
  } finally {
    gpu?.destroy();
  }
}
