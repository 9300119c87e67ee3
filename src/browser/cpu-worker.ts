// The worker side: a CPU backend (SIMD WebAssembly) driven by messages from the page. The first op
// that fails poisons the backend; the error is posted at once and again with every later reply.
import type { DeviceTensor } from '../backend/contract.js';
import { createCpuBackend, type CpuBackend } from '../cpu/backend.js';
import { browserThreads, startBrowserKernelWorker } from './kernel-threads.js';
import { KERNEL_OPS, type FromWorker, type TensorRef, type ToWorker } from './worker-protocol.js';

interface WorkerScope {
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
  postMessage(message: FromWorker, transfer?: Transferable[]): void;
  close(): void;
}

function isRef(a: unknown): a is TensorRef {
  return typeof a === 'object' && a !== null && typeof (a as TensorRef).tensor === 'number' && Object.keys(a).length === 1;
}

/** Starts serving; call once in the worker's entry module. */
export function serveCpuBackend(scope: WorkerScope = globalThis as unknown as WorkerScope): void {
  let backend: CpuBackend | null = null;
  let failure: string | null = null;
  const tensors = new Map<number, DeviceTensor>();
  const pending: ToWorker[] = [];

  const tensor = (id: number): DeviceTensor => {
    const t = tensors.get(id);
    if (!t) throw new Error(`CPU worker: unknown tensor #${id} (freed or never allocated)`);
    return t;
  };

  const handle = (m: ToWorker): void => {
    const be = backend!;
    if (m.op === 'read' || m.op === 'stats') {
      if (failure) { scope.postMessage({ type: 'reply', req: m.req, kernelCalls: be.kernelCalls, error: failure }); return; }
      if (m.op === 'stats') { scope.postMessage({ type: 'reply', req: m.req, kernelCalls: be.kernelCalls }); return; }
      be.read(tensor(m.id), m.offset, m.length).then(
        (data) => scope.postMessage({ type: 'reply', req: m.req, kernelCalls: be.kernelCalls, data }, [data.buffer]),
        (e: unknown) => scope.postMessage({ type: 'reply', req: m.req, kernelCalls: be.kernelCalls, error: String((e as Error).message ?? e) }),
      );
      return;
    }
    if (failure) return;
    try {
      switch (m.op) {
        case 'alloc': tensors.set(m.id, be.alloc(m.length)); break;
        case 'upload': tensors.set(m.id, be.upload(m.data)); break;
        case 'uploadWeight': tensors.set(m.id, be.uploadWeight({ dtype: m.dtype, rows: m.rows, cols: m.cols, data: m.data })); break;
        case 'write': be.write(tensor(m.id), m.data, m.offset); break;
        case 'copy': be.copy(tensor(m.dst), m.dstOffset, tensor(m.src), m.srcOffset, m.length); break;
        case 'free': be.free(tensor(m.id)); tensors.delete(m.id); break;
        case 'call': {
          if (!(KERNEL_OPS as readonly string[]).includes(m.name)) throw new Error(`CPU worker: unknown op ${m.name}`);
          // Refs at the top level, or one level down in a plain object (the compensation state).
          const args = m.args.map((a) => (isRef(a) ? tensor(a.tensor) : a !== null && typeof a === 'object' && !ArrayBuffer.isView(a)
            ? Object.fromEntries(Object.entries(a).map(([key, x]) => [key, isRef(x) ? tensor(x.tensor) : x])) : a));
          (be[m.name] as (...a: unknown[]) => void).apply(be, args);
          break;
        }
        case 'run': be.run(m.kernel, m.tensors.map(tensor), m.scalars); break;
        case 'destroy': be.destroy(); tensors.clear(); scope.close(); break;
      }
    } catch (e) {
      failure = `CPU worker: ${m.op === 'call' ? m.name : m.op === 'run' ? m.kernel.name : m.op} failed: ${(e as Error).message ?? String(e)}`;
      scope.postMessage({ type: 'failed', message: failure });
    }
  };

  scope.onmessage = (event) => {
    if (backend) handle(event.data);
    else pending.push(event.data);
  };
  // Several kernel threads when the page is cross-origin isolated (shared memory allowed).
  createCpuBackend({ threads: browserThreads(), startWorker: startBrowserKernelWorker }).then(
    (be) => {
      backend = be;
      scope.postMessage({ type: 'ready', description: `${be.description}, in a Web Worker` });
      for (const m of pending.splice(0)) handle(m);
    },
    (e: unknown) => scope.postMessage({ type: 'init-error', message: (e as Error).message ?? String(e) }),
  );
}
