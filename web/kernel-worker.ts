// Entry of a WASM kernel thread in browsers (dist/web/kernel-worker.js).
import { serveKernelThread } from 'duet/worker';

serveKernelThread();
