// The CPU decode GEMV (one x row) against packed Q8_0/Q4_0 weights, on one thread, for kernel builds
// side by side: `npx tsx scripts/bench-packed-gemv.ts [OTHER.wasm ...]` times other builds of
// build/kernels.wasm (say, main's) and this checkout's (the last `npm run build`), interleaved round by
// round so all see the same machine. Prints each shape's median ms per build and the first build's
// time over the last's. Weights are random bytes with a sane f16 scale per block, rotated
// through copies larger than the caches, as in a real decode step.
import { readFileSync } from 'node:fs';
import { CpuBackend } from '../src/cpu/backend.ts';
import { instantiateKernels, kernelMemory, kernelModule } from '../src/cpu/wasm.ts';
import { median, warmFor } from '../src/bench/timing.ts';
import { rowBytes, type WeightDType } from '../src/model/quant.ts';
import type { DeviceTensor } from '../src/backend/contract.ts';

const SHAPES: Array<[string, number, number]> = [
  ['llama-3.2-1b gate/up_proj', 2048, 8192],
  ['llama-3.2-1b down_proj', 8192, 2048],
  ['qwen2.5-0.5b lm_head', 896, 151936],
];
const DTYPES: WeightDType[] = ['q8_0', 'q4_0'];
/** Each shape's weights are rotated through copies covering at least this much memory. */
const ROTATE_BYTES = 96 * 2 ** 20;
const ROUNDS = Number(process.env.ROUNDS ?? 9), CALLS_PER_ROUND = 5;

function randomBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; out[i] = s >>> 24; }
  return out;
}

/** Random blocks of `dtype` with each block's f16 scale set to 2^-7 (0x2000). */
function packedRows(dtype: WeightDType, rows: number, cols: number, seed: number): Uint8Array {
  const bytes = randomBytes(rows * rowBytes(dtype, cols), seed);
  const block = dtype === 'q8_0' ? 34 : 18;
  for (let p = 0; p < bytes.length; p += block) { bytes[p] = 0; bytes[p + 1] = 0x20; }
  return bytes;
}

interface Build { name: string; cpu: CpuBackend }

async function build(name: string, module: WebAssembly.Module): Promise<Build> {
  const { kernels, memory } = await instantiateKernels(kernelMemory(false), module);
  return { name, cpu: new CpuBackend(kernels, memory) };
}

const builds: Build[] = [];
for (const path of process.argv.slice(2)) builds.push(await build(path, await WebAssembly.compile(readFileSync(path))));
builds.push(await build('this build', await kernelModule(false)));

console.log(`packed GEMV, 1 thread, median of ${ROUNDS} rounds × ${CALLS_PER_ROUND} calls (ms per call), builds interleaved`);
for (const dtype of DTYPES) {
  for (const [label, inDim, outDim] of SHAPES) {
    const bytes = packedRows(dtype, outDim, inDim, inDim ^ outDim);
    const copies = Math.max(1, Math.ceil(ROTATE_BYTES / bytes.length));
    const x = new Float32Array(inDim).map((_, i) => Math.sin(i * 0.37) * (1 + (i % 7)));
    const per = builds.map((b) => {
      const ws: DeviceTensor[] = [];
      for (let c = 0; c < copies; c++) ws.push(b.cpu.uploadWeight({ dtype, rows: outDim, cols: inDim, data: bytes }));
      return { b, ws, x: b.cpu.upload(x), out: b.cpu.alloc(outDim), next: 0, times: [] as number[] };
    });
    for (const p of per) {
      await warmFor(200, () => { p.b.cpu.matmul(p.out, p.x, p.ws[p.next++ % copies], null, 1, inDim, outDim); });
    }
    for (let r = 0; r < ROUNDS; r++) {
      for (const p of per) {
        const t0 = performance.now();
        for (let i = 0; i < CALLS_PER_ROUND; i++) p.b.cpu.matmul(p.out, p.x, p.ws[p.next++ % copies], null, 1, inDim, outDim);
        p.times.push((performance.now() - t0) / CALLS_PER_ROUND);
      }
    }
    const ms = per.map((p) => median(p.times));
    const cells = per.map((p, i) => `${p.b.name}: ${ms[i].toFixed(2)} ms`);
    const ratio = ms.length > 1 ? `  (${(ms[0] / ms[ms.length - 1]).toFixed(2)}×)` : '';
    console.log(`${dtype} ${label} ${inDim}→${outDim}: ${cells.join(', ')}${ratio}`);
    for (const p of per) { for (const w of p.ws) p.b.cpu.free(w); p.b.cpu.free(p.x); p.b.cpu.free(p.out); }
  }
}
for (const b of builds) b.cpu.destroy();
