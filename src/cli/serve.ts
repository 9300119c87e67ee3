// `duet serve`: an OpenAI-compatible HTTP server over one model (src/server/). Binds 127.0.0.1
// unless told otherwise; SIGINT/SIGTERM stop accepting, abort what is in flight and exit 0.
import { parseArgs } from 'node:util';
import { DuetServer, loadModel } from '../node.js';
import { modelOptions } from './generate.js';
import { bareOffload, intOption, locretOptions, offloadOptions, patternOptions } from './options.js';
import { Progress } from './progress.js';

const options = {
  model: { type: 'string' },
  host: { type: 'string' },
  port: { type: 'string' },
  'api-key': { type: 'string' },
  'max-queue': { type: 'string' },
  'max-body': { type: 'string' },
  ctx: { type: 'string' },
  'model-name': { type: 'string' },
  device: { type: 'string' },
  placement: { type: 'string' },
  'prefill-chunk': { type: 'string' },
  threads: { type: 'string' },
  weights: { type: 'string' },
  'kv-dtype': { type: 'string' },
  ...patternOptions,
  ...locretOptions,
  ...offloadOptions,
} as const;

export async function serveCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: bareOffload(argv), options, strict: true });
  if (!v.model) throw new Error('--model DIR is required');
  const port = intOption(v.port, '--port', 0) ?? 8080;
  if (port > 65535) throw new Error(`--port must be at most 65535 (got ${port})`);
  const maxQueue = intOption(v['max-queue'], '--max-queue', 0) ?? 16;
  const maxBodyBytes = intOption(v['max-body'], '--max-body', 1024) ?? 1 << 20;
  const contextLength = intOption(v.ctx, '--ctx', 2);
  const log = (m: string) => process.stderr.write(`duet serve: ${m}\n`);
  const loading = new Progress('loading');
  const model = await loadModel(v.model, {
    ...modelOptions(v), contextLength, id: v['model-name'] ?? undefined,
    onProgress: (e) => { if (e.step === 'weights') loading.update(e.done, e.total); },
  });
  const server = new DuetServer(model, { host: v.host ?? '127.0.0.1', port, apiKey: v['api-key'], maxQueue, maxBodyBytes, log });
  const address = await server.listen();
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const i = model.info;
  log(`model "${i.id}": ${i.device}; placement ${i.placement}; ${i.heads}; context ${i.contextLength} tokens`);
  log(`listening on http://${host}:${address.port}/v1 (queue ${maxQueue}${v['api-key'] ? ', API key required' : ''})`);
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log(`${signal}: stopping (in-flight requests are aborted)`);
      process.off('SIGINT', onInt); process.off('SIGTERM', onTerm);
      void server.close().then(() => model.dispose()).then(resolve);
    };
    const onInt = () => stop('SIGINT'), onTerm = () => stop('SIGTERM');
    process.on('SIGINT', onInt); process.on('SIGTERM', onTerm);
  });
  log('stopped');
  return 0;
}
