// Library errors and notices in the CLI's words: each API field a DuetError names becomes its flag.
import type { DuetError } from '../errors.js';

/** The CLI's flag for each API field a DuetError can name. */
const FLAGS: Record<string, string> = {
  maxTokens: '--max-tokens', temperature: '--temperature', topK: '--top-k', topP: '--top-p', seed: '--seed',
  device: '--device', placement: '--placement', prefillChunk: '--prefill-chunk', sparsity: '--sparsity', threads: '--threads',
  window: '--sink/--recent', 'window.sink': '--sink', 'window.recent': '--recent', streamingOnly: '--streaming-only', compensation: '--compensation',
  contextLength: '--ctx', prompt: 'the prompt', stop: '--stop', pattern: '--pattern', weights: '--weights', model: '--model',
  tasks: '--tasks', lengths: '--lengths', depths: '--depths', samples: '--samples',
  randomPattern: '--random-pattern', 'randomPattern.sparsity': '--random-pattern', 'randomPattern.seeds': '--seeds',
  method: '--method', methods: '--methods', zigzag: '--zigzag', steps: '--steps', lr: '--lr', reg: '--reg', data: '--data',
  echoRatio: '--echo-ratio', inductionRatio: '--induction-ratio', 'lengths[0]': '--lengths', 'lengths[1]': '--lengths', context: '--context', kvDtype: '--kv-dtype', kvDtypes: '--kv-dtype',
  heads: '--heads', hidden: '--hidden', layers: '--layers', maxLength: '--max-len', tokensPerStep: '--tokens-per-step',
  answerWeight: '--answer-weight', until: '--until', saveEvery: '--save-every', resume: '--resume', force: '--force', out: '--out',
  shape: '--shape', placements: '--placements', contexts: '--contexts', sparsities: '--sparsities', suites: '--suite',
  prefillMax: '--prefill-max', type: '--type', formats: '--formats', agreeTokens: '--agree-tokens',
  seqLen: '--seq-len', evalSamples: '--eval-samples', locret: '--method locret', 'locret.budget': '--budget', 'locret.stabilizers': '--stabilizers',
  offload: '--offload', 'offload.K': '--offload', 'offload.L': '--offload', 'offload.denseLayers': '--dense-layers',
  'offload.sinks': '--offload', 'offload.local': '--offload', 'offload.topk': '--topk', 'offload.tables': '--offload-tables',
  concurrency: '--concurrency', requests: '--requests', promptChars: '--prompt-chars', decodeTokens: '--decode-tokens', warmupTokens: '--warmup-tokens',
};

/** API words in a message (device 'gpu', window.sink, pattern) as the CLI's flags. */
export function inFlags(text: string): string {
  return text.replace(/\bdevice '(\w+)'/g, '--device $1').replace(/'(cpu|gpu|split|auto)'/g, '$1')
    .replace(/\bwindow\.sink\b/g, '--sink').replace(/\bwindow\.recent\b/g, '--recent').replace(/(?<!-)\bpattern\b/g, '--pattern')
    .replace(/\bstreamingOnly\b/g, '--streaming-only').replace(/\brandomPattern\b/g, '--random-pattern')
    .replace(/\bforce: true\b/g, '--force');
}

/** A library error in the CLI's words: the API field becomes its flag. */
export function flagMessage(err: DuetError): string {
  if (!err.field) return err.message;
  return `${FLAGS[err.field] ?? err.field} ${inFlags(err.detail)}`;
}
