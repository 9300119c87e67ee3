// Worker threads that hold training replicas (data parallelism across cores; the main thread
// computes a share too). Each worker runs src/node/train-worker (bundled as dist/train-worker.js).
import { Worker } from 'node:worker_threads';
import type { GradientHelper, TrainPlan } from '../train/trainer.js';

// The CLI bundle ships dist/train-worker.js beside dist/cli.js. Under tsx (tests) the sources run
// as .ts, and a worker only gets tsx's loader if it registers it before importing the entry.
const FROM_SOURCE = import.meta.url.endsWith('.ts');
const WORKER_URL = new URL(FROM_SOURCE ? './train-worker.ts' : './train-worker.js', import.meta.url);

export async function startTrainingHelpers(plan: TrainPlan, count: number): Promise<{ helpers: GradientHelper[]; stop: () => Promise<void> }> {
  const workers = await Promise.all(Array.from({ length: count }, () => new Promise<Worker>((resolve, reject) => {
    const w = FROM_SOURCE
      ? new Worker(`import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(WORKER_URL.href)}); })`, { eval: true, workerData: { plan } })
      : new Worker(WORKER_URL, { workerData: { plan } });
    w.once('error', reject);
    w.once('message', () => resolve(w));
  })));
  const helpers = workers.map((w): GradientHelper => {
    // One request at a time per worker: the pending promise's callbacks.
    let pending: { resolve: (r: { grads: Float32Array; loss: number }) => void; reject: (e: unknown) => void } | null = null;
    w.on('message', (r) => { const p = pending; pending = null; p?.resolve(r); });
    w.on('error', (e) => { const p = pending; pending = null; p?.reject(e); });
    return {
      gradients: (params, step, indices) => new Promise((resolve, reject) => {
        pending = { resolve, reject };
        // params is a view into the 71-MB training arena: posting the view would clone the whole
        // arena buffer every step (that, not the cores, made two replicas slower than one).
        w.postMessage({ params: params.slice(), step, indices });
      }),
    };
  });
  return { helpers, stop: async () => { await Promise.all(workers.map((w) => w.terminate())); } };
}
