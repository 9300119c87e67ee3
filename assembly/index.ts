// The CPU kernel module's exports. Every kernel takes byte addresses into the imported memory;
// allocation is done by the host (src/cpu/memory.ts). The KV methods' own kernels live in their
// folders (src/kv/<method>/*.as.ts, AssemblyScript); the shared pieces (SIMD helpers, GEMM, KV row
// formats) and the model's kernels are here.
export { matmul, gemmAdd } from './matmul';
export { matmulPacked, packedScratchFloats } from './matmul_packed';
export { rmsnorm } from './norm';
export { rope } from './rope';
export { siluMul, add } from './elementwise';
export { attention, attentionScratchFloats, kvAppend, kvDecodeScratchFloats } from '../src/kv/full/attention.as';
export { streamingAttention, ringAppend, compensationAppend, compensationScratchFloats, roundRows, streamingScratchFloats } from '../src/kv/streaming/streaming.as';

/** First byte after the module's static data: the host allocates above it. */
export function heapBase(): usize { return __heap_base; }
export { trainAttentionForward, trainAttentionBackward, trainAttentionScratchFloats } from './train_attention';
export { probeRead, probePeak, PEAK_PROBE_FLOPS } from './probe';
export { simhashCodes, simhashRows, simhashScratchFloats, magicpigAttend, magicpigScratchFloats, lshBuildTables, lshTablesScratchFloats, samplingWeightEntries, buildSamplingWeights, tabledLogWeight } from '../src/kv/magicpig/magicpig.as';
export { locretScores, locretScratchFloats } from '../src/kv/locret/locret.as';
