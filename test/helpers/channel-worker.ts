// The browser's CPU worker in Node: the page end and a worker end running serveCpuBackend, joined by a
// MessageChannel (structured clone and transfers as between a page and its Web Worker).
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { serveCpuBackend } from '../../src/browser/cpu-worker.ts';

/** A Worker-shaped page end whose other end runs serveCpuBackend; counts the messages of each op. */
export function channelWorker(): { worker: Worker; ops: Map<string, number> } {
  const { port1, port2 } = new MessageChannel();
  const ops = new Map<string, number>();
  const scope = {
    onmessage: null as ((e: MessageEvent) => void) | null,
    postMessage: (m: unknown, transfer?: Transferable[]) => port2.postMessage(m, transfer as never),
    close: () => port2.close(),
  };
  port2.on('message', (data: { op: string }) => { ops.set(data.op, (ops.get(data.op) ?? 0) + 1); scope.onmessage?.({ data } as MessageEvent); });
  let onmessage: ((e: MessageEvent) => void) | null = null;
  (port1 as MessagePort).on('message', (data: unknown) => onmessage?.({ data } as MessageEvent));
  const worker = {
    set onmessage(f: ((e: MessageEvent) => void) | null) { onmessage = f; },
    get onmessage() { return onmessage; },
    onerror: null,
    postMessage: (m: unknown, transfer?: Transferable[]) => port1.postMessage(m, transfer as never),
    terminate: () => { port1.close(); port2.close(); },
  };
  serveCpuBackend(scope as never);
  return { worker: worker as unknown as Worker, ops };
}

