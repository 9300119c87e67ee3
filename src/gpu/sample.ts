// Host side of the GPU sampler (wgsl/sample.wgsl): the logits row stays on the GPU, two dispatches
// pick the token, and 8 bytes come back (the id, or the first non-finite logit and its index).
import { nonFiniteLogits, DEVICE_MAX_TOP_K, type DeviceChoice } from '../backend/device-sampler.js';
import type { GpuContext } from './context.js';
import type { GpuTensor } from './tensor.js';

/** Logits per workgroup of the candidates pass, and the most workgroups (bounds the merge's work). */
const CHUNK_MIN = 2048;
const MAX_GROUPS = 64;
const NONE = 0xffffffff;

interface SamplerBuffers { scratch: GPUBuffer; scratchWords: number; out: GPUBuffer }
const buffers = new WeakMap<GpuContext, SamplerBuffers>();

/** The context's scratch and result buffers, the scratch grown on demand. */
function samplerBuffers(ctx: GpuContext, words: number): SamplerBuffers {
  let b = buffers.get(ctx);
  if (!b) {
    b = { scratch: ctx.createBuffer(words * 4, 'sampler scratch'), scratchWords: words, out: ctx.createBuffer(16, 'sampled token') };
    buffers.set(ctx, b);
  } else if (b.scratchWords < words) {
    ctx.release(b.scratch);
    b.scratch = ctx.createBuffer(words * 4, 'sampler scratch');
    b.scratchWords = words;
  }
  return b;
}

/** The token for `choice` from the first `vocab` logits (see DeviceChoice); one submit, one host wait. */
export async function sampleOnGpu(ctx: GpuContext, logits: GpuTensor, vocab: number, choice: DeviceChoice): Promise<number> {
  const { k, temperature, topP, r } = choice;
  if (!(Number.isInteger(vocab) && vocab >= 1 && vocab <= logits.length)) throw new RangeError(`sampleToken: vocab ${vocab} outside 1..${logits.length}`);
  if (!(Number.isInteger(k) && k >= 1 && k <= DEVICE_MAX_TOP_K)) throw new RangeError(`sampleToken: k must be an integer in 1..${DEVICE_MAX_TOP_K} (got ${k})`);
  if (!(temperature >= 0) || !(topP > 0 && topP <= 1) || !(r >= 0 && r < 1)) {
    throw new RangeError(`sampleToken: temperature ${temperature}, topP ${topP} or r ${r} out of range`);
  }
  const kk = Math.min(k, vocab);
  const groups = Math.min(MAX_GROUPS, Math.ceil(vocab / CHUNK_MIN));
  const chunk = Math.ceil(vocab / groups);
  const b = samplerBuffers(ctx, groups * (2 * kk + 1));
  const params = new ArrayBuffer(28);
  new Uint32Array(params, 0, 4).set([vocab, kk, groups, chunk]);
  new Float32Array(params, 16, 3).set([temperature, topP, r]);
  const bound = [logits.buffer, b.scratch, b.out];
  ctx.dispatch(ctx.pipeline('sample', 'candidates'), bound, params, [groups]);
  ctx.dispatch(ctx.pipeline('sample', 'draw'), bound, params, [1]);
  const [id, bad] = new Uint32Array(await ctx.readBuffer(b.out, 0, 8));
  if (bad !== NONE) throw nonFiniteLogits(new Float32Array(new Uint32Array([id]).buffer)[0], bad);
  return id;
}
