// A WASM kernel thread (Node worker_threads): serves its share of the CPU backend's jobs over the
// shared memory until told to stop.
import { parentPort, workerData } from 'node:worker_threads';
import { serveKernelJobs, type WorkerInit } from '../cpu/threads.js';

await serveKernelJobs(workerData as WorkerInit, () => parentPort!.postMessage('ready'));
