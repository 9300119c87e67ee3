// The bench's check of placement 'auto': for each DuoAttention sparsity, the choice the calibration
// makes (src/engine/auto-placement.ts) next to the split and gpu decode times the e2e suite measured,
// so a wrong choice shows in the results.
import { calibratePlacement, choosePlacement } from '../engine/auto-placement.js';
import type { StreamingWindow } from '../backend/contract.js';
import { GpuBackend } from '../gpu/backend.js';
import type { GpuContext } from '../gpu/context.js';
import type { ModelConfig } from '../model/config.js';
import type { CpuLike } from '../engine/engine.js';
import type { HeadConfig } from './engines.js';
import type { AutoPlacementRow, E2eRow } from './types.js';

export async function autoPlacementRows(o: {
  config: ModelConfig; heads: HeadConfig[]; window: StreamingWindow; e2e: E2eRow[];
  acquireGpu: () => Promise<{ gpu: GpuContext | null; reason: string }>; cpu: () => Promise<CpuLike>;
}): Promise<AutoPlacementRow[]> {
  const duo = o.heads.filter((h) => h.heads === 'duo');
  if (!duo.length) return [];
  const { gpu: ctx } = await o.acquireGpu();
  if (!ctx) return [];
  const gpu = new GpuBackend(ctx);
  const cpu = await o.cpu();
  try {
    const rows: AutoPlacementRow[] = [];
    for (const h of duo) {
      const calibration = await calibratePlacement(gpu, cpu, {
        streamingPerLayer: h.kinds.map((row) => row.filter((retrieval) => !retrieval).length),
        group: o.config.numHeads / o.config.numKvHeads, headDim: o.config.headDim, window: o.window,
      });
      const d = choosePlacement(calibration);
      const measured = [...new Set(o.e2e.map((r) => r.context))].flatMap((context) => {
        const at = (p: string) => o.e2e.find((r) => r.label === `${h.label}/${p}` && r.context === context)?.decode_ms_per_token ?? null;
        const split = at('split'), onGpu = at('gpu');
        if (split === null || onGpu === null) return [];
        const faster = split < onGpu ? 'split' as const : 'gpu' as const;
        return [{ context, split_decode_ms: split, gpu_decode_ms: onGpu, faster, chosen_was_faster: faster === d.placement }];
      });
      rows.push({
        sparsity: h.sparsity, choice: d.placement, reason: d.reason, split_ms_per_token: d.splitMsPerToken, gpu_ms_per_token: d.gpuMsPerToken,
        round_trip_ms: calibration.roundTripMs, cpu_streaming_ms: calibration.cpuStreamingMs, gpu_streaming_ms: calibration.gpuStreamingMs, measured,
      });
    }
    return rows;
  } finally {
    cpu.destroy();
    gpu.destroy();
  }
}
