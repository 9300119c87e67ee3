// `duet generate`: load a checkpoint through the library, prefill the prompt and stream generated text.
import { parseArgs } from 'node:util';
import { fillerStyleFor, formatBytes, loadModel, meanSampledFraction, score, taskPrompt, type DeviceChoice, type GenerationStats, type GpuCounters, type PlacementChoice, type Prompt, type TaskSample } from '../node.js';
import { bareOffload, intOption, kvDtypeOption, locretFlags, locretOptions, numberOption, offloadFlags, offloadOptions, patternOptions, threadsOption, weightsOption } from './options.js';
import { Progress } from './progress.js';

const options = {
  model: { type: 'string' },
  prompt: { type: 'string' },
  'prompt-ids': { type: 'string' },
  passkey: { type: 'string' },
  depth: { type: 'string' },
  chat: { type: 'boolean' },
  'max-tokens': { type: 'string' },
  temperature: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  seed: { type: 'string' },
  device: { type: 'string' },
  placement: { type: 'string' },
  'prefill-chunk': { type: 'string' },
  threads: { type: 'string' },
  weights: { type: 'string' },
  'kv-dtype': { type: 'string' },
  json: { type: 'boolean' },
  ...patternOptions,
  ...locretOptions,
  ...offloadOptions,
} as const;

export function oneOf<T extends string>(value: string | undefined, flag: string, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(value)) throw new Error(`${flag} must be one of ${allowed.join(', ')} (got "${value}")`);
  return value as T;
}

/** The library's model options from the shared --device/--placement/--threads/--prefill-chunk and pattern flags. */
export function modelOptions(v: {
  device?: string; placement?: string; threads?: string; 'prefill-chunk'?: string; weights?: string; 'kv-dtype'?: string;
  pattern?: string; sparsity?: string; 'streaming-only'?: boolean; full?: boolean; sink?: string; recent?: string; compensation?: boolean;
  method?: string; budget?: string; stabilizers?: string; offload?: string; 'offload-tables'?: boolean; topk?: string; 'dense-layers'?: string;
}) {
  const exclusive = [v.pattern !== undefined, !!v['streaming-only'], !!v.full].filter(Boolean).length;
  if (exclusive > 1) throw new Error('use only one of --pattern, --streaming-only and --full');
  const sink = intOption(v.sink, '--sink');
  const recent = intOption(v.recent, '--recent', 1);
  return {
    device: oneOf<DeviceChoice>(v.device, '--device', ['auto', 'gpu', 'cpu']) ?? 'auto',
    placement: oneOf<PlacementChoice>(v.placement, '--placement', ['auto', 'split', 'gpu', 'cpu']),
    threads: threadsOption(v.threads),
    weights: weightsOption(v.weights),
    kvDtype: kvDtypeOption(v['kv-dtype']),
    prefillChunk: intOption(v['prefill-chunk'], '--prefill-chunk', 1),
    pattern: v.pattern, sparsity: numberOption(v.sparsity, '--sparsity'), streamingOnly: v['streaming-only'],
    window: v.full ? undefined : { sink, recent }, compensation: v.compensation,
    locret: locretFlags(v),
    offload: offloadFlags(v),
    notice: (m: string) => process.stderr.write(`duet: ${m}\n`),
  };
}

