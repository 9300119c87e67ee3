// The `duet` command.
import { parseArgs } from 'node:util';
import { readFile } from 'node:fs/promises';
import { generateCommand } from './generate.js';
import { memoryCommand } from './memory.js';
import { evalCommand } from './eval.js';
import { webCommand, WEB_DEFAULT_MODEL, WEB_DEFAULT_PORT } from './web.js';
import { trainCommand } from './train.js';
import { identifyCommand } from './identify.js';
import { benchCommand } from './bench.js';
import { serveCommand } from './serve.js';
import { DuetError } from '../errors.js';
import { flagMessage } from './flags.js';
import { quantizeCommand } from './quantize.js';
import { locretCommand } from './locret.js';
import { dhaCommand } from './dha.js';

const USAGE = `duet — DuoAttention inference: retrieval heads on the GPU (WebGPU), streaming heads on the CPU (WASM SIMD)

Usage:
  duet generate --model DIR (--prompt TEXT | --prompt-ids 1,2,3 | --passkey LENGTH [--depth D]) [options]
      --chat                 wrap the prompt with the model's chat template
      --max-tokens N         tokens to generate (default 64)
      --temperature T        0 = greedy (default)
      --top-k K  --top-p P  --seed S
      --device auto|gpu|cpu  (default auto: the GPU when an adapter exists)
      --placement split|gpu|cpu   where streaming heads run (default split with a GPU)
      --pattern DIR          DuoAttention pattern (full_attention_heads.tsv + config.json)
      --sparsity S           fraction of KV heads made streaming (lowest gate values first)
      --streaming-only       every head streaming (StreamingLLM baseline); needs --sink/--recent or --pattern
      --full                 full attention, no pattern (the default without --pattern)
      --sink N --recent N    streaming window sizes (override the pattern's)
      --compensation         RazorAttention's compensation token on the streaming heads (docs/razor.md)
      --method locret --budget N [--stabilizers N]   Locret's eviction on every head (with --pattern: on the
                             heads it streams): N positions per KV head, the latest stabilizers (default N/4)
                             always; needs locret.json (docs/locret.md)
      --offload [K,L]        MagicPIG: retrieval heads' KV cache in host memory, decode by LSH sampling with K bits
                             × L tables (default 10,150, or 11,150 under 64 head dims; docs/magicpig.md)
      --offload-tables       with --offload: find collisions through bucket tables (MagicPIG's layout; L i32
                             more per key and head) instead of scanning every key's codes
      --topk N|P%            MagicPIG's exact TopK baseline instead of sampling: offloaded as --offload, decode
                             attends the static tokens + the N (or P% of the offloaded) keys of highest q·k
      --dense-layers L0,L1   with --offload or --topk: layers kept on full attention
      --prefill-chunk N      prefill chunk size (default 512)
      --threads N            WASM kernel threads (default: every core)
      --weights f32|f16|q8_0|q4_0|q4_k   storage of the matmul weights (default f32; q8_0 on the CPU
                             when f32 would exceed 2 GiB; the GPU takes f32 only so far)
      --kv-dtype f32|f16|int8            storage of the KV caches: full caches and streaming rings (default f32)
      --json                 print one JSON object instead of streaming text
  duet memory --config config.json (--pattern DIR [--sparsity S] | --streaming-only --sink N --recent N)
              [--method locret --budget N [--stabilizers N]] [--methods FILE] --context N [--kv-dtype f32|f16|int8]
              [--offload [K,L] | --topk N|P%] [--dense-layers L0,L1] [--json]
      projected KV-cache memory of full attention vs DuoAttention, Locret, a method per head (kv_methods.tsv)
      or offloading (GPU, CPU and offloaded bytes)
  duet memory --config config.json [heads as above] --gpu-budget SIZE [--max-context N] [--kv-dtype D] [--json]
      the largest context whose GPU KV bytes fit SIZE (16GiB, 512MiB, bytes; split placement: rings and
      offloaded stores are host memory), full attention vs the heads given; --max-context caps the search
      (default max_position_embeddings)
  duet eval --model DIR [--pattern DIR [--sparsity S]] [--streaming-only] [--random-pattern S --seeds N]
            [--tasks passkey,niah-single,niah-multikey,niah-multivalue,vt] [--lengths 512,1024,2048]
            [--depths 0,0.25,0.5,0.75,1] [--samples N] [--seed S] [--sink N --recent N]
            [--compensation (adds <config>+comp after each streaming config)] [--perplexity N]
            [--method locret --budget N [--stabilizers N] [--chunk N] (adds locret@N; with --pattern also
            pattern@S+locret@N)] [--methods FILE (adds "methods": a KV method per head, docs/kv-methods.md)]
            [--device D] [--placement P] [--prefill-chunk N] [--threads N] [--weights W] [--json] [--out DIR]
            [--offload [K,L] | --topk N|P%] [--dense-layers L0,L1] (every configuration offloaded: MagicPIG,
            or its exact TopK baseline)
      long-context accuracy per task, length and needle depth; JSON rows and SVG heatmaps in --out
  duet serve --model DIR [--pattern DIR [--sparsity S]] [--host 127.0.0.1] [--port 8080] [--api-key KEY]
             [--max-queue N] [--ctx N] [--device D] [--placement P] [--threads N] [--weights W] [--prefill-chunk N]
             [--offload [K,L] | --topk N|P%] [--dense-layers L0,L1]
      an OpenAI-compatible HTTP server: GET /v1/models, POST /v1/chat/completions and /v1/completions
      (streaming as server-sent events), GET /health
  duet web [--port P] [--model DIR|FILE.gguf] [--pattern DIR]
      serves the demo page on http://127.0.0.1:P/ (default ${WEB_DEFAULT_PORT}) with a model (default ${WEB_DEFAULT_MODEL})
  duet train --out DIR [--steps N] [--seed S] [--resume | --force] [--save-every N] [--tokens-per-step N]
             [--max-len N] [--tasks ...] [--lr LR] [--layers N] [--hidden D] [--heads N] [--answer-weight W]
             [--threads N]
      trains the bundled character-level long-context model (HF layout in DIR, resumable)
  duet identify --model DIR --method duo|retrieval-score|razor --out DIR [--zigzag --sparsity S]
                [--steps N] [--lr LR] [--reg L] [--lengths MIN,MAX] [--sink N --recent N] [--seed S]
                [--samples N] [--echo-ratio R] [--induction-ratio R] [--json]
      finds retrieval heads and writes a DuoAttention pattern (tsv, config.json, identify.json, heads.svg)
  duet locret train --model DIR [--out DIR] [--steps N] [--lr LR] [--seq-len N] [--tasks passkey,...] [--seed S]
                    [--eval-samples N] [--device cpu|gpu|auto] [--force]
      trains Locret retaining heads (backbone frozen) and saves locret.json + locret.safetensors
      beside the model (or in --out); refuses to replace them without --force (docs/locret.md)
  duet quantize --model DIR --type f32|f16|q8_0|q4_0|q4_k --out FILE.gguf [--force] [--name NAME]
      writes the checkpoint (and its tokenizer) as one GGUF file that llama.cpp loads; rows that do not
      fill the type's blocks fall back (q4_k -> q4_0 -> f16) and are listed; --model FILE.gguf loads it
  duet dha --model DIR --budget B --out DIR [--method dha|gqa-meanpool|continued] [--tokens N] [--tokens-per-step N]
           [--fusion-share F] [--ramp-share F] [--lr LR] [--mix-lr LR] [--multiplier-lr ETA] [--max-len N]
           [--tasks ...] [--seed S] [--eval-every N] [--threads N | --device gpu] [--force] [--json] [--save-every N]
           [--until N] [--resume]
      converts a multi-head checkpoint to decoupled heads (DHA: similarity, adaptive K/V allocation, fusion
      training, collapse) or to GQA by mean-pooling, then continued training (continued: every head kept,
      budget 1, the reference arm); writes a checkpoint with a model card and dha.json (the losses against
      training tokens); saves its state every --save-every steps (default 10), --resume goes on from it
      with the same result as an uninterrupted run, --until N stops after step N (docs/dha.md)
  duet dha plot --runs DIR1,DIR2,... --out FILE.svg [--target DIR] [--training] [--smooth N] [--json]
      one SVG of the arms' validation (or training) losses against training tokens, and the tokens each
      arm needs to reach the target arm's final loss (default target: the gqa-meanpool run)
  duet bench [--suite kernels|e2e|memory|all|peers|offload] [--model DIR | --shape NAME] [--layers N] [--pattern DIR]
             [--contexts 1024,4096,16384] [--sparsities 0.25,0.5,0.75] [--placements split,gpu,cpu]
             [--device auto|cpu|gpu] [--sink N --recent N] [--prefill-chunk N] [--prefill-max N]
             [--decode-tokens N] [--warmup-tokens N] [--seed S] [--threads N] [--weights W]
             [--kv-dtype f32|f16|int8[,…]] [--out DIR] [--json]
      kernel GFLOP/s and GB/s against a measured roofline, prefill and decode of full attention vs
      DuoAttention per placement, KV memory (per --kv-dtype in a list); shapes: llama-3.2-1b, llama-3-8b, llama-2-7b, qwen2.5-0.5b
      (random weights); results.json and SVG plots in --out (default bench-results)
      --suite peers [--formats f32,f16,q8_0,q4_0] [--agree-tokens N]: Duet against llama.cpp (the optional
      node-llama-cpp package, CPU) on the same GGUF per format, default --shape qwen2.5-0.5b
      --suite offload, or --offload [K,L]: one layer's decode attention, KV cache on the main device vs
      offloaded with MagicPIG (scan and bucket tables), on random keys, per --contexts (default 4096,16384,
      32768,65536), --shape default llama-3.2-1b, --device cpu (default) or gpu (the full cache, the static
      rings, the hashing and the projections on the GPU); offload.json and offload-decode.svg in --out
`;

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE);
    return command ? 0 : 1;
  }
  if (command === '--version') {
    const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8'));
    process.stdout.write(`${pkg.version}\n`);
    return 0;
  }
  try {
    return await run(command, rest);
  } catch (err) {
    throw err instanceof DuetError ? new Error(flagMessage(err)) : err;
  }
}

async function run(command: string, rest: string[]): Promise<number> {
  switch (command) {
    case 'generate': return generateCommand(rest);
    case 'serve': return serveCommand(rest);
    case 'memory': return memoryCommand(rest);
    case 'eval': return evalCommand(rest);
    case 'web': return webCommand(rest);
    case 'train': return trainCommand(rest);
    case 'identify': return identifyCommand(rest);
    case 'bench': return benchCommand(rest);
    case 'quantize': return quantizeCommand(rest);
    case 'locret': return locretCommand(rest);
    case 'dha': return dhaCommand(rest);
    default:
      process.stderr.write(`duet: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

export { parseArgs };
