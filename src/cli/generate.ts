// `duet generate`: load a checkpoint, place it, prefill the prompt and stream generated text.
import { parseArgs } from 'node:util';
import { Engine, type DeviceChoice, type Placement } from '../engine/engine.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { nodeModelFiles } from '../node/files.js';
import { createNodeGpu } from '../node/gpu.js';
import { intOption, numberOption, patternOptions, resolveHeads, threadsOption, weightsOption } from './options.js';
import { createNodeCpu } from '../node/kernel-threads.js';
import { Progress } from './progress.js';
import { formatBytes, projectKvMemory } from '../attention/memory.js';
import { allHeads } from '../attention/pattern.js';
import { fillerStyleFor, taskPrompt } from '../eval/evaluate.js';
import { score } from '../eval/score.js';
import type { TaskSample } from '../tasks/tasks.js';

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
  json: { type: 'boolean' },
  ...patternOptions,
} as const;

function oneOf<T extends string>(value: string | undefined, flag: string, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(value)) throw new Error(`${flag} must be one of ${allowed.join(', ')} (got "${value}")`);
  return value as T;
}

export async function generateCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: argv, options, strict: true });
  if (!v.model) throw new Error('--model DIR is required');
  const promptSources = [v.prompt, v['prompt-ids'], v.passkey].filter((x) => x !== undefined).length;
  if (promptSources !== 1) throw new Error('give exactly one of --prompt, --prompt-ids and --passkey LENGTH');
  if (v.depth !== undefined && v.passkey === undefined) throw new Error('--depth goes with --passkey');
  const device = oneOf<DeviceChoice>(v.device, '--device', ['auto', 'gpu', 'cpu']) ?? 'auto';
  const placement = oneOf<Placement>(v.placement, '--placement', ['split', 'gpu', 'cpu']);
  const maxTokens = intOption(v['max-tokens'], '--max-tokens', 1) ?? 64;
  const threads = threadsOption(v.threads);
  const weights = weightsOption(v.weights);
  const sampling = {
    temperature: numberOption(v.temperature, '--temperature') ?? 0,
    topK: intOption(v['top-k'], '--top-k', 1),
    topP: numberOption(v['top-p'], '--top-p'),
    seed: intOption(v.seed, '--seed') ?? 0,
  };
  const prefillChunk = intOption(v['prefill-chunk'], '--prefill-chunk', 1);

  const progress = new Progress('loading');
  const checkpoint = await loadCheckpoint(nodeModelFiles(v.model), {
    onProgress: (done: number, total: number) => progress.update(done, total),
  });
  const { config, tokenizer } = checkpoint;
  let promptIds: number[];
  let passkey: TaskSample | null = null;
  if (v.passkey !== undefined) {
    // A passkey prompt in the model's own filler: the needle at --depth, the question at the end.
    if (!tokenizer) throw new Error(`${v.model}: --passkey needs tokenizer.json`);
    const length = intOption(v.passkey, '--passkey', 32)!;
    const depth = numberOption(v.depth, '--depth') ?? 0.5;
    if (!(depth >= 0 && depth <= 1)) throw new Error(`--depth must be in [0, 1] (got ${depth})`);
    const prompt = taskPrompt(tokenizer, { kind: 'passkey', length, depth, seed: sampling.seed, style: fillerStyleFor(tokenizer) });
    passkey = prompt.sample;
    promptIds = prompt.ids;
    process.stderr.write(`duet: passkey prompt of ${promptIds.length} tokens, pass key ${passkey.answers[0]} at depth ${depth}\n`);
  } else if (v['prompt-ids'] !== undefined) {
    promptIds = v['prompt-ids'].split(',').map((s) => {
      const n = Number(s.trim());
      if (s.trim() === '' || !Number.isInteger(n) || n < 0 || n >= config.vocabSize) {
        throw new Error(`--prompt-ids: "${s}" is not a token id in 0..${config.vocabSize - 1}`);
      }
      return n;
    });
    if (v.chat) throw new Error('--chat needs --prompt text');
  } else {
    if (!tokenizer) throw new Error(`${v.model}: no tokenizer.json; give the prompt as --prompt-ids`);
    const text = v.chat ? tokenizer.applyChatTemplate([{ role: 'user', content: v.prompt! }], { addGenerationPrompt: true }) : v.prompt!;
    promptIds = tokenizer.encode(text, { addSpecialTokens: !v.chat });
  }
  const heads = await resolveHeads(v, config.numLayers, config.numKvHeads);
  const engine = await Engine.create(config, checkpoint.weights, {
    device, placement, kinds: heads.kinds, window: heads.window, weights,
    acquireGpu: () => createNodeGpu(),
    createCpu: () => createNodeCpu(threads),
    notice: (m) => process.stderr.write(`duet: ${m}\n`),
  });
  try {
    process.stderr.write(`duet: ${engine.deviceDescription}; placement ${engine.placement}; ${engine.model.weightDType} weights; ${heads.description}; prompt ${promptIds.length} tokens\n`);
    const decoder = tokenizer?.streamDecoder();
    const result = await engine.generate(promptIds, {
      ...sampling, maxTokens, prefillChunk, stopIds: checkpoint.eosTokenIds,
      onToken: (id) => {
        if (v.json) return;
        if (decoder) process.stdout.write(decoder.push(id));
        else process.stdout.write(`${id} `);
      },
    });
    const text = tokenizer ? tokenizer.decode(result.tokens) : null;
    // KV bytes with every head full, at the same cache capacity, for the saving.
    const capacity = Math.min(config.maxPositionEmbeddings, promptIds.length + maxTokens);
    const fullKvBytes = projectKvMemory(allHeads(config.numLayers, config.numKvHeads, true), config.headDim, capacity, { sink: 0, recent: 1 }, 4).full_bytes;
    const kvBytes = result.kv.retrievalBytes + result.kv.streamingBytes;
    const recalled = passkey ? score('passkey', text ?? '', passkey.answers) === 1 : null;
    if (v.json) {
      process.stdout.write(`${JSON.stringify({
        tokens: result.tokens, text, device: engine.placement === 'cpu' ? 'cpu' : 'gpu', placement: engine.placement,
        adapter: engine.deviceDescription, heads: heads.description,
        weights: { dtype: engine.model.weightDType, bytes: engine.model.weightBytes },
        prompt_tokens: result.promptTokens, stop_reason: result.stopReason,
        timings: { prefill_ms: result.prefillMs, decode_ms_per_token: result.decodeMsPerToken },
        kv_bytes: { retrieval: result.kv.retrievalBytes, streaming: result.kv.streamingBytes, gpu: result.kv.byDevice.gpu, cpu: result.kv.byDevice.cpu, full_attention: fullKvBytes },
        ...(passkey ? { passkey: { expected: passkey.answers[0], recalled } } : {}),
      })}\n`);
    } else {
      if (decoder) process.stdout.write(decoder.flush());
      process.stdout.write('\n');
      process.stderr.write(`duet: ${result.tokens.length} tokens (${result.stopReason}); prefill ${result.prefillMs.toFixed(1)} ms; decode ${result.decodeMsPerToken.toFixed(2)} ms/token\n`);
      const where = `${formatBytes(result.kv.byDevice.gpu)} on the GPU, ${formatBytes(result.kv.byDevice.cpu)} on the CPU`;
      process.stderr.write(`duet: KV cache ${formatBytes(kvBytes)} (${where}) vs ${formatBytes(fullKvBytes)} with full attention: ${((1 - kvBytes / fullKvBytes) * 100).toFixed(0)}% saved\n`);
      if (passkey) process.stderr.write(`duet: pass key ${passkey.answers[0]}: ${recalled ? 'recalled' : 'NOT recalled'}\n`);
    }
  } finally {
    engine.dispose();
  }
  return 0;
}
