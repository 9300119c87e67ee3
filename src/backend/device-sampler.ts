// What a backend that picks tokens on the device (GpuBackend, wgsl/sample.wgsl) shares with the
// host sampler (src/engine/sampler.ts): the choice it is given, its limit, and the error for a
// non-finite logit (both sides report it in the same words).

/** The error for a non-finite logit `value` of token `id` (the first one). */
export function nonFiniteLogits(value: number, id: number): Error {
  return new Error(`the model produced non-finite logits (${value} for token ${id}): its weights or activations hold NaN or Inf; generation stopped`);
}

/** Largest top-k a device sampler handles (wgsl/sample.wgsl keeps the candidates in workgroup memory). */
export const DEVICE_MAX_TOP_K = 256;

/**
 * One token choice for a device that selects on its own copy of the logits: the top `k` in the
 * sampler's order (logits descending, ties by lower id), then with temperature > 0 the draw of
 * Sampler.sample with `r` (already taken from the seeded stream); temperature 0 = greedy (k = 1).
 */
export interface DeviceChoice { k: number; temperature: number; topP: number; r: number }

/** A backend that can pick the token from logits it holds (GpuBackend). */
export interface DeviceSampler {
  sampleToken(logits: { readonly length: number }, vocab: number, choice: DeviceChoice): Promise<number>;
}
