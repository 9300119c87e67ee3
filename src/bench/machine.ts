// The machine a bench ran on (Node), for results.json and the README.
import { cpus, platform, release, totalmem, arch } from 'node:os';
import type { MachineInfo } from './types.js';
import type { ProcessMemory } from './memory.js';
import { isSoftwareAdapter } from '../gpu/context.js';

/** Adapter names of software rasterisers: their timings say nothing about GPUs. */
export function isSoftwareGpu(description: string): boolean {
  return isSoftwareAdapter({ description });
}

export function machineInfo(gpu: string | null, gpuNote: string): MachineInfo {
  const list = cpus();
  return {
    cpu: list[0]?.model.trim() ?? 'unknown CPU', cores: list.length, memory_bytes: totalmem(),
    platform: `${platform()} ${release()} ${arch()}`, node: process.version,
    gpu, gpu_software: gpu !== null && isSoftwareGpu(gpu), gpu_note: gpuNote,
  };
}

export function processMemory(): ProcessMemory {
  return { rss: process.memoryUsage().rss, peakRss: process.resourceUsage().maxRSS * 1024 };
}
