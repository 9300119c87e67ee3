// Shared setup for engine tests: checkpoints written to a temp dir, loaded back through the real
// loader, and engines on each placement (GPU ones need an adapter; in CI its absence is a failure).
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine, type Placement } from '../../src/engine/engine.ts';
import type { HeadKinds } from '../../src/attention/pattern.ts';
import type { StreamingWindow } from '../../src/backend/contract.ts';
import { loadCheckpoint } from '../../src/model/checkpoint.ts';
import { nodeModelFiles } from '../../src/node/files.ts';
import { createNodeGpu } from '../../src/node/gpu.ts';
import type { GpuContext } from '../../src/gpu/context.ts';
import { writeCheckpoint, type CheckpointSpec } from './checkpoint.ts';

export async function tempCheckpoint(spec: Partial<CheckpointSpec>) {
  const dir = mkdtempSync(join(tmpdir(), 'duet-ckpt-'));
  await writeCheckpoint(dir, spec);
  const ckpt = await loadCheckpoint(nodeModelFiles(dir));
  return { dir, ...ckpt };
}

let gpuContext: Promise<{ gpu: GpuContext | null; reason: string }> | null = null;

/** One shared GPU for the whole test process (Dawn device creation is slow on software GPUs). */
export function sharedGpu(): Promise<{ gpu: GpuContext | null; reason: string }> {
  gpuContext ??= createNodeGpu().then((r) => {
    if (!r.gpu && process.env.CI) throw new Error(`CI must have a (software) GPU adapter: ${r.reason}`);
    if (!r.gpu) console.warn(`[skip] no WebGPU adapter: ${r.reason}`);
    if (r.gpu) { const destroy = r.gpu.destroy.bind(r.gpu); r.gpu.destroy = () => {}; process.on('exit', destroy); }
    return r;
  });
  return gpuContext;
}

export async function gpuAvailable(): Promise<boolean> {
  return (await sharedGpu()).gpu !== null;
}

export const PLACEMENTS: Placement[] = ['cpu', 'gpu', 'split'];

export async function makeEngine(ckpt: Awaited<ReturnType<typeof tempCheckpoint>>, placement: Placement,
  kinds?: HeadKinds, window?: StreamingWindow, compensation?: boolean): Promise<Engine> {
  return Engine.create(ckpt.config, ckpt.weights, {
    device: placement === 'cpu' ? 'cpu' : 'gpu', placement, kinds, window, compensation,
    acquireGpu: sharedGpu,
  });
}