export async function generateCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: bareOffload(argv), options, strict: true });
  if (!v.model) throw new Error('--model DIR is required');
  const promptSources = [v.prompt, v['prompt-ids'], v.passkey].filter((x) => x !== undefined).length;
  if (promptSources !== 1) throw new Error('give exactly one of --prompt, --prompt-ids and --passkey LENGTH');
  if (v.depth !== undefined && v.passkey === undefined) throw new Error('--depth goes with --passkey');
  if (v.chat && v.prompt === undefined) throw new Error('--chat needs --prompt text');
  const maxTokens = intOption(v['max-tokens'], '--max-tokens', 1) ?? 64;
  const sampling = {
    temperature: numberOption(v.temperature, '--temperature') ?? 0,
    topK: intOption(v['top-k'], '--top-k', 1),
    topP: numberOption(v['top-p'], '--top-p'),
    seed: intOption(v.seed, '--seed') ?? 0,
  };
  const passkeyLength = v.passkey === undefined ? undefined : intOption(v.passkey, '--passkey', 32)!;
  const depth = numberOption(v.depth, '--depth') ?? 0.5;
  if (!(depth >= 0 && depth <= 1)) throw new Error(`--depth must be in [0, 1] (got ${depth})`);

  const loading = new Progress('loading');
  const model = await loadModel(v.model, {
    ...modelOptions(v),
    onProgress: (e) => { if (e.step === 'weights') loading.update(e.done, e.total); },
  });
  try {
    const { config } = model.info;
    const tokenizer = model.tokenizer;
    let prompt: Prompt;
    let passkey: TaskSample | null = null;
    if (passkeyLength !== undefined) {
      // A passkey prompt in the model's own filler: the needle at --depth, the question at the end.
      if (!tokenizer) throw new Error(`${v.model}: --passkey needs tokenizer.json`);
      const p = taskPrompt(tokenizer, { kind: 'passkey', length: passkeyLength, depth, seed: sampling.seed, style: fillerStyleFor(tokenizer) });
      passkey = p.sample;
      prompt = p.ids;
      process.stderr.write(`duet: passkey prompt of ${p.ids.length} tokens, pass key ${passkey.answers[0]} at depth ${depth}\n`);
    } else if (v['prompt-ids'] !== undefined) {
      prompt = v['prompt-ids'].split(',').map((s) => {
        const n = Number(s.trim());
        if (s.trim() === '' || !Number.isInteger(n) || n < 0 || n >= config.vocabSize) {
          throw new Error(`--prompt-ids: "${s}" is not a token id in 0..${config.vocabSize - 1}`);
        }
        return n;
      });
    } else {
      if (!tokenizer) throw new Error(`${v.model}: no tokenizer.json; give the prompt as --prompt-ids`);
      prompt = v.chat ? { messages: [{ role: 'user', content: v.prompt! }] } : v.prompt!;
    }
    const info = model.info;
    const generation = model.generate(prompt, { ...sampling, maxTokens });
    process.stderr.write(`duet: ${info.device}; placement ${info.placement}; ${info.weights.dtype} weights; ${info.heads}; prompt ${model.encode(prompt).length} tokens\n`);
    for await (const d of generation) {
      if (v.json) continue;
      process.stdout.write(tokenizer ? d.text : `${d.id} `);
    }
    const r = await generation.result();
    const text = tokenizer ? r.text : null;
    const kvBytes = r.kv.retrieval + r.kv.streaming + r.kv.offloaded;
    const sampled = r.kv.sampledFraction;
    const recalled = passkey ? score('passkey', text ?? '', passkey.answers) === 1 : null;
    if (v.json) {
      process.stdout.write(`${JSON.stringify({
        tokens: r.tokens, text, device: info.placement === 'cpu' ? 'cpu' : 'gpu', placement: info.placement,
        auto_placement: info.autoPlacement && { reason: info.autoPlacement.reason, split_ms_per_token: info.autoPlacement.splitMsPerToken, gpu_ms_per_token: info.autoPlacement.gpuMsPerToken },
        adapter: info.device, heads: info.heads, weights: info.weights,
        prompt_tokens: r.usage.promptTokens, stop_reason: r.stoppedBy, finish_reason: r.finishReason,
        timings: { prefill_ms: r.timings.prefillMs, decode_ms_per_token: r.timings.decodeMsPerToken, ttft_ms: r.timings.timeToFirstTokenMs },
        kv_bytes: { retrieval: r.kv.retrieval, streaming: r.kv.streaming, offloaded: r.kv.offloaded, gpu: r.kv.gpu, cpu: r.kv.cpu, full_attention: r.kv.fullAttention },
        ...(sampled ? { offload: { sampled_fraction_per_step: sampled, mean_sampled_fraction: meanSampledFraction(r.kv) ?? 0 } } : {}),
        work: { gpu_dispatches: r.work.gpuDispatches, cpu_kernel_calls: r.work.cpuKernelCalls },
        counters: r.counters && countersJson(r.counters),
        ...(passkey ? { passkey: { expected: passkey.answers[0], recalled } } : {}),
      })}\n`);
    } else {
      process.stdout.write('\n');
      process.stderr.write(`duet: ${r.tokens.length} tokens (${r.stoppedBy}); prefill ${r.timings.prefillMs.toFixed(1)} ms; decode ${r.timings.decodeMsPerToken.toFixed(2)} ms/token\n`);
      const where = `${formatBytes(r.kv.gpu)} on the GPU, ${formatBytes(r.kv.cpu)} on the CPU`;
      process.stderr.write(`duet: KV cache ${formatBytes(kvBytes)} (${where}) vs ${formatBytes(r.kv.fullAttention)} with full attention: ${kvBytes <= r.kv.fullAttention ? `${((1 - kvBytes / r.kv.fullAttention) * 100).toFixed(0)}% saved` : `${(kvBytes / r.kv.fullAttention).toFixed(2)}× as much (hash codes)`}\n`);
      if (sampled?.length) process.stderr.write(`duet: offloaded heads attended ${(100 * sampled.reduce((a, b) => a + b, 0) / sampled.length).toFixed(2)}% of their offloaded keys per decode step (mean of ${sampled.length} steps)\n`);
      if (passkey) process.stderr.write(`duet: pass key ${passkey.answers[0]}: ${recalled ? 'recalled' : 'NOT recalled'}\n`);
    }
  } finally {
    await model.dispose();
  }
  return 0;
}

/** The GPU counters as `duet generate --json` prints them: per decoded token, then the totals. */
function countersJson(c: NonNullable<GenerationStats['counters']>) {
  const { decodeTokens, prefill, decode, ...perToken } = c;
  const snake = (t: GpuCounters) => ({
    submits: t.submits, host_waits: t.hostWaits, readback_bytes: t.readbackBytes, upload_bytes: t.uploadBytes,
    dispatches: t.dispatches, buffers_created: t.buffersCreated, bind_groups_created: t.bindGroupsCreated, pipelines_created: t.pipelinesCreated,
  });
  return { ...perToken, decode_tokens: decodeTokens, prefill: snake(prefill), decode: snake(decode) };
}
